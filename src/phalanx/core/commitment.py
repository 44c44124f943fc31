"""Hiding commitments: SHA-256 over a secret random salt and the bytes.

A plain hash of un-noised data lets anyone test a guess (hash a candidate update or sample count
and compare). Prefixing a secret 32-byte random salt hides the data until the salt is revealed,
and still binds: the committer cannot later open the commitment to other bytes without a
SHA-256 collision (Halevi and Micali, CRYPTO 1996, on hash-based commitments). The salt goes
only to those who must check the data (receivers, auditors); the commitment can be public.

The salt has a fixed length, so ``salt || data`` is unambiguous. A count is committed as its
8-byte big-endian encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SALT_SIZE = 32


class CommitmentError(ValueError):
    """A commitment that does not open to the given salt and data."""


def new_salt() -> bytes:
    """A fresh secret salt from the operating system's randomness."""
    return os.urandom(SALT_SIZE)


def _check_salt(salt: bytes) -> None:
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_SIZE:
        raise CommitmentError(f"a salt is {SALT_SIZE} bytes")


def hiding_commitment(salt: bytes, data: bytes) -> bytes:
    """SHA-256(salt || data)."""
    _check_salt(salt)
    return hashlib.sha256(bytes(salt) + bytes(data)).digest()


def count_commitment(salt: bytes, count: int) -> bytes:
    """SHA-256(salt || count as 8 big-endian bytes): a hidden claimed sample count."""
    if not 0 <= count < 1 << 64:
        raise CommitmentError(f"a count is in [0, 2**64) (got {count})")
    return hiding_commitment(salt, count.to_bytes(8, "big"))


def open_commitment(commitment: bytes, salt: bytes, data: bytes) -> None:
    """Return if ``commitment`` is SHA-256(salt || data); raise :class:`CommitmentError` if not."""
    if not hmac.compare_digest(hiding_commitment(salt, data), bytes(commitment)):
        raise CommitmentError("the commitment does not open to this salt and data")


def content_hash(data: bytes) -> bytes:
    """SHA-256 of ``data``: the address of a blob (model weights, an update) outside the log."""
    return hashlib.sha256(data).digest()
