"""A witness: cosigns a log's checkpoint only after checking it extends the last one it cosigned.

This is the ``add-checkpoint`` operation of C2SP tlog-witness (c2sp.org/tlog-witness), without
the HTTP around it (the network package puts it on a route; each error carries the status code
the spec gives it):

1. the checkpoint's origin must be a log the witness knows (else 404);
2. the log's signature must verify (else 403);
3. ``old_size`` must not exceed the checkpoint's size (else 400);
4. ``old_size`` must equal the size of the last checkpoint it cosigned for that origin, 0 if
   none (else 409, with the size it has);
5. a checkpoint of size 0 must have the empty root; from old size 0 the proof must be empty;
   otherwise the proof must verify from its recorded (size, root) to the new one; equal sizes
   need equal roots (else 422);
6. it records the new checkpoint, atomically with the check in 4, then returns a timestamped
   ``cosignature/v1`` (C2SP tlog-cosignature) over the checkpoint.

When step 5 fails because the log contradicts itself (same size, other root; or a proof that
holds for the new root but yields another root at the old size), the refusal carries an
:class:`~phalanx.ledger.equivocation.Equivocation` that anyone can re-check.

The state (last cosigned checkpoint per origin) lives in a :class:`WitnessState`: in memory,
or in a JSON file replaced atomically (:class:`FileWitnessState`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from phalanx.core.merkle import EMPTY_ROOT, ProofError, roots_from_consistency_proof, verify_consistency
from phalanx.ledger.checkpoint import Checkpoint, open_checkpoint
from phalanx.ledger.equivocation import Equivocation
from phalanx.ledger.note import (
    SIG_COSIGNATURE,
    NoteError,
    NoteSignature,
    Signer,
    Verifier,
    b64decode,
    b64encode,
    parse_note,
    parse_vkey,
    split_before_note,
)

#: tlog-witness: a client sends at most 63 consistency proof lines.
MAX_PROOF_LINES = 63


class WitnessError(Exception):
    """A refusal to cosign; ``status`` is the HTTP status C2SP tlog-witness assigns to it."""

    status = 400

    def __init__(self, message: str, *, latest_size: int | None = None, evidence: Equivocation | None = None):
        super().__init__(message)
        self.latest_size = latest_size
        self.evidence = evidence


class BadRequest(WitnessError):
    status = 400


class Forbidden(WitnessError):
    status = 403


class UnknownLog(WitnessError):
    status = 404


class Conflict(WitnessError):
    status = 409


class Unprocessable(WitnessError):
    status = 422


@dataclass(frozen=True)
class Cosigned:
    """The witness's record for one origin: the last checkpoint it cosigned, and its note."""

    size: int
    root: bytes
    note: bytes


class WitnessState(Protocol):
    def get(self, origin: str) -> Cosigned | None: ...

    def replace(self, origin: str, expected_size: int, new: Cosigned) -> bool:
        """Store ``new`` if the stored size is still ``expected_size`` (0: none); atomic."""


class MemoryWitnessState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Cosigned] = {}

    def get(self, origin: str) -> Cosigned | None:
        return self._records.get(origin)

    def replace(self, origin: str, expected_size: int, new: Cosigned) -> bool:
        with self._lock:
            current = self._records.get(origin)
            if (current.size if current else 0) != expected_size:
                return False
            self._records[origin] = new
            return True


