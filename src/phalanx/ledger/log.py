"""The ledger: a transparency log of signed entries, with signed and cosigned checkpoints.

:class:`Ledger` ties the pieces together:

- entries (:mod:`.entries`) are checked (signature for this log's origin, the structural rules
  of :mod:`.state`: registration, replay, references) and appended in one transaction per
  batch (:mod:`.storage`); a batch that fails any check leaves the log as it was;
- the Merkle tree (:class:`phalanx.core.merkle.MerkleTree`) lives in memory, rebuilt from the
  stored leaf hashes on open, and must reproduce the last stored checkpoint's root;
- :meth:`Ledger.checkpoint` signs the tree head with the log's key (C2SP tlog-checkpoint) and
  asks each witness to cosign it, giving each a consistency proof from the last size it
  cosigned (C2SP tlog-witness, retrying once at the size a witness reports);
- proofs and offline receipts (:mod:`.receipt`) come from the tree at any checkpointed size.

The engine's calls::

    ledger = Ledger.create("run/ledger.db", Signer("phalanx.run/abc", log_key), policy=policy)
    entry, index = ledger.submit(NodeRegistration(...), node_key)   # signs with the next seq
    ledger.submit_many([(UpdateCommitment(...), key) for ...])      # one transaction
    published = ledger.checkpoint(witnesses)                        # signed, cosigned, stored
    receipt = ledger.receipt(index)                                 # c2sp.org/tlog-proof@v1
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from phalanx.core.encoding import encode
from phalanx.core.keys import SignatureError, SigningKey, VerifyKey, node_id
from phalanx.core.merkle import MerkleTree
from phalanx.ledger.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint, sign_checkpoint
from phalanx.ledger.entries import MAX_ENTRY_SIZE, Body, Entry, EntryError, decode_entry, sign_entry
from phalanx.ledger.note import (
    SIG_ED25519,
    Note,
    NoteError,
    NoteSignature,
    Signer,
    Verifier,
    parse_note,
    parse_vkey,
)
from phalanx.ledger.policy import Policy, PolicyError
from phalanx.ledger.receipt import Receipt
from phalanx.ledger.state import STATEFUL, LedgerState, StructureError
from phalanx.ledger.storage import FORMAT, EntryRow, Store, StorageError
from phalanx.ledger.witness import Conflict, WitnessError

META_DOMAIN = b"phalanx.ledger/meta/v1\n"
META_KEYS = ("format", "origin", "log_vkey", "policy")


class RejectedEntry(ValueError):
    """An entry the log refused; nothing of its batch was stored."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


class Cosigner(Protocol):
    """Anything that cosigns like a C2SP witness (a :class:`~phalanx.ledger.witness.Witness`, or a
    client for a remote one)."""

    name: str

    @property
    def vkey(self) -> str: ...

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> list[NoteSignature]: ...


@dataclass(frozen=True)
class Published:
    """A stored checkpoint, whether the policy makes it final, and why any witness refused."""

    signed: SignedCheckpoint
    final: bool
    refusals: dict[str, str] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Checkpoint:
        return self.signed.checkpoint


def meta_message(values: dict[str, bytes]) -> bytes:
    """What the log signs about its own settings (format, origin, log vkey, policy)."""
    return META_DOMAIN + encode({k: values[k] for k in META_KEYS})


