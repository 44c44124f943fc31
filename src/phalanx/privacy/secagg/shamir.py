"""Shamir secret sharing over a prime field, vectorised: t of n shares rebuild a secret, t - 1
reveal nothing (Shamir 1979, "How to share a secret", CACM 22(11)).

A secret ``s`` in ``GF(p)`` is the constant term of a random polynomial ``f`` of degree
``t - 1``; the share of the holder with x-coordinate ``x != 0`` is ``f(x)``. Any ``t`` shares
determine ``f`` and so ``s = f(0) = sum_i lambda_i y_i`` with the Lagrange weights
``lambda_i = prod_{j != i} x_j / (x_j - x_i)``. Any ``t - 1`` shares are uniformly distributed
whatever ``s`` is: for every candidate secret exactly one polynomial of degree ``t - 1`` passes
through them and ``(0, s)``, so they are consistent with every secret alike.

**The field.** ``p = 2^19 - 1`` (the Mersenne prime M19). A 32-byte secret (an X25519 private
key, a self-mask seed) is cut into 15 chunks of 18 bits, each shared with its own independent
polynomial; a share is 15 field elements, 285 bits, sent as 36 bytes. The field is small so that
all arithmetic runs as exact ``int64`` matrix products in numpy: evaluating ``f`` at every holder
is one ``(n, t) @ (t, 15)`` product with the Vandermonde matrix, and products of two elements
(``< 2^38``) summed over ``t <= 2^25`` terms never overflow. x-coordinates are client ids plus 1,
so ids run from 0 to ``p - 2``.

**Why by hand.** The ``cryptography`` package has no secret sharing. PyCryptodome's
``Crypto.Protocol.SecretSharing.Shamir`` works over ``GF(2^128)`` on 16-byte secrets only and
would bring a second cryptographic library for this one function; the PyPI packages that share
over a prime field (``secretsharing`` and its forks) are unmaintained and use Python big-integer
loops. None checks the consistency of redundant shares, which the server uses here to detect and
name a client that lies about a share.

**Consistency.** With ``m > t`` shares, :func:`reconstruct` also checks that the other ``m - t``
lie on the polynomial through the first ``t``, and raises :class:`InconsistentShares` if they do
not; the server then finds the lying holder by leaving shares out (``server.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from phalanx.privacy.secagg.encoding import pack_bits, unpack_bits

PRIME = (1 << 19) - 1
FIELD_BITS = 19
CHUNK_BITS = 18
SECRET_BYTES = 32
CHUNKS = -(-SECRET_BYTES * 8 // CHUNK_BITS)          # 15
SHARE_BYTES = (CHUNKS * FIELD_BITS + 7) // 8         # 36
MAX_THRESHOLD = 1 << 25                               # t p^2 < 2^63: exact int64 matrix products

RandBytes = Callable[[int], bytes]


class InconsistentShares(ValueError):
    """The shares do not lie on one polynomial of degree ``t - 1`` (or do not decode to a secret)."""


def uniform_field(shape: tuple[int, ...], randbytes: RandBytes, prime: int = PRIME) -> np.ndarray:
    """Uniform elements of ``GF(prime)`` by rejection sampling on the bits just above ``prime``."""
    count = int(np.prod(shape))
    mask = (1 << (prime - 1).bit_length()) - 1
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        draw = np.frombuffer(randbytes(8 * todo.size), dtype="<u8") & np.uint64(mask)
        keep = draw < prime
        out[todo[keep]] = draw[keep].astype(np.int64)
        todo = todo[~keep]
    return out.reshape(shape)


@lru_cache(maxsize=256)
def _vandermonde(xs: tuple[int, ...], degree_plus_one: int, prime: int) -> np.ndarray:
    x = np.asarray(xs, dtype=np.int64)
    v = np.ones((len(xs), degree_plus_one), dtype=np.int64)
    for j in range(1, degree_plus_one):  # one column per power: a loop over the degree, not the data
        v[:, j] = v[:, j - 1] * x % prime
    return v


def evaluate(coefficients: np.ndarray, xs: Sequence[int], prime: int = PRIME) -> np.ndarray:
    """``f(x)`` for every ``x``: ``coefficients`` ``(t, c)`` (constant term first) -> ``(len(xs), c)``."""
    t = coefficients.shape[0]
    if t > MAX_THRESHOLD:
        raise ValueError(f"threshold {t} exceeds {MAX_THRESHOLD}, past which int64 products overflow")
    return _vandermonde(tuple(int(x) for x in xs), t, prime) @ coefficients % prime


def split_secret(secret: bytes) -> np.ndarray:
    """A 32-byte secret as its 15 chunks of 18 bits (little-endian)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    padded = secret + bytes((CHUNKS * CHUNK_BITS + 7) // 8 - SECRET_BYTES)
    return unpack_bits(padded, CHUNK_BITS, CHUNKS).astype(np.int64)


def join_secret(chunks: np.ndarray) -> bytes:
    """Inverse of :func:`split_secret`; raises when the chunks cannot come from a 32-byte secret."""
    chunks = np.asarray(chunks, dtype=np.int64)
    if chunks.min() < 0 or chunks.max() >= 1 << CHUNK_BITS:
        raise InconsistentShares("the reconstructed chunks exceed 18 bits: the shares are corrupt")
    raw = pack_bits(chunks.astype(np.uint64), CHUNK_BITS)
    if any(raw[SECRET_BYTES:]):
        raise InconsistentShares("the reconstructed secret is longer than 32 bytes: the shares are corrupt")
    return raw[:SECRET_BYTES]


def share(secret: bytes, threshold: int, xs: Sequence[int], randbytes: RandBytes) -> np.ndarray:
    """Shares of a 32-byte secret for the holders at ``xs`` (``threshold`` of them rebuild it):
    an ``(len(xs), CHUNKS)`` int64 array."""
    check_points(xs)
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in 1..{len(xs)} (the number of holders), got {threshold}")
    coefficients = np.vstack([split_secret(secret)[None, :],
                              uniform_field((threshold - 1, CHUNKS), randbytes)])
    return evaluate(coefficients, xs)


def check_points(xs: Sequence[int], prime: int = PRIME) -> None:
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise ValueError(f"x-coordinates must be distinct and in 1..{prime - 1}, got {list(xs)[:8]}...")


def _product(values: np.ndarray, prime: int) -> np.ndarray:
    """Product modulo ``prime`` along the last axis, by halving (log2 steps, no overflow)."""
    while values.shape[-1] > 1:
        if values.shape[-1] % 2:
            values = np.concatenate([values, np.ones((*values.shape[:-1], 1), dtype=np.int64)], axis=-1)
        values = values[..., 0::2] * values[..., 1::2] % prime
    return values[..., 0]


def _inverse(values: np.ndarray, prime: int) -> np.ndarray:
    """Elementwise inverse modulo ``prime`` (Fermat: ``v^(p-2)``), by square-and-multiply."""
    result = np.ones_like(values)
    base, exponent = values % prime, prime - 2
    while exponent:
        if exponent & 1:
            result = result * base % prime
        base = base * base % prime
        exponent >>= 1
    return result


@lru_cache(maxsize=512)
def _weights_matrix(base: tuple[int, ...], targets: tuple[int, ...], prime: int) -> np.ndarray:
    """``W`` with ``f(targets) = W @ f(base)`` for every polynomial of degree < len(base)::

        W[a, i] = prod_{j != i} (a - x_j) / (x_i - x_j) = P(a) / (a - x_i) / D_i,
        P(a) = prod_j (a - x_j),   D_i = prod_{j != i} (x_i - x_j)
    """
    x = np.asarray(base, dtype=np.int64)
    at = np.asarray(targets, dtype=np.int64)
    if np.isin(at, x).any():
        raise ValueError("interpolation targets must differ from the known points")
    diff = (x[:, None] - x[None, :]) % prime
    np.fill_diagonal(diff, 1)
    gap = (at[:, None] - x[None, :]) % prime                       # (targets, m)
    return _product(gap, prime)[:, None] * _inverse(gap, prime) % prime \
        * _inverse(_product(diff, prime), prime)[None, :] % prime


def lagrange_weights(xs: Sequence[int], at: int, prime: int = PRIME) -> np.ndarray:
    """``w_i`` with ``f(at) = sum_i w_i f(x_i)`` for every polynomial of degree < len(xs)."""
    return _weights_matrix(tuple(int(x) for x in xs), (int(at),), prime)[0]


def interpolate(xs: Sequence[int], ys: np.ndarray, targets: Sequence[int], prime: int = PRIME) -> np.ndarray:
    """Values at ``targets`` of the polynomial through ``(xs, ys)``: ``ys`` ``(m, ...)`` gives
    ``(len(targets), ...)``."""
    w = _weights_matrix(tuple(int(x) for x in xs), tuple(int(t) for t in targets), prime)
    flat = ys.reshape(len(xs), -1)
    return (w @ flat % prime).reshape(len(targets), *ys.shape[1:])


def reconstruct(xs: Sequence[int], ys: np.ndarray, threshold: int, prime: int = PRIME) -> np.ndarray:
    """The secrets (field elements at 0) from ``m >= threshold`` shares ``ys`` ``(m, ...)``.

    Interpolates through the first ``threshold`` shares and checks that the others lie on the
    same polynomials; raises :class:`InconsistentShares` if they do not.
    """
    check_points(xs, prime)
    m = len(xs)
    if m < threshold:
        raise ValueError(f"{m} shares cannot rebuild a secret shared with threshold {threshold}")
    base, rest = list(xs[:threshold]), list(xs[threshold:])
    if rest:
        predicted = interpolate(base, ys[:threshold], rest, prime)
        off = np.flatnonzero((predicted != ys[threshold:]).reshape(len(rest), -1).any(axis=1))
        if off.size:
            raise InconsistentShares(f"{off.size} of {m} shares are off the polynomial through the "
                                     f"first {threshold}")
    return interpolate(base, ys[:threshold], [0], prime)[0]


def encode_shares(values: np.ndarray) -> list[bytes]:
    """Each row of ``values`` ``(count, CHUNKS)`` as one :data:`SHARE_BYTES`-byte share, vectorised."""
    values = np.asarray(values, dtype=np.int64).reshape(-1, CHUNKS)
    bits = (values[:, :, None] >> np.arange(FIELD_BITS)) & 1                    # (count, 15, 19)
    padded = np.zeros((len(values), SHARE_BYTES * 8), dtype=np.uint8)
    padded[:, : CHUNKS * FIELD_BITS] = bits.reshape(len(values), CHUNKS * FIELD_BITS)
    raw = np.packbits(padded, axis=1, bitorder="little")
    return [row.tobytes() for row in raw]


def decode_shares(data: list[bytes]) -> np.ndarray:
    """Inverse of :func:`encode_shares`: ``(count, CHUNKS)``; raises for a wrong length or a
    value that is not a field element."""
    if any(len(d) != SHARE_BYTES for d in data):
        raise ValueError(f"a share is {SHARE_BYTES} bytes")
    raw = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(len(data), SHARE_BYTES)
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : CHUNKS * FIELD_BITS]
    values = (bits.reshape(len(data), CHUNKS, FIELD_BITS).astype(np.int64) << np.arange(FIELD_BITS)).sum(-1)
    if values.size and values.max() >= PRIME:
        raise ValueError(f"share value {values.max()} is not an element of GF({PRIME})")
    return values


def encode_share(values: np.ndarray) -> bytes:
    """One holder's share (``CHUNKS`` field elements) as :data:`SHARE_BYTES` bytes."""
    return encode_shares(values)[0]


def decode_share(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_share`; raises if a value is not a field element."""
    return decode_shares([data])[0]
