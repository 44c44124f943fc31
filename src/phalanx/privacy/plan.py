"""A run's privacy plan: which mechanism protects whom, its noise per node, and the spend so far.

The engine asks the plan four things each round: which honest nodes may still take part
(:meth:`PrivacyPlan.within_budget`), how to train (:meth:`PrivacyPlan.dpsgd`), how much noise
a client-level mechanism adds (:meth:`PrivacyPlan.noise_std`), and it tells the plan who took
part (:meth:`PrivacyPlan.record`), so that every node's epsilon composes exactly the steps its
data went through (:class:`~phalanx.privacy.accounting.PrivacyLedger`).

Mechanisms:

- ``dp_sgd``: sample-level DP inside local training (:mod:`phalanx.privacy.dpsgd`); node ``i``
  composes ``epochs * ceil(N_i / B)`` steps per round at its own Poisson rate ``q_i = B / N_i``;
- ``local`` and ``central``: client-level DP-FedAvg (:mod:`phalanx.privacy.client`); a node
  composes one Gaussian step per round it took part in, at rate 1;
- ``distributed``: client-level DP under secure aggregation (:mod:`phalanx.privacy.skellam`): a
  node composes one Skellam step per round, with the noise its bucket's sum actually carried.

**Noise from a target epsilon.** Given ``target_epsilon`` rather than a noise multiplier, each
node's multiplier is the smallest whose epsilon after *every* round stays at the target
(calibrated on integer Renyi orders, which only errs on the side of more noise): a node that
sits some rounds out spends less. A node with an empty shard trains on nothing and spends
nothing.

**Budget.** With ``budget`` set, an honest node whose next round would take its epsilon past
the budget stops taking part; when every honest node has stopped, training stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from phalanx.privacy.accounting import (INTEGER_ORDERS, Accountant, Adjacency, PrivacyLedger,
                                        noise_multiplier_for, sensitivity_factor)
from phalanx.privacy.client import AdaptiveClipping, update_noise_multiplier
from phalanx.privacy.dpsgd import DPSGD, sample_rates, steps_per_epoch
from phalanx.privacy.skellam import fractional_bits, sensitivities, skellam_rdp

Mechanism = Literal["dp_sgd", "local", "central", "distributed"]


@dataclass
class PrivacyPlan:
    mechanism: Mechanism
    noise_multiplier: torch.Tensor  # (n,) the accounted noise multiplier of each node
    clip: float  # C: per sample (dp_sgd) or per update (client level); adaptive: the start
    delta: float
    accountant: Accountant = "rdp"
    adjacency: Adjacency = "zero_out"
    budget: float | None = None
    adaptive: AdaptiveClipping | None = None
    sample_rate: torch.Tensor | None = None  # (n,) dp_sgd: q_i
    steps_per_round: torch.Tensor | None = None  # (n,) dp_sgd: epochs * ceil(N_i / B)
    distributed: DistributedNoise | None = None  # distributed: the quantisation and noise
    ledger: PrivacyLedger = field(init=False)

    def __post_init__(self) -> None:
        orders = INTEGER_ORDERS if self.mechanism == "distributed" else None
        if self.mechanism == "distributed" and self.accountant != "rdp":
            raise ValueError("distributed (Skellam) noise is accounted in RDP only: accountant rdp")
        self.ledger = PrivacyLedger(self.delta, self.accountant, orders)
        if self.mechanism == "dp_sgd" and (self.sample_rate is None or self.steps_per_round is None):
            raise ValueError("dp_sgd needs each node's sample rate and steps per round")
        if self.mechanism == "distributed" and self.distributed is None:
            raise ValueError("distributed noise needs its bucket size, dimension and bits")

    @classmethod
    def build(cls, mechanism: Mechanism, *, sizes: torch.Tensor, epochs: int, batch_size: int,
              rounds: int, clip: float, delta: float, noise_multiplier: float | None = None,
              target_epsilon: float | None = None, accountant: Accountant = "rdp",
              adjacency: Adjacency = "zero_out", budget: float | None = None,
              adaptive: AdaptiveClipping | None = None, bucket_size: int | None = None,
              dim: int | None = None, bits: int = 32) -> PrivacyPlan:
        """The plan for nodes with shard ``sizes``, from a noise multiplier or a target epsilon.

        ``distributed`` also needs the bucket size (the largest bucket SecAgg reveals; ``None``
        when one bucket holds every participant: then ``len(sizes)``), the model dimension and
        the ring's bits.
        """
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier and target_epsilon")
        n = len(sizes)
        sizes = sizes.cpu()
        if mechanism == "distributed":
            if dim is None:
                raise ValueError("distributed noise needs the model dimension")
            largest = (bucket_size + 1) if bucket_size is not None else n  # buckets of s or s + 1
            z = noise_multiplier
            if z is None:
                z = DistributedNoise.calibrate(float(target_epsilon), rounds, delta, clip=clip,
                                               bucket=largest, dim=dim, bits=bits,
                                               sensitivity=sensitivity_factor(adjacency))
            noise = DistributedNoise(clip, float(z), largest, dim, bits, sensitivity_factor(adjacency))
            return cls(mechanism, torch.full((n,), float(z), dtype=torch.float64), clip, delta,
                       accountant, adjacency, budget, None, distributed=noise)
        q = steps = None
        if mechanism == "dp_sgd":
            q = sample_rates(sizes, batch_size)
            steps = epochs * steps_per_epoch(sizes, batch_size)
        if noise_multiplier is not None:
            sigma = torch.full((n,), float(noise_multiplier), dtype=torch.float64)
        elif mechanism == "dp_sgd":
            sigma = torch.ones(n, dtype=torch.float64)  # an empty shard: no step, no cost
            for i in range(n):
                if int(steps[i]):
                    sigma[i] = noise_multiplier_for(float(target_epsilon), float(q[i]),
                                                    rounds * int(steps[i]), delta, accountant,
                                                    fast=True)
        else:
            sigma = torch.full((n,), noise_multiplier_for(float(target_epsilon), 1.0, rounds, delta,
                                                          accountant, fast=True), dtype=torch.float64)
        return cls(mechanism, sigma, clip, delta, accountant, adjacency, budget, adaptive, q, steps)

    # -- what one round costs ---------------------------------------------------------------
    def _cost(self, node: int) -> tuple[float, float, int]:
        sigma = float(self.noise_multiplier[node])
        if self.mechanism == "dp_sgd":
            return sigma, float(self.sample_rate[node]), int(self.steps_per_round[node])
        return sigma, 1.0, 1

    def within_budget(self, nodes: torch.Tensor) -> torch.Tensor:
        """Which of ``nodes`` can take one more round without passing the budget (distributed:
        assuming its bucket's full noise; a bucket whose attackers add none costs it more)."""
        ok = torch.ones(len(nodes), dtype=torch.bool)
        if self.budget is None:
            return ok
        for j, node in enumerate(nodes.tolist()):
            if self.mechanism == "distributed":
                key = self._define_bucket(self.distributed.bucket, self.distributed.bucket)
                ok[j] = self.ledger.epsilon_after_defined(node, key, 1) <= self.budget
                continue
            sigma, q, steps = self._cost(node)
            ok[j] = steps == 0 or self.ledger.epsilon_after(node, sigma, q, steps) <= self.budget
        return ok

    def record(self, nodes: torch.Tensor) -> None:
        """``nodes`` took part in a round: each composes that round's steps. (Distributed noise
        is recorded per bucket, by :meth:`record_bucket`, once the buckets are known.)"""
        if self.mechanism == "distributed":
            return
        for node in nodes.tolist():
            sigma, q, steps = self._cost(node)
            if steps:
                self.ledger.record([node], sigma, q, steps)

    def record_bucket(self, honest: list[int], size: int) -> None:
        """Distributed noise: ``honest`` members of a bucket of ``size`` added their shares, so
        its sum carried ``len(honest) / size`` of the full variance; each of them composes that."""
        if honest:
            self.ledger.record_defined(honest, self._define_bucket(size, len(honest)), 1)

    def _define_bucket(self, size: int, adding: int) -> tuple:
        key = ("skellam", size, adding)
        if ("defined", *key) not in self.ledger.defined:
            self.ledger.define(key, self.distributed.rdp(self.ledger.orders, adding / size))
        return key

    def epsilons(self, nodes: torch.Tensor) -> list[float]:
        return self.ledger.epsilons(nodes.tolist())

    # -- the mechanisms ---------------------------------------------------------------------
    def dpsgd(self) -> DPSGD | None:
        if self.mechanism != "dp_sgd":
            return None
        return DPSGD(self.clip, self.noise_multiplier.to(torch.float32))

    def noise_std(self, participants: int) -> float:
        """Client level: the Gaussian noise's standard deviation on the sum of clipped updates.

        ``sigma * sensitivity``, with the sensitivity ``C`` or ``2C`` (:func:`sensitivity_factor`);
        with adaptive clipping, the updates' share ``z_u`` of the accounted ``sigma``.
        """
        z = float(self.noise_multiplier.max())
        if self.adaptive is not None:
            z = update_noise_multiplier(z, self.adaptive.count_std(participants))
        return z * sensitivity_factor(self.adjacency) * self.clip

    def adapt_clip(self, norms: torch.Tensor, generator: torch.Generator) -> None:
        """Adaptive clipping: the next round's clip norm from this round's update norms."""
        if self.adaptive is not None and len(norms):
            self.clip = self.adaptive.next_clip(self.clip, norms, generator)
            if not math.isfinite(self.clip) or self.clip <= 0:
                raise ValueError(f"adaptive clipping diverged (clip norm {self.clip})")


@dataclass(frozen=True)
class DistributedNoise:
    """Skellam noise under bucketed SecAgg: clip ``C``, noise multiplier ``z`` (the revealed sum's
    noise has standard deviation ``z S``, ``S = C`` or ``2C`` by adjacency), the largest bucket,
    the model dimension and the ring's bits; from these the quantisation ``f`` and the noise."""

    clip: float
    noise_multiplier: float
    bucket: int
    dim: int
    bits: int = 32
    sensitivity: float = 1.0  # times the clip: 1 (zero-out) or 2 (replace-one)

    @property
    def frac_bits(self) -> int:
        return fractional_bits(self.clip, self.bucket, self.noise_multiplier * self.sensitivity, self.bits)

    @property
    def variance(self) -> float:
        """The full noise variance of a revealed sum, in integer units."""
        return (self.noise_multiplier * self.sensitivity * self.clip * 2.0**self.frac_bits) ** 2

    def rdp(self, orders, share: float = 1.0):
        """RDP per round of a node whose bucket's sum carried ``share`` of the full variance."""
        l1, l2 = sensitivities(self.sensitivity * self.clip, self.frac_bits, self.dim)
        return skellam_rdp(orders, l1, l2, self.variance * share)

    @classmethod
    def calibrate(cls, target_epsilon: float, rounds: int, delta: float, **kw) -> float:
        """The smallest noise multiplier whose epsilon after ``rounds`` rounds is at most the
        target (bisection on the RDP bound, converted by the library; 1e-4 relative)."""
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        def eps(z: float) -> float:
            curve = cls(noise_multiplier=z, **kw).rdp(INTEGER_ORDERS)
            return float(compute_epsilon(INTEGER_ORDERS, rounds * curve, delta)[0])

        lo, hi = 1e-3, 1.0
        while eps(hi) > target_epsilon:
            lo, hi = hi, hi * 2
            if hi > 1e6:
                raise ValueError(f"no noise multiplier reaches epsilon {target_epsilon}")
        while hi / lo > 1 + 1e-4:
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if eps(mid) > target_epsilon else (lo, mid)
        return hi
