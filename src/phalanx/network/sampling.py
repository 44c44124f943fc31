"""Peer sampling that an attacker with many addresses cannot easily take over.

Three samplers over a fixed population of peers, each with IPv4 addresses (uint32; the simulator
draws them in 127.0.0.0/8 so distinct prefixes exist on one machine). All keep a view of ``v``
peer indices and update it from what an exchange brought (``candidates``), vectorised over the
view with numpy:

- :class:`Basalt` (Auvolat, Bromberg, Frey, Mvondo and Taïani, "Basalt: A Rock-Solid
  Byzantine-Tolerant Peer Sampling for Very Large Decentralized Networks", 2023): each slot has
  a seed and keeps the candidate of smallest rank under it (section 3, "stubborn chaotic
  search"); the rank is hierarchical over address prefixes (section 4.2, "hierarchical
  ranking"): candidates are compared by the hash of their /8, then /16, then /24 prefix, then
  the whole address, so the addresses an attacker holds in one prefix compete for the slots of
  one prefix; every ``reset_every`` rounds ``resets`` slots draw new seeds and restart
  (section 3, "seed reset"), so a slot that was won once is not won for ever.
- :class:`Brahms` (Bortnikov, Gurevich, Keidar, Kliot and Shraer, "Brahms: Byzantine Resilient
  Random Membership Sampling", 2009): the view mixes ``alpha`` pushed, ``beta`` pulled and
  ``gamma`` sampled ids; the samplers are min-wise (one seeded hash per sampler, the whole
  address, no prefix hierarchy); a round that received more pushes than ``alpha * v`` is
  discarded (push flooding, section 4).
- :class:`PushPull`: the naive baseline; the next view is drawn uniformly from the candidates.

A :class:`~.scoring.PeerScores` may filter candidates (graylisted peers are dropped).
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fast, well-mixed 64-bit hash of uint64 values."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hierarchical_rank(seeds: np.ndarray, addresses: np.ndarray) -> np.ndarray:
    """(slots, candidates) ranks: prefixes /8, /16, /24, /32 hashed under each slot's seed, combined
    lexicographically (Basalt section 4.2) into one sortable key per (slot, candidate)."""
    a = addresses.astype(np.uint64)[None, :]
    s = seeds.astype(np.uint64)[:, None]
    key = np.zeros((len(seeds), len(addresses)), dtype=np.float64)
    for level, bits in enumerate((8, 16, 24, 32)):
        h = mix(s ^ mix((a >> np.uint64(32 - bits)) + np.uint64(level << 40)))
        key = key * 65536.0 + (h >> np.uint64(48)).astype(np.float64)  # 16 bits per level
    return key


def flat_rank(seeds: np.ndarray, addresses: np.ndarray) -> np.ndarray:
    """Min-wise rank on the whole address only (Brahms' samplers)."""
    return mix(seeds.astype(np.uint64)[:, None] ^ mix(addresses.astype(np.uint64)[None, :])).astype(np.float64)


class Basalt:
    def __init__(self, addresses: np.ndarray, v: int, rng: np.random.Generator, *, resets: int = 1,
                 reset_every: int = 1, scores=None):
        self.addresses, self.v, self.rng, self.scores = addresses, v, rng, scores
        self.resets, self.reset_every = resets, reset_every
        self.seeds = rng.integers(0, 2**63, v, dtype=np.uint64)
        self.view = np.full(v, -1)
        self.round, self.next_reset = 0, 0

    def _rank(self, seeds, cands):
        return hierarchical_rank(seeds, self.addresses[cands])

    def update(self, candidates: np.ndarray, pushed: np.ndarray | None = None) -> np.ndarray:
        cands = np.unique(np.concatenate([candidates, (pushed if pushed is not None else [])]).astype(int))
        if self.scores is not None:
            cands = cands[self.scores.acceptable()[cands]]
        self.round += 1
        if self.round % self.reset_every == 0:  # seed resets, round-robin over the slots
            slots = (self.next_reset + np.arange(self.resets)) % self.v
            self.seeds[slots] = self.rng.integers(0, 2**63, len(slots), dtype=np.uint64)
            self.view[slots] = -1
            self.next_reset = int(slots[-1] + 1) % self.v
        if len(cands) == 0:
            return self.view
        holders = self.view >= 0
        pool = np.unique(np.concatenate([cands, self.view[holders]]))
        ranks = self._rank(self.seeds, pool)
        self.view = pool[ranks.argmin(1)]
        return self.view


class Brahms:
    def __init__(self, addresses: np.ndarray, v: int, rng: np.random.Generator, *, alpha: float = 0.45,
                 beta: float = 0.45, scores=None):
        self.addresses, self.v, self.rng, self.scores = addresses, v, rng, scores
        self.alpha, self.beta = alpha, beta
        self.seeds = rng.integers(0, 2**63, v, dtype=np.uint64)
        self.samples = np.full(v, -1)
        self.view = np.full(v, -1)

    def update(self, candidates: np.ndarray, pushed: np.ndarray | None = None) -> np.ndarray:
        pushed = np.asarray(pushed if pushed is not None else [], dtype=int)
        pulled = np.asarray(candidates, dtype=int)
        if self.scores is not None:
            ok = self.scores.acceptable()
            pushed, pulled = pushed[ok[pushed]], pulled[ok[pulled]]
        every = np.unique(np.concatenate([pushed, pulled, self.samples[self.samples >= 0]]))
        if len(every):
            self.samples = every[flat_rank(self.seeds, self.addresses[every]).argmin(1)]
        if len(pushed) > self.alpha * self.v * 4 or len(pushed) == 0 or len(pulled) == 0:
            return self.view  # push flooding (or nothing to mix): keep the view
        a, b = int(self.alpha * self.v), int(self.beta * self.v)
        g = self.v - a - b
        pick = lambda xs, k: self.rng.choice(xs, k, replace=len(xs) < k)
        self.view = np.concatenate([pick(pushed, a), pick(pulled, b), pick(self.samples, g)])
        return self.view


class PushPull:
    def __init__(self, addresses: np.ndarray, v: int, rng: np.random.Generator, scores=None):
        self.addresses, self.v, self.rng, self.scores = addresses, v, rng, scores
        self.view = np.full(v, -1)

    def update(self, candidates: np.ndarray, pushed: np.ndarray | None = None) -> np.ndarray:
        pool = np.concatenate([candidates, (pushed if pushed is not None else []), self.view[self.view >= 0]])
        pool = pool.astype(int)
        if len(pool):
            self.view = self.rng.choice(pool, self.v, replace=len(pool) < self.v)
        return self.view


SAMPLERS = {"basalt": Basalt, "brahms": Brahms, "push_pull": PushPull}
