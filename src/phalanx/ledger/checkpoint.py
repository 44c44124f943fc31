"""Checkpoints: a log's signed tree head, in C2SP tlog-checkpoint form (c2sp.org/tlog-checkpoint).

The note text is three or more non-empty lines::

    <origin>                        the log's name (here also its key name)
    <tree size>                     ASCII decimal, no leading zeros ("0" for the empty tree)
    <root hash>                     base64 of the RFC 9162 root at that size
    [<extension line> ...]          optional, opaque, non-empty (not recommended)

signed (:mod:`.note`) by the log's Ed25519 key (type 0x01) and cosigned by witnesses
(:mod:`.witness`). :func:`open_checkpoint` accepts a note only if it carries a verified signature
from a log key whose name is the origin, as the spec recommends logs to sign.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from phalanx.core.merkle import EMPTY_ROOT, HASH_SIZE
from phalanx.ledger.note import (
    Note,
    NoteError,
    NoteVerificationError,
    Signer,
    VerifiedNote,
    Verifier,
    b64decode,
    b64encode,
    parse_note,
    verify_note,
)

_DECIMAL = re.compile(r"(0|[1-9][0-9]*)")


class CheckpointError(NoteError):
    """A note whose text is not a well-formed checkpoint, or that its log did not sign."""


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, the tree size, the root hash, and any extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("origin: must be one non-empty line")
        if not 0 <= self.size < 1 << 63:
            raise CheckpointError(f"size: {self.size} is not in [0, 2**63)")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root: {len(self.root)} bytes, not {HASH_SIZE}")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise CheckpointError("root: a checkpoint of size 0 must carry the empty tree's root")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError("extension lines must be single non-empty lines")

    def text(self) -> str:
        """The note text, ending in a newline."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), b64encode(self.root),
                                                  *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read a checkpoint from note text (strictly: every rule of tlog-checkpoint)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint text has {len(lines)} lines; origin, size and root are required")
        origin, size, root, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size):
            raise CheckpointError(f"checkpoint size {size[:30]!r} is not a decimal with no leading zeros")
        try:
            root_hash = b64decode(root, "checkpoint root")
        except NoteError as e:
            raise CheckpointError(str(e)) from None
        if any(not line for line in extensions):
            raise CheckpointError("checkpoint has an empty extension line")
        return cls(origin, int(size), root_hash, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint with the note that carries it and the signatures that verified."""

    checkpoint: Checkpoint
    verified: VerifiedNote

    @property
    def note(self) -> Note:
        return self.verified.note

    def format(self) -> bytes:
        return self.note.format()


def sign_checkpoint(checkpoint: Checkpoint, log: Signer) -> Note:
    """The log's signed note for ``checkpoint`` (the log's key name must be the origin)."""
    if log.name != checkpoint.origin:
        raise CheckpointError(f"the log key is named {log.name!r}, not the origin {checkpoint.origin!r}")
    return Note(checkpoint.text(), (log.sign(checkpoint.text()),))


def open_checkpoint(note: Note | bytes | str, vkeys: Iterable[Verifier | str]) -> SignedCheckpoint:
    """Verify a signed checkpoint against known keys (the log's, and any witnesses').

    Raises :class:`CheckpointError` or :class:`NoteVerificationError` unless the text is a valid
    checkpoint and a log key (type 0x01) named as its origin signed it.
    """
    if not isinstance(note, Note):
        note = parse_note(note)
    checkpoint = Checkpoint.parse(note.text)
    verified = verify_note(note, vkeys)
    if not any(v.verifier.sig_type == 0x01 and v.verifier.name == checkpoint.origin for v in verified.verified):
        raise NoteVerificationError(f"checkpoint for {checkpoint.origin} is not signed by a known key of that log")
    return SignedCheckpoint(checkpoint, verified)
