"""Vectors in ``Z_{2^k}``: fixed-point encoding of real inputs, and their compact byte form.

**Arithmetic.** Every input, mask and masked input is a vector over ``Z_{2^k}`` (``k = bits``,
1 to 64, default 32), as in Bonawitz et al. 2017 (Section 3, inputs in ``Z_R``; we take
``R = 2^k`` so that the wrap-around of machine integers does the reduction). In memory a vector
is ``uint32`` for ``k <= 32`` and ``uint64`` above (:func:`vector_dtype`); additions wrap modulo
``2^32`` or ``2^64``, which ``2^k`` divides, and :func:`reduce` takes the result modulo ``2^k``.

**Fixed point** (:class:`FixedPoint`). A real coordinate ``x`` is clipped to ``[-clip, clip]``,
scaled by ``2^f`` (``f = frac_bits``), rounded to the integer ``q``, ``|q| <= Q = round(clip
2^f)``, and stored in two's complement modulo ``2^k``. The sum of ``n`` inputs decodes exactly
(to within the rounding of each input, ``2^-(f+1)`` per coordinate and input) as long as it
cannot wrap::

    n * Q <= 2^(k-1) - 1          (the no-wrap bound; FixedPoint.max_clients = floor((2^(k-1)-1) / Q))

The *plaintext bit width* is ``b = ceil(log2(2Q + 1))`` bits per signed input;
:meth:`FixedPoint.for_sum` picks the largest ``f`` that keeps ``n`` inputs within the bound, so
``b = k - ceil(log2 n)`` or one less (k = 32, n = 256: b = 24 bits).

**Byte form** (:func:`pack_bits`, :func:`unpack_bits`). A vector of ``d`` elements of ``k`` bits
travels as ``ceil(d k / 8)`` bytes, bit ``j`` of element ``i`` at bit ``i k + j`` (little-endian
bit order), so a 26-bit vector costs 26 bits per element on the wire, as the paper counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def vector_dtype(bits: int) -> np.dtype:
    """``uint32`` for ``bits <= 32``, else ``uint64``; raises for ``bits`` outside 1..64."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    return np.dtype(np.uint32 if bits <= 32 else np.uint64)


def reduce(vector: np.ndarray, bits: int) -> np.ndarray:
    """``vector`` modulo ``2^bits``, in place when possible; returns it."""
    if bits not in (32, 64):
        np.bitwise_and(vector, vector.dtype.type((1 << bits) - 1), out=vector)
    return vector


