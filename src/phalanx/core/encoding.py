"""One canonical byte encoding for structured records: deterministic CBOR, decoded strictly.

Ledger entries are signed and hashed, so a record must have exactly one encoding. We use CBOR
(Bormann and Hoffman, RFC 8949, 2020) with the *core deterministic encoding* of section 4.2.1:
shortest-form integers and lengths, no indefinite lengths, floats in their shortest form that
keeps the value (preferred serialization, section 4.1), map keys in the bytewise order of their
encodings, no duplicate keys. The encoder is ``cbor2.dumps(..., canonical=True)``.

Why CBOR rather than RFC 8785 JSON (JCS): hashes, keys and signatures are byte strings in
CBOR, not base64 text to be re-validated; integers are exact up to 2**64; floats need no ES6
number formatting; and the result is about half the size. Why this is safe: the decoder here
accepts only what the encoder would produce. It decodes, checks that every value is one of the
types below, *re-encodes and compares byte for byte*, so non-shortest integers, unsorted or
duplicate keys, indefinite lengths, tags and trailing bytes are all refused.

One subtlety: cbor2's ``canonical`` sorts map keys length-first (RFC 7049's order), RFC 8949
sorts by encoded bytes. For text keys shorter than 24 bytes, whose encoded header is one byte
(0x60 + length), the two orders are the same, so keys are limited to 23 UTF-8 bytes.

Allowed values: ``None``, ``bool``, ``int`` in [-2**64, 2**64), finite ``float``, ``str``,
``bytes``, ``list``/``tuple`` (encoded as arrays, decoded as lists) and ``dict`` with ``str``
keys.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2

#: Largest encoded record the strict decoder reads (a guard against hostile input).
MAX_SIZE = 1 << 20
#: Deepest nesting accepted.
MAX_DEPTH = 16
MAX_KEY_BYTES = 23
_INT_MIN, _INT_MAX = -(1 << 64), (1 << 64) - 1


class EncodingError(ValueError):
    """A value that has no canonical encoding, or bytes that are not a canonical encoding."""


def _check(value: Any, where: str, depth: int) -> None:
    where = where or "value"
    if depth > MAX_DEPTH:
        raise EncodingError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str, bytes)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"{where}: integer {value} is outside [-2**64, 2**64)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodingError(f"{where}: {value} is not a finite number")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]" if where != "value" else f"[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{where}: map key {key!r} is not text")
            if len(key.encode()) > MAX_KEY_BYTES:
                raise EncodingError(f"{where}: map key {key[:30]!r} is longer than {MAX_KEY_BYTES} bytes")
            _check(item, key if where == "value" else f"{where}.{key}", depth + 1)
        return
    raise EncodingError(f"{where}: {type(value).__name__} has no canonical encoding here")


def _scalar_ok(value: Any, t: type) -> bool | None:
    """True/False for a scalar, None for anything else."""
    if t is str or t is bytes or t is bool or value is None:
        return True
    if t is int:
        return _INT_MIN <= value <= _INT_MAX
    if t is float:
        return math.isfinite(value)
    return None


def _ok(value: Any, depth: int = 0) -> bool:
    """The fast yes/no form of :func:`_check` (no messages built); the common path. Recurses
    only into containers; scalars are checked in the loop."""
    t = type(value)
    if t is dict:
        for k in value:
            if type(k) is not str or len(k) > MAX_KEY_BYTES or (not k.isascii() and len(k.encode()) > MAX_KEY_BYTES):
                return False
        items = value.values()
    elif t is list or t is tuple:
        items = value
    else:
        return bool(_scalar_ok(value, t)) and depth <= MAX_DEPTH
    if depth >= MAX_DEPTH:
        return not items
    for item in items:
        ok = _scalar_ok(item, type(item))
        if ok is None:
            ok = _ok(item, depth + 1)
        if not ok:
            return False
    return True


def _validate(value: Any) -> None:
    if not _ok(value, 0):
        _check(value, "", 0)  # says where and why
        raise EncodingError(f"value of type {type(value).__name__} has no canonical encoding here")


def encode(value: Any) -> bytes:
    """The deterministic CBOR encoding of ``value`` (see the module docstring for what is allowed)."""
    _validate(value)
    return cbor2.dumps(value, canonical=True)


def encode_validated(value: Any) -> bytes:
    """:func:`encode` without the type walk, for a value that already passed :func:`decode` or
    comes from a model whose fields admit only encodable types (the ledger's entries)."""
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, *, max_size: int = MAX_SIZE) -> Any:
    """Decode bytes that must be exactly the canonical encoding of one value.

    Raises :class:`EncodingError` for anything else: malformed CBOR, unsupported types or tags,
    a non-canonical form, or bytes after the value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise EncodingError("empty input")
    if len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes is more than the {max_size} allowed")
    try:
        value = cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=MAX_DEPTH + 2)
    except Exception as e:  # cbor2 raises several types on hostile input (decode, EOF, recursion)
        raise EncodingError(f"not valid CBOR: {e}") from None
    _validate(value)
    again = cbor2.dumps(value, canonical=True)
    if again != data:
        if data.startswith(again):
            raise EncodingError(f"{len(data) - len(again)} trailing bytes after the value")
        raise EncodingError("not in canonical (deterministic) CBOR form")
    return value
