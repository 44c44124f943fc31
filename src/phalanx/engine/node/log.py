"""A deployed node's own log: what it did and what it was sent, signed by whoever said it.

In gossip mode there is no one log for the whole network (agreeing on one is what committee mode
adds): every node runs its own transparency log, under its own origin and checkpoint key, and
its peers witness it (C2SP tlog-witness ``add-checkpoint``). A node's log is self-contained, so
``phalanx audit`` checks it alone:

- its own registration, dataset commitment and starting model (round 0, rule ``initial``);
- each peer's registration and dataset commitment, signed *by the peer for this log's origin*
  in the handshake;
- per round: its own update commitment, every peer's update commitment (signed by the peer for
  this log, sent with the update), and its aggregate record citing them by index, with the
  rejected ones and why;
- governance proposals and votes submitted by validators, the activations it logged itself,
  quarantines, key rotations and revocations, catch-ups after a restart.

Checkpoints are stored only once the witness quorum (2f + 1 of the 3f + 1 other members with the
witness role) has cosigned, so every stored checkpoint is one the audit accepts; when too many
witnesses are down the entries wait, uncheckpointed, for the next try. Beside the log, in
``ledger-private/`` and in the simulated run's format (:mod:`phalanx.engine.provenance.private`):
the node's own models (always: a restarted node resumes from its last one, and peers catching up
fetch it), and, when ``keep_updates`` is on, the salts and bytes of every update it committed to
or received. Blobs are written without fsync: a killed process loses nothing the operating system
has, and a lost blob is reported by its hash, never used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from phalanx.core.keys import SigningKey
from phalanx.engine.provenance.private import BLOBS, OPENINGS, decode_tensor, tensor_commitment, tensor_view
from phalanx.ledger import AggregateRecord, Body, BlobStore, Entry, Ledger, Policy, Published, StorageError
from phalanx.ledger.note import Signer

PRIVATE_DIR = "ledger-private"


class NodeLog:
    """The node's log, its private material, and one lock over both (handlers and the round
    driver write from different threads)."""

    def __init__(self, ledger: Ledger, folder: Path, key: SigningKey, keep_updates: bool = True):
        self.ledger, self.key, self.keep_updates = ledger, key, keep_updates
        self.private = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(folder / BLOBS, sync=False)
        self._lines: list[str] = []
        self.lock = threading.RLock()

    @classmethod
    def open_or_create(cls, location: str, folder: Path, signer: Signer, policy: Policy, key: SigningKey,
                       genesis: Callable[[], Sequence[Body]], keep_updates: bool = True) -> tuple[NodeLog, bool]:
        """Open the node's log, or create it with the entries ``genesis()`` returns (signed by
        ``key``). Returns (log, created)."""
        path = location if "://" in location else str(folder / location)
        if "://" in location:  # PostgreSQL: created while its database holds no ledger, else opened
            try:
                ledger, created = Ledger.create(path, signer, policy=policy), True
            except StorageError as e:
                if "already holds a ledger" not in str(e):
                    raise
                ledger, created = Ledger.open(path, signer=signer), False
        else:
            created = not Path(path).exists()
            ledger = Ledger.create(path, signer, policy=policy) if created else Ledger.open(path, signer=signer)
        if created:
            (folder / "policy.txt").write_text(policy.format())
        log = cls(ledger, folder / PRIVATE_DIR, key, keep_updates)
        if created:
            log.submit(list(genesis()))
        return log, created

    @property
    def origin(self) -> str:
        return self.ledger.origin

    @property
    def size(self) -> int:
        return self.ledger.size

    def close(self) -> None:
        with self.lock:
            self.flush()
            self.ledger.close()

    # -------------------------------------------------------------- writing

    def submit(self, bodies: Sequence[Body], key: SigningKey | None = None) -> list[tuple[Entry, int]]:
        """Sign bodies as this node (or ``key``) and append them in one transaction."""
        with self.lock:
            return self.ledger.submit_many([(b, key or self.key) for b in bodies])

    def append(self, entries: Sequence[Entry]) -> list[int]:
        """Append entries others signed (checked: signature for this origin, every rule)."""
        with self.lock:
            return self.ledger.append_many(entries)

    def keep(self, model: torch.Tensor) -> bytes:
        """Store a model's bytes under their SHA-256 (always); the digest."""
        return self.blobs.put(tensor_view(model).tobytes())

    def commit(self, salt: bytes, t: torch.Tensor, commitment: bytes | None = None) -> bytes:
        """The hiding commitment SHA-256(salt || bytes) (``commitment``: already computed); its
        opening kept when keeping updates."""
        commitment = tensor_commitment(salt, t) if commitment is None else commitment
        if self.keep_updates:
            blob = self.keep(t)
            with self.lock:
                self._lines.append(json.dumps({"c": commitment.hex(), "salt": salt.hex(), "blob": blob.hex()}))
        return commitment

    def opening(self, commitment: bytes, salt: bytes, value) -> None:
        with self.lock:
            self._lines.append(json.dumps({"c": commitment.hex(), "salt": salt.hex(), "value": value}))

    def flush(self) -> None:
        with self.lock:
            if self._lines:
                with (self.private / OPENINGS).open("a") as f:
                    f.write("".join(line + "\n" for line in self._lines))
                self._lines = []

    def checkpoint(self, witnesses) -> Published:
        self.flush()
        with self.lock:
            return self.ledger.checkpoint(witnesses, only_final=True)

    # -------------------------------------------------------------- reading

    def next_seq(self, key: bytes) -> int:
        with self.lock:
            return self.ledger.next_seq(key)

    def current_key(self, node: bytes) -> bytes | None:
        with self.lock:
            key = self.ledger.state.current.get(node)
            if key is None or node in self.ledger.state.revoked:
                return None
            return key

    def revoked(self, node: bytes) -> bool:
        return node in self.ledger.state.revoked

    def registered(self, node: bytes) -> bool:
        return self.ledger.state.is_registered(node)

    def entries(self, start: int = 0):
        with self.lock:
            return list(self.ledger.entries(start))

    def last_record(self, signer: bytes) -> tuple[int, AggregateRecord] | None:
        """The latest aggregate record this log holds from node ``signer`` (its model's provenance)."""
        with self.lock:
            found = None
            for index, entry in self.ledger.entries():
                if entry.type == "aggregate_record" and entry.node_id == signer:
                    found = (index, entry.body)
            return found

    def model(self, digest: bytes) -> torch.Tensor:
        """A kept model by its SHA-256 (checked against it by the blob store)."""
        return decode_tensor(self.blobs.get(digest), "float32")

    def blob(self, digest: bytes) -> bytes | None:
        return self.blobs.get(digest) if self.blobs.has(digest) else None
