"""Who masks with whom: the complete graph of SecAgg, or the random Harary graph of SecAgg+
(Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS, Sections 3-4).

In SecAgg every client masks with every other client and Shamir-shares its secrets with all of
them. In SecAgg+ the clients are placed on a ring in a random order and each is joined to the
``k/2`` nearest on either side (the Harary graph ``H(k, n)`` with randomly permuted vertices);
a client masks only with its ``k`` neighbours and shares its secrets only with them, with a
threshold ``t`` of its own neighbourhood. With ``k = O(log n)`` this cuts each client's work
from ``O(n + d)`` key agreements and ``O(n d)`` mask expansions to ``O(log n + d)`` and
``O(d log n)``.

The permutation is derived from the session digest (:func:`harary_neighbours`), so every client
computes its own neighbourhood and the server cannot give two clients different graphs. Whoever
fixes the session id must not be able to steer it (the engine derives it from an unbiased
per-round seed).

:func:`harary_parameters` chooses ``k`` and ``t`` for ``n`` clients of which at most a fraction
``corrupt`` collude with the server and a fraction ``dropout`` drop out, following Bell et al.'s
analysis (Section 4, Theorems 4.8-4.9): the smallest even ``k`` such that

1. the honest survivors stay connected: removing the bad clients (corrupt or dropped) cuts the
   ring-like graph only if two runs of ``k/2`` consecutive ring positions are all bad, so by a
   union bound over the ``n (n - k - 1) / 2`` pairs of runs,
   ``P(disconnected) <= n (n - k - 1) / 2 * (B)_k / (n)_k`` (falling factorials, ``B`` bad
   clients) must stay below ``2^-(sigma + 1)``;
2. a threshold ``t`` exists with ``P(a neighbourhood holds >= t corrupt clients) <= 2^-(sigma+1) / n``
   (privacy: the corrupt neighbours of a client cannot rebuild its secrets) and
   ``P(fewer than t neighbours survive) <= 2^-eta / n`` (correctness), both hypergeometric. In
   the active model ``t`` must also exceed ``(k + c) / 2``, ``c`` the corrupt-neighbour bound,
   so the server cannot collect ``t`` shares of the same secret twice under two survivor sets.

Defaults ``sigma = 40`` and ``eta = 20`` (statistical security ``2^-40``, failure ``2^-20``).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy.stats import hypergeom


def harary_neighbours(clients: tuple[int, ...], degree: int, digest: bytes) -> dict[int, tuple[int, ...]]:
    """Each client's ``degree`` neighbours in ``H(degree, n)`` over a ring order derived from ``digest``."""
    n = len(clients)
    if degree % 2 or not 2 <= degree <= n - 1:
        raise ValueError(f"a Harary graph of {n} clients needs an even degree in 2..{n - 1}, got {degree}")
    seed = int.from_bytes(hashlib.sha256(b"phalanx/secagg/v1/harary" + digest).digest()[:8], "little")
    ring = np.asarray(clients)[np.random.Generator(np.random.PCG64(seed)).permutation(n)]
    offsets = np.concatenate([np.arange(1, degree // 2 + 1), -np.arange(1, degree // 2 + 1)])
    around = ring[(np.arange(n)[:, None] + offsets[None, :]) % n]
    return {int(c): tuple(sorted(int(v) for v in row)) for c, row in zip(ring, around)}


def complete_neighbours(clients: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """SecAgg: everyone is everyone's neighbour."""
    return {c: tuple(v for v in clients if v != c) for c in clients}


def harary_parameters(n: int, *, corrupt: float = 0.05, dropout: float = 0.1, active: bool = True,
                      sigma: float = 40.0, eta: float = 20.0) -> tuple[int, int] | None:
    """``(degree, threshold)`` for SecAgg+ over ``n`` clients, or ``None`` if no sparse graph below
    the complete one meets the bounds (small ``n``: use SecAgg)."""
    if not (0 <= corrupt < 1 and 0 <= dropout < 1):
        raise ValueError(f"corrupt and dropout must be fractions in [0, 1), got {corrupt}, {dropout}")
    n_corrupt = math.floor(corrupt * n + 1e-9)
    n_alive = math.ceil((1 - dropout) * n - 1e-9)
    n_bad = n_corrupt + (n - n_alive)
    for k in range(2, n - 1, 2):
        if n_bad >= k:
            log_pairs = math.log(n) + math.log(max(n - k - 1, 1)) - math.log(2)
            log_runs_bad = (math.lgamma(n_bad + 1) - math.lgamma(n_bad - k + 1)
                            - math.lgamma(n + 1) + math.lgamma(n - k + 1))
            if log_pairs + log_runs_bad >= -(sigma + 1) * math.log(2):
                continue
        # smallest t with P(corrupt neighbours >= t) small; largest t with P(alive neighbours < t) small
        corrupt_tail = hypergeom(n, n_corrupt, k).sf(np.arange(k + 1) - 1)   # P(X >= t), t = 0..k
        t_low = int(np.argmax(corrupt_tail <= 2.0 ** -(sigma + 1) / n))
        alive_below = hypergeom(n, n_alive, k).cdf(np.arange(k + 1) - 1)      # P(Y < t)
        t_high = int(np.flatnonzero(alive_below <= 2.0 ** -eta / n).max())
        if active:
            c = max(t_low - 1, 0)
            t_low = max(t_low, (k + 1 + c) // 2 + 1)
        t = max(t_low, 2)
        if t <= t_high:
            return k, t
    return None
