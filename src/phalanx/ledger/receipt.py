"""Offline receipts: proof that an entry is in the log, checkable without the database.

The format is C2SP tlog-proof (c2sp.org/tlog-proof@v1)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry's canonical encoding>
    index <leaf index>
    <base64 inclusion proof hash>      one per line, from the leaf's sibling up
    ...
    <blank line>
    <the signed, cosigned checkpoint, verbatim>

Verifying (the spec's four steps): the leaf hash is computed from the entry's bytes (given by
the verifier, or the ``extra`` line); the checkpoint must be signed by a log the policy lists and
cosigned to its quorum; the inclusion proof must lead from the leaf to the checkpoint's root.
Phalanx adds a fifth: the entry decodes, and its submitter's signature holds for that log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phalanx.core.merkle import ProofError, leaf_hash, verify_inclusion
from phalanx.ledger.checkpoint import Checkpoint
from phalanx.ledger.entries import Entry, EntryError, decode_entry
from phalanx.ledger.note import NoteError, b64decode, b64encode, parse_note, split_before_note
from phalanx.ledger.policy import Policy, PolicyError

HEADER = "c2sp.org/tlog-proof@v1"
MAX_RECEIPT_SIZE = 2 << 20
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)")


class ReceiptError(ValueError):
    """A receipt that is malformed or does not prove what it claims; the message says which step."""


@dataclass(frozen=True)
class Receipt:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes           # the signed note, verbatim
    extra: bytes | None = None  # the entry's encoding

    def format(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines += [b64encode(h) for h in self.proof]
        return "\n".join(lines) + "\n\n" + self.checkpoint.decode()

    @classmethod
    def parse(cls, text: str | bytes) -> Receipt:
        """Read a tlog-proof strictly; raises :class:`ReceiptError` naming the line."""
        if len(text) > MAX_RECEIPT_SIZE:
            raise ReceiptError(f"receipt of {len(text)} bytes is larger than {MAX_RECEIPT_SIZE}")
        try:
            lines, note = split_before_note(text, "receipt")
        except NoteError as e:
            raise ReceiptError(str(e)) from None
        if lines[0] != HEADER:
            raise ReceiptError(f"receipt does not start with {HEADER}")
        pos, extra = 1, None
        try:
            if pos < len(lines) and lines[pos].startswith("extra "):
                extra = b64decode(lines[pos][6:], "receipt extra line")
                pos += 1
            if pos >= len(lines) or not lines[pos].startswith("index "):
                raise ReceiptError(f"receipt line {pos + 1}: expected 'index <n>'")
            index = lines[pos][6:]
            if not _DECIMAL.fullmatch(index) or int(index) >= 1 << 63:
                raise ReceiptError(f"receipt line {pos + 1}: index {index[:30]!r} is not a decimal without leading zeros")
            proof = tuple(b64decode(h, f"receipt line {pos + 2 + i}") for i, h in enumerate(lines[pos + 1:]))
            for i, h in enumerate(proof):
                if len(h) != 32:
                    raise ReceiptError(f"receipt line {pos + 2 + i}: a proof hash is 32 bytes, not {len(h)}")
            parse_note(note)
        except NoteError as e:
            raise ReceiptError(str(e)) from None
        return cls(int(index), proof, note.encode(), extra)


@dataclass(frozen=True)
class VerifiedReceipt:
    entry: Entry
    checkpoint: Checkpoint
    cosigners: list[str]


def verify_receipt(receipt: Receipt | str | bytes, policy: Policy, *, entry: bytes | None = None) -> VerifiedReceipt:
    """Check a receipt offline against ``policy`` (the trusted log and witness keys)."""
    if not isinstance(receipt, Receipt):
        receipt = Receipt.parse(receipt)
    if entry is not None and receipt.extra is not None and entry != receipt.extra:
        raise ReceiptError("step 1: the entry given is not the one the receipt carries")
    data = entry if entry is not None else receipt.extra
    if data is None:
        raise ReceiptError("step 1: no entry to check (the receipt has no extra line; pass the entry's bytes)")
    try:
        signed = policy.check(receipt.checkpoint)
    except PolicyError as e:
        raise ReceiptError(f"steps 2-3: {e}") from None
    cp = signed.checkpoint
    try:
        verify_inclusion(leaf_hash(data), receipt.index, cp.size, list(receipt.proof), cp.root)
    except ProofError as e:
        raise ReceiptError(f"step 4: {e}") from None
    try:
        decoded = decode_entry(data)
        decoded.verify(cp.origin)
    except EntryError as e:
        raise ReceiptError(f"entry: {e}") from None
    return VerifiedReceipt(decoded, cp, policy.cosigners(signed))