def as_ring_elements(values: np.ndarray | torch.Tensor, bits: int) -> np.ndarray:
    """Integer inputs as elements of ``Z_{2^bits}``: every value must already lie in ``[0, 2^bits)``."""
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"integer inputs expected, got dtype {arr.dtype} (encode reals with FixedPoint)")
    if arr.size and (arr.min() < 0 or int(arr.max()) >= 1 << bits):
        raise ValueError(f"inputs must lie in [0, 2^{bits}); got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(vector_dtype(bits))


def pack_bits(vector: np.ndarray, bits: int) -> bytes:
    """The low ``bits`` bits of each element, concatenated little-endian: ``ceil(d bits / 8)`` bytes."""
    vector_dtype(bits)
    if bits in (8, 16, 32, 64):   # whole machine words: one cast (values above 2^bits are cut)
        return np.asarray(vector).astype(f"<u{bits // 8}").tobytes()
    flat = np.ascontiguousarray(vector, dtype="<u8").reshape(-1)
    if bits % 8 == 0:
        return flat.view(np.uint8).reshape(-1, 8)[:, : bits // 8].tobytes()
    bitplanes = np.unpackbits(flat.view(np.uint8), bitorder="little").reshape(-1, 64)[:, :bits]
    return np.packbits(bitplanes, bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` elements of ``bits`` bits, as :func:`vector_dtype`."""
    dtype = vector_dtype(bits)
    expected = (count * bits + 7) // 8
    if len(data) != expected:
        raise ValueError(f"a vector of {count} elements of {bits} bits takes {expected} bytes, "
                         f"got {len(data)}")
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(dtype)
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits % 8 == 0:
        wide = np.zeros((count, 8), dtype=np.uint8)
        wide[:, : bits // 8] = raw.reshape(count, bits // 8)
    else:
        planes = np.zeros((count, 64), dtype=np.uint8)
        planes[:, :bits] = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
        wide = np.packbits(planes, bitorder="little").reshape(count, 8)
    return wide.reshape(-1).view("<u8").astype(dtype)


@dataclass(frozen=True)
class FixedPoint:
    """Real coordinates in ``[-clip, clip]`` as ``round(x 2^frac_bits)`` in two's complement mod ``2^bits``.

    ``FixedPoint.for_sum(n, clip)`` chooses ``frac_bits`` so that the sum of ``n`` inputs cannot
    wrap; :meth:`check_clients` refuses a larger ``n``. ``encode`` clips (it never wraps a large
    input into a wrong one); ``decode`` reads a sum back as real numbers.
    """

    bits: int
    frac_bits: int
    clip: float

    def __post_init__(self):
        vector_dtype(self.bits)
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.quantum_bound() > (1 << (self.bits - 1)) - 1:
            raise ValueError(f"clip {self.clip} at {self.frac_bits} fractional bits does not fit one "
                             f"signed {self.bits}-bit input")

    @classmethod
    def for_sum(cls, clients: int, clip: float, bits: int = 32) -> FixedPoint:
        """The most fractional bits with which ``clients`` inputs of ``|x| <= clip`` sum without wrapping."""
        if clients < 1:
            raise ValueError(f"clients must be >= 1, got {clients}")
        limit = ((1 << (bits - 1)) - 1) // clients   # the largest Q that n inputs may each reach
        if limit < 1:
            raise ValueError(f"{clients} inputs cannot be summed in {bits} bits without wrapping")
        frac = math.floor(math.log2(limit / clip))
        while round(clip * 2.0 ** frac) > limit:     # rounding up of clip * 2^f may overshoot
            frac -= 1
        return cls(bits=bits, frac_bits=frac, clip=clip)

    def quantum_bound(self) -> int:
        """``Q``: the largest ``|q|`` an encoded coordinate can take."""
        return round(self.clip * 2.0 ** self.frac_bits)

    @property
    def input_bits(self) -> int:
        """The plaintext bit width ``b = ceil(log2(2Q + 1))`` of one signed input."""
        return (2 * self.quantum_bound()).bit_length()

    @property
    def max_clients(self) -> int:
        """The most inputs whose sum cannot wrap: ``floor((2^(k-1) - 1) / Q)``."""
        return ((1 << (self.bits - 1)) - 1) // max(self.quantum_bound(), 1)

    def check_clients(self, clients: int) -> None:
        if clients > self.max_clients:
            raise ValueError(f"the sum of {clients} inputs could wrap: {self.bits}-bit fixed point with "
                             f"clip {self.clip} and {self.frac_bits} fractional bits sums at most "
                             f"{self.max_clients} inputs (use FixedPoint.for_sum)")

    def encode(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Clip, scale, round and reduce: an array of the same shape over ``Z_{2^bits}``."""
        arr = x.detach().cpu().to(torch.float64).numpy() if isinstance(x, torch.Tensor) \
            else np.asarray(x, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("cannot encode non-finite values")
        q_max = self.quantum_bound()
        q = np.clip(np.rint(arr * 2.0 ** self.frac_bits), -q_max, q_max).astype(np.int64)
        return reduce(q.astype(np.uint64), self.bits).astype(vector_dtype(self.bits))

    def decode(self, s: np.ndarray) -> np.ndarray:
        """A sum over ``Z_{2^bits}`` read as signed fixed point: float64."""
        u = np.asarray(s).astype(np.uint64)
        if self.bits == 64:
            signed = u.view(np.int64)
        else:
            signed = u.astype(np.int64) - (u >= (1 << (self.bits - 1))).astype(np.int64) * (1 << self.bits)
        return signed.astype(np.float64) / 2.0 ** self.frac_bits
