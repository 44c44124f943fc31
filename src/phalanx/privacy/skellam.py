"""Distributed DP under secure aggregation: the distributed Skellam mechanism.

Central noise needs a server that sees the sum before it is noised; under secure aggregation
nobody does. So each node adds its own share of *integer* noise to its quantised update before
masking, and the sum SecAgg reveals carries the whole noise (Agarwal, Kairouz, Liu 2021, "The
Skellam mechanism for differentially private federated learning", NeurIPS). Skellam noise,
the difference of two independent Poisson draws, is closed under sums: ``s`` shares of variance
``mu / s`` add up to exactly a Skellam of variance ``mu``, so the revealed sum is the
single-party mechanism, with no approximation (unlike sums of discrete Gaussians, Kairouz, Liu,
Steinke 2021, which need an extra tau term).

**Privacy** (Agarwal et al. 2021, Theorem 3.5, in the integer domain): for a sum whose one
node's change has L2 norm at most ``D2`` and L1 norm at most ``D1``, Skellam noise of variance
``mu`` per coordinate gives Renyi DP at order ``alpha``

    eps(alpha) = alpha D2^2 / (2 mu) + min( ((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu) ).

Rounds compose by adding RDP order by order; the conversion to (epsilon, delta) is
``dp-accounting``'s (:class:`~phalanx.privacy.accounting.PrivacyLedger`, whose integer orders
this formula is evaluated on: the paper states it for integer ``alpha``).

**Quantisation.** An update clipped to L2 norm ``C`` is scaled by ``2^f`` and rounded to the
nearest integer, which moves it by at most ``sqrt(d) / 2`` in L2, so ``D2 = C 2^f + sqrt(d) / 2``
and, its coordinates being integers, ``D1 <= min(sqrt(d) D2, D2^2)``. The ring ``Z_{2^k}`` must
hold the bucket sum without wrapping: ``s`` coordinates of at most ``C 2^f`` plus six standard
deviations of the noise, ``2^f C (s + 6 z) <= 2^(k-1) - 1`` with ``z`` the noise multiplier
(the total noise's standard deviation over ``C``); :func:`fractional_bits` takes the largest
such ``f``.

**Who adds the noise.** The shares add up to ``mu`` only if every member of a bucket adds its
own. A malicious member may not; the engine accounts each honest node with the noise its bucket
really carried (``mu`` times the share of its bucket that is honest), so the reported epsilon
is the truth of the run. A deployment that must guarantee epsilon against ``t`` silent members
per bucket of ``s`` scales each share up by ``s / (s - t)``.
"""

from __future__ import annotations

import math

import numpy as np


# The noise's standard deviation in integer units is kept at or below this: numpy's Poisson
# sampler loses accuracy for very large means (measured: Skellam variance 1.0008 times the target
# at variance 1e10, 0.988 at 1e14, 1.55 at 3.6e16). 2^22 is still far above the rounding grain.
NOISE_STD_CAP = float(1 << 22)


def fractional_bits(clip: float, bucket: int, noise_multiplier: float, bits: int) -> int:
    """The largest ``f`` with ``2^f clip (bucket + 6 z) <= 2^(bits-1) - 1`` (no wrap-around) and
    the noise's standard deviation ``z clip 2^f`` at most :data:`NOISE_STD_CAP`."""
    room = ((1 << (bits - 1)) - 1) / (clip * (bucket + 6 * noise_multiplier))
    if room < 1:
        raise ValueError(f"{bits}-bit sums cannot hold {bucket} updates of norm {clip} with noise "
                         f"multiplier {noise_multiplier}: use more bits")
    cap = NOISE_STD_CAP / (clip * noise_multiplier) if noise_multiplier > 0 else room
    return int(math.floor(math.log2(min(room, cap))))


def sensitivities(clip: float, frac_bits: int, dim: int) -> tuple[float, float]:
    """``(D1, D2)`` of one node's quantised, clipped update in integer units."""
    l2 = clip * 2.0**frac_bits + math.sqrt(dim) / 2
    return min(math.sqrt(dim) * l2, l2 * l2), l2


def skellam_rdp(orders, l1: float, l2: float, variance: float) -> np.ndarray:
    """Agarwal et al. 2021, Theorem 3.5: the RDP of Skellam noise of ``variance`` per coordinate."""
    a = np.asarray(orders, dtype=np.float64)
    if not (variance > 0):
        raise ValueError(f"Skellam noise needs a positive variance (got {variance})")
    first = a * l2**2 / (2 * variance)
    second = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance))
    return first + second


def skellam_noise(shape, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Integer noise of ``variance`` per coordinate: ``Poisson(v/2) - Poisson(v/2)``, int64
    (accurate up to a variance of about 1e13: see :data:`NOISE_STD_CAP`)."""
    lam = variance / 2
    return rng.poisson(lam, shape).astype(np.int64) - rng.poisson(lam, shape).astype(np.int64)
