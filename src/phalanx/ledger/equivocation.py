"""Proof that a log signed two checkpoints that cannot both be true (a split view).

A log must never sign two inconsistent checkpoints (C2SP tlog-checkpoint). Two of its signed
checkpoints for the same origin contradict each other when:

- **same size, different roots**: one tree cannot have two roots. The evidence is the two
  signed notes.
- **different sizes m < n, and the larger tree has another root at size m**: the evidence is the
  two notes, a root r' != the smaller checkpoint's root, and a consistency proof from (m, r')
  to the larger checkpoint (n, root_n) that verifies (RFC 9162 section 2.1.4.2). The proof
  binds the larger tree's first m leaves to r'; finding another proof for the smaller
  checkpoint's root would take a SHA-256 collision.

Either way the evidence is self-contained: :func:`verify_equivocation` re-checks it from the
object and the log's public key alone, with no access to the log. It travels as JSON (the notes
verbatim, hashes in base64).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from phalanx.core.merkle import ProofError, verify_consistency
from phalanx.ledger.checkpoint import Checkpoint, open_checkpoint
from phalanx.ledger.note import NoteError, Verifier, b64decode, b64encode

FORMAT = "phalanx.ledger/equivocation/v1"


class EvidenceError(ValueError):
    """Evidence that does not prove equivocation (or is malformed)."""


@dataclass(frozen=True)
class Equivocation:
    """Two signed checkpoints of one log that cannot both be true, and what shows it."""

    first: bytes   # the signed note with the smaller (or equal) size
    second: bytes  # the other signed note
    root_at_first_size: bytes | None = None  # different sizes: the larger tree's root at the smaller size
    proof: tuple[bytes, ...] = ()            # different sizes: consistency proof (m, r') -> (n, root_n)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT,
            "first": self.first.decode(),
            "second": self.second.decode(),
            "root_at_first_size": b64encode(self.root_at_first_size) if self.root_at_first_size else None,
            "proof": [b64encode(p) for p in self.proof],
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Equivocation:
        try:
            obj = json.loads(text)
            if obj.get("format") != FORMAT:
                raise EvidenceError(f"not {FORMAT} evidence")
            root = obj.get("root_at_first_size")
            return cls(first=obj["first"].encode(), second=obj["second"].encode(),
                       root_at_first_size=b64decode(root, "root_at_first_size") if root else None,
                       proof=tuple(b64decode(p, f"proof[{i}]") for i, p in enumerate(obj.get("proof", []))))
        except EvidenceError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EvidenceError(f"malformed equivocation evidence: {e}") from None


def verify_equivocation(evidence: Equivocation, log_keys: Iterable[Verifier | str]) -> tuple[Checkpoint, Checkpoint]:
    """Check that ``evidence`` proves the log equivocated; return the two checkpoints.

    Raises :class:`EvidenceError` naming what does not hold.
    """
    keys = list(log_keys)
    try:
        a = open_checkpoint(evidence.first, keys).checkpoint
        b = open_checkpoint(evidence.second, keys).checkpoint
    except NoteError as e:
        raise EvidenceError(f"a checkpoint in the evidence does not verify: {e}") from None
    if a.origin != b.origin:
        raise EvidenceError(f"the checkpoints are of different logs ({a.origin}, {b.origin})")
    if a.size > b.size:
        raise EvidenceError("first must be the checkpoint with the smaller size")
    if a.size == b.size:
        if a.root == b.root:
            raise EvidenceError(f"both checkpoints have size {a.size} and the same root: no contradiction")
        return a, b
    if evidence.root_at_first_size is None:
        raise EvidenceError("different sizes need the larger tree's root at the smaller size, and a proof")
    if evidence.root_at_first_size == a.root:
        raise EvidenceError("the larger tree's root at the smaller size is the smaller checkpoint's: no contradiction")
    try:
        verify_consistency(a.size, b.size, list(evidence.proof), evidence.root_at_first_size, b.root)
    except ProofError as e:
        raise EvidenceError(f"the consistency proof does not tie the other root to the larger tree: {e}") from None
    return a, b


def same_size_equivocation(note_a: bytes, note_b: bytes) -> Equivocation:
    return Equivocation(first=note_a, second=note_b)


def fork_equivocation(smaller: bytes, larger: bytes, root_at_smaller: bytes, proof: Sequence[bytes]) -> Equivocation:
    return Equivocation(first=smaller, second=larger, root_at_first_size=root_at_smaller, proof=tuple(proof))