class FileWitnessState(MemoryWitnessState):
    """The same records kept in a JSON file, rewritten by atomic rename after each change."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self._records = {o: Cosigned(r["size"], b64decode(r["root"], "root"), r["note"].encode())
                                 for o, r in raw.items()}
            except (ValueError, KeyError, TypeError, NoteError) as e:
                raise WitnessError(f"witness state {self.path}: unreadable ({e})") from None

    def replace(self, origin: str, expected_size: int, new: Cosigned) -> bool:
        with self._lock:
            current = self._records.get(origin)
            if (current.size if current else 0) != expected_size:
                return False
            records = {**self._records, origin: new}
            text = json.dumps({o: {"size": r.size, "root": b64encode(r.root), "note": r.note.decode()}
                               for o, r in records.items()}, indent=1, sort_keys=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".witness-")
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._records = records
            return True


class Witness:
    """Cosigns checkpoints of the logs it knows, each only as a consistent extension."""

    def __init__(self, signer: Signer, logs: Mapping[str, Iterable[Verifier | str]] | Iterable[Verifier | str],
                 state: WitnessState | None = None, clock: Callable[[], float] = time.time):
        if signer.sig_type != SIG_COSIGNATURE:
            raise ValueError(f"witness {signer.name}: its key must be a cosignature/v1 key (type 0x04)")
        self.signer = signer
        if not isinstance(logs, Mapping):
            keys = [parse_vkey(k) if isinstance(k, str) else k for k in logs]
            logs = {}
            for k in keys:
                logs.setdefault(k.name, []).append(k)
        self.logs = {origin: [parse_vkey(k) if isinstance(k, str) else k for k in keys] for origin, keys in logs.items()}
        self.state = state if state is not None else MemoryWitnessState()
        self.clock = clock

    @property
    def name(self) -> str:
        return self.signer.name

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def latest_size(self, origin: str) -> int:
        record = self.state.get(origin)
        return record.size if record else 0

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> list[NoteSignature]:
        """Check ``note`` against the last cosigned checkpoint and cosign it (see the module docstring)."""
        try:
            parsed = parse_note(note)
            checkpoint = Checkpoint.parse(parsed.text)
        except NoteError as e:
            raise BadRequest(f"not a checkpoint: {e}") from None
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise UnknownLog(f"unknown log {checkpoint.origin!r}")
        try:
            open_checkpoint(parsed, keys)
        except NoteError as e:
            raise Forbidden(f"{checkpoint.origin}: {e}") from None
        if not 0 <= old_size <= checkpoint.size:
            raise BadRequest(f"old size {old_size} is above the checkpoint's size {checkpoint.size}")
        if len(proof) > MAX_PROOF_LINES:
            raise BadRequest(f"{len(proof)} proof lines is more than {MAX_PROOF_LINES}")
        record = self.state.get(checkpoint.origin)
        have = record.size if record else 0
        if old_size != have:
            raise Conflict(f"{checkpoint.origin}: the last cosigned checkpoint has size {have}, not {old_size}",
                           latest_size=have)
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            raise Unprocessable("a checkpoint of size 0 must have the empty tree's root")
        self._check_extends(record, checkpoint, list(proof), note)
        formatted = parsed.format()
        if not self.state.replace(checkpoint.origin, old_size, Cosigned(checkpoint.size, checkpoint.root, formatted)):
            raise Conflict(f"{checkpoint.origin}: another checkpoint was cosigned meanwhile",
                           latest_size=self.latest_size(checkpoint.origin))
        return [self.signer.sign(parsed.text, int(self.clock()))]

    def _check_extends(self, record: Cosigned | None, new: Checkpoint, proof: list[bytes], note: bytes) -> None:
        if record is None or record.size == 0:
            if proof:
                raise Unprocessable("from old size 0 the consistency proof must be empty")
            return
        if record.size == new.size:
            if proof:
                raise Unprocessable("equal sizes need an empty consistency proof")
            if record.root != new.root:
                raise Unprocessable(f"{new.origin}: size {new.size} was cosigned with another root",
                                    evidence=Equivocation(first=record.note, second=note))
            return
        try:
            verify_consistency(record.size, new.size, proof, record.root, new.root)
        except ProofError as e:
            raise Unprocessable(f"{new.origin}: no consistency from size {record.size} to {new.size}: {e}",
                                evidence=_fork_evidence(record, new, proof, note)) from None

    def add_checkpoint_request(self, body: bytes) -> bytes:
        """The same, on the tlog-witness request body (``old N``, proof lines, blank, checkpoint);
        returns the response body (cosignature lines)."""
        old_size, proof, note = parse_add_checkpoint(body)
        return "".join(s.line() for s in self.add_checkpoint(old_size, proof, note)).encode()


def _fork_evidence(record: Cosigned, new: Checkpoint, proof: list[bytes], note: bytes) -> Equivocation | None:
    """Evidence when the proof holds for the new root but implies another root at the old size."""
    try:
        first, second = roots_from_consistency_proof(record.size, new.size, proof, record.root)
    except ProofError:
        return None
    if record.size & (record.size - 1) == 0 or second != new.root or first == record.root:
        return None  # a power-of-two old size carries no root of its own in the proof
    return Equivocation(first=record.note, second=note, root_at_first_size=first, proof=tuple(proof))


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split a tlog-witness add-checkpoint request into (old size, proof, checkpoint note)."""
    try:
        lines, note = split_before_note(body, "request")
    except NoteError as e:
        raise BadRequest(str(e)) from None
    if not lines[0].startswith("old "):
        raise BadRequest("request does not start with an 'old <size>' line")
    size = lines[0][4:]
    if not (size == "0" or (size.isascii() and size.isdigit() and not size.startswith("0"))):
        raise BadRequest(f"old size {size[:30]!r} is not a decimal with no leading zeros")
    try:
        proof = [b64decode(line, f"proof line {i + 1}") for i, line in enumerate(lines[1:])]
    except NoteError as e:
        raise BadRequest(str(e)) from None
    return int(size), proof, note.encode()


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    return (f"old {old_size}\n" + "".join(f"{b64encode(p)}\n" for p in proof) + "\n").encode() + note