class Ledger:
    """One log: its store, its tree, its rules; writable with the log's key, readable without."""

    def __init__(self, store: Store, meta: dict[str, bytes], signer: Signer | None):
        self.store = store
        self.origin = meta["origin"].decode()
        self.log_verifier = parse_vkey(meta["log_vkey"].decode())
        self.policy = Policy.parse(meta["policy"].decode())
        self.signer = signer
        self.tree = MerkleTree()
        self.state = LedgerState()
        self._checkpoints: list[tuple[int, int, bytes]] = []

    # -------------------------------------------------------------- opening

    @classmethod
    def create(cls, location: str | Path, signer: Signer, *, policy: Policy | None = None) -> Ledger:
        """A new, empty ledger at ``location`` (a file path for SQLite, or a PostgreSQL URL).

        ``signer`` is the log's key; its name is the log's origin. The policy (which witnesses
        make a checkpoint final) defaults to this log with no witnesses.
        """
        if signer.sig_type != SIG_ED25519:
            raise ValueError("the log's key signs checkpoints: it must be an Ed25519 note key (type 0x01)")
        policy = policy or Policy([signer.verifier])
        if signer.verifier not in policy.logs:
            raise PolicyError(f"the policy does not list this log's key {signer.vkey}")
        store = Store(location, create=True)
        meta = {"format": FORMAT, "origin": signer.name.encode(), "log_vkey": signer.vkey.encode(),
                "policy": policy.format().encode()}
        meta["signature"] = signer.key.sign(meta_message(meta))
        store.write_meta(meta)
        return cls(store, meta, signer)

    @classmethod
    def open(cls, location: str | Path, *, signer: Signer | None = None, readonly: bool = False) -> Ledger:
        """Open a ledger; without ``signer`` it can append entries but not sign checkpoints.

        Raises :class:`StorageError` if the store is not a sound ledger: unreadable, settings
        not signed by the log, or stored entries that do not reproduce the last checkpoint.
        """
        store = Store(location, readonly=readonly)
        try:
            meta = read_signed_meta(store)
            ledger = cls(store, meta, signer)
            if signer is not None and signer.vkey != ledger.log_verifier.vkey:
                raise StorageError(f"{store.name}: this ledger's log key is {ledger.log_verifier.vkey}, "
                                   f"not {signer.vkey}")
            ledger._load()
        except Exception:
            store.close()
            raise
        return ledger

    def _load(self) -> None:
        name = self.store.name
        hashes = []
        for i, (idx, leaf) in enumerate(self.store.leaves()):
            if idx != i or len(leaf) != 32:
                raise StorageError(f"{name}: entry rows are not numbered 0..n-1 with 32-byte leaves (row {i})")
            hashes.append(leaf)
        self.tree.append_leaf_hashes(hashes)
        for idx, type_, node, seq, round_, data in self.store.plain_rows():
            if type_ in STATEFUL:
                try:
                    self.state.record(idx, decode_entry(data))
                except EntryError as e:
                    raise StorageError(f"{name}: entry {idx} is unreadable ({e}); run phalanx audit") from None
            else:
                self.state.record_plain(idx, type_, node, seq, round_ if type_ == "update_commitment" else None)
        self._checkpoints = self.store.checkpoint_rows()
        if self._checkpoints:
            cid, size, note = self._checkpoints[-1]
            try:
                signed = open_checkpoint(note, [self.log_verifier])
            except NoteError as e:
                raise StorageError(f"{name}: checkpoint {cid} does not verify ({e}); run phalanx audit") from None
            if size > self.tree.size or signed.checkpoint.root != self.tree.root(size):
                raise StorageError(f"{name}: the stored entries do not reproduce checkpoint {cid} (size {size}); "
                                   "run phalanx audit")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- reading

    @property
    def size(self) -> int:
        return self.tree.size

    def root(self, size: int | None = None) -> bytes:
        return self.tree.root(size)

    @property
    def vkey(self) -> str:
        return self.log_verifier.vkey

    def entry(self, index: int) -> Entry:
        row = self.store.row(index)
        if row is None:
            raise IndexError(f"no entry {index}: the log has {self.size}")
        return decode_entry(row.data)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Entry]]:
        for row in self.store.rows(start, end):
            yield row.idx, decode_entry(row.data)

    def next_seq(self, key: SigningKey | VerifyKey | bytes) -> int:
        """The sequence number the next entry signed by ``key`` must carry."""
        raw = key.public.raw if isinstance(key, SigningKey) else key.raw if isinstance(key, VerifyKey) else key
        return self.state.next_seq(node_id(raw))

    # -------------------------------------------------------------- appending

    def append(self, entry: Entry, *, verified: bool = False) -> int:
        """Append one signed entry; returns its index. See :meth:`append_many`."""
        return self.append_many([entry], verified=verified)[0]

    def append_many(self, entries: Sequence[Entry], *, verified: bool = False) -> list[int]:
        """Append signed entries in order, in one transaction; returns their indices.

        Each must carry a valid signature for this log's origin (skipped when ``verified``: the
        caller has just signed them itself) and pass the structural rules. If any fails, none is
        stored and :class:`RejectedEntry` names the first and why.
        """
        first = self.size
        rows: list[EntryRow] = []
        self.state.begin()
        try:
            for i, entry in enumerate(entries):
                index = first + i
                try:
                    if len(entry.encoding) > MAX_ENTRY_SIZE:
                        raise EntryError(f"{len(entry.encoding)} bytes is more than {MAX_ENTRY_SIZE}")
                    if not verified:
                        entry.verify(self.origin)
                    self.state.apply(index, entry)
                except (EntryError, StructureError) as e:
                    raise RejectedEntry(f"entry {i} of the batch (would be log index {index}): {e}", index) from None
                body = entry.body
                rows.append(EntryRow(index, entry.leaf_hash, entry.encoding, entry.type, entry.node_id,
                                     entry.seq, getattr(body, "round", None) if _has_round(body) else None))
            if rows:
                self.store.insert_entries(rows, first)
        except BaseException:
            self.state.rollback()
            raise
        self.state.commit()
        self.tree.append_leaf_hashes([r.leaf for r in rows])
        return [r.idx for r in rows]

    def submit(self, body: Body, key: SigningKey) -> tuple[Entry, int]:
        """Sign ``body`` as ``key`` with its next sequence number and append it."""
        (entry, index), = self.submit_many([(body, key)])
        return entry, index

    def submit_many(self, items: Iterable[tuple[Body, SigningKey]]) -> list[tuple[Entry, int]]:
        """Sign and append many entries in one transaction (the engine's batched path)."""
        seqs: dict[bytes, int] = {}
        entries = []
        for body, key in items:
            kid = key.node_id
            seq = seqs.get(kid, self.state.next_seq(kid))
            seqs[kid] = seq + 1
            entries.append(sign_entry(body, key, seq, self.origin))
        return list(zip(entries, self.append_many(entries, verified=True)))

    # -------------------------------------------------------------- checkpoints

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, oldest first (each re-verified against the log's key)."""
        return [open_checkpoint(note, self.policy.verifiers()) for _, _, note in self._checkpoints]

    @property
    def checkpoint_count(self) -> int:
        return len(self._checkpoints)

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        if not self._checkpoints:
            return None
        return open_checkpoint(self._checkpoints[-1][2], self.policy.verifiers())

    def checkpoint(self, witnesses: Sequence[Cosigner] = (), *, extensions: Sequence[str] = (),
                   only_final: bool = False) -> Published:
        """Sign the current tree head, collect cosignatures from ``witnesses``, store it.

        A witness that refuses is reported in :attr:`Published.refusals`; the checkpoint is
        stored either way (``only_final``: only if the policy's quorum is met, so that a log
        whose witnesses are partly down stores no checkpoint the audit would refuse), and
        :attr:`Published.final` says whether the quorum is met. Checkpointing again at an
        unchanged size adds cosignatures to the stored one.
        """
        if self.signer is None:
            raise StorageError(f"{self.store.name}: opened without the log's key, so it cannot sign checkpoints")
        checkpoint = Checkpoint(self.origin, self.size, self.root(), tuple(extensions))
        note = sign_checkpoint(checkpoint, self.signer)
        cid = len(self._checkpoints)
        if self._checkpoints and self._checkpoints[-1][1] == checkpoint.size:
            last = parse_note(self._checkpoints[-1][2])
            if last.text == note.text:
                cid, note = cid - 1, last
        refusals: dict[str, str] = {}
        for witness in witnesses:
            try:
                note = note.with_signatures(self._cosignature(witness, note))
            except Exception as e:  # a witness is another party: whatever it does is a refusal
                refusals[witness.name] = f"{type(e).__name__}: {e}"
        data = note.format()
        if only_final and not self.policy.is_final(data):
            return Published(open_checkpoint(data, self.policy.verifiers()), False, refusals)
        self.store.put_checkpoint(cid, checkpoint.size, data)
        if cid == len(self._checkpoints):
            self._checkpoints.append((cid, checkpoint.size, data))
        else:
            self._checkpoints[cid] = (cid, checkpoint.size, data)
        signed = open_checkpoint(data, self.policy.verifiers())
        return Published(signed, self.policy.is_final(data), refusals)

    def _cosignature(self, witness: Cosigner, note: Note) -> list[NoteSignature]:
        verifier = parse_vkey(witness.vkey)
        old = self._last_cosigned_size(verifier)
        data = note.format()
        try:
            lines = witness.add_checkpoint(old, self._proof_from(old), data)
        except Conflict as e:
            if e.latest_size is None or e.latest_size > self.size:
                raise
            old = e.latest_size
            lines = witness.add_checkpoint(old, self._proof_from(old), data)
        good = [s for s in lines if verifier.matches(s)]
        if not good:
            raise WitnessError(f"witness {witness.name} returned no cosignature by its key")
        for s in good:
            verifier.verify(note.text.encode(), s.signature)
        return good

    def _proof_from(self, old: int) -> list[bytes]:
        return self.tree.consistency_proof(old, self.size) if 0 < old < self.size else []

    def _last_cosigned_size(self, verifier: Verifier) -> int:
        for _, size, note in reversed(self._checkpoints):
            if any(verifier.matches(s) for s in parse_note(note).signatures):
                return size
        return 0

    # -------------------------------------------------------------- proofs

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self.tree.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return self.tree.consistency_proof(size1, size2)

    def receipt(self, index: int, *, checkpoint: int | None = None) -> Receipt:
        """An offline proof (c2sp.org/tlog-proof@v1) that entry ``index`` is in the log.

        Uses the latest stored checkpoint that covers the entry (or checkpoint number
        ``checkpoint``); the entry's own bytes ride along as the proof's extra data.
        """
        if not 0 <= index < self.size:
            raise IndexError(f"no entry {index}: the log has {self.size}")
        rows = self._checkpoints if checkpoint is None else [r for r in self._checkpoints if r[0] == checkpoint]
        chosen = next((r for r in reversed(rows) if r[1] > index), None)
        if chosen is None:
            raise IndexError(f"entry {index} is not covered by a stored checkpoint yet: checkpoint first")
        row = self.store.row(index)
        return Receipt(index=index, proof=tuple(self.tree.inclusion_proof(index, chosen[1])),
                       checkpoint=chosen[2], extra=row.data)


def _has_round(body: Body) -> bool:
    return body.TYPE in ("update_commitment", "aggregate_record")


def read_signed_meta(store: Store, log_key: Verifier | None = None) -> dict[str, bytes]:
    """The ledger's settings, checked: all present, the format known, signed by the log's key."""
    meta = store.read_meta()
    missing = [k for k in (*META_KEYS, "signature") if k not in meta]
    if missing:
        raise StorageError(f"{store.name}: meta: missing {', '.join(missing)}")
    extra = sorted(set(meta) - {*META_KEYS, "signature"})
    if extra:
        raise StorageError(f"{store.name}: meta: unknown setting(s) {', '.join(extra)}")
    if meta["format"] != FORMAT:
        raise StorageError(f"{store.name}: meta: format {meta['format'][:40]!r} is not {FORMAT.decode()}")
    try:
        verifier = parse_vkey(meta["log_vkey"].decode())
        Policy.parse(meta["policy"].decode())
    except (NoteError, PolicyError, UnicodeDecodeError) as e:
        raise StorageError(f"{store.name}: meta: {e}") from None
    if log_key is not None and verifier != log_key:
        raise StorageError(f"{store.name}: meta: the stored log key {verifier.vkey} is not the expected {log_key.vkey}")
    if meta["origin"] != verifier.name.encode():
        raise StorageError(f"{store.name}: meta: origin {meta['origin'][:60]!r} is not the log key's name")
    try:
        VerifyKey(verifier.public_key).verify(meta["signature"], meta_message(meta))
    except SignatureError:
        raise StorageError(f"{store.name}: meta: the log's signature over its settings does not verify") from None
    return meta

