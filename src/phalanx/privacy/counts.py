"""Sample counts fit for a public log: each node's count released once with Gaussian noise.

A star weights each update by the sample count its sender claims (FedAvg: McMahan et al. 2017,
Algorithm 1). On a public log the weight each update got is written beside it, so the replay
can recompute the aggregate; written exactly, it publishes every organisation's data size, and
through a capped weight its size up to the cap. Phalanx therefore logs one of two weights:

- ``uniform``: a public constant (every accepted update weighs 1), which says nothing;
- ``noised``: the node's count plus Gaussian noise, released **once** and reused every round
  (reuse is post-processing, so it costs nothing more; Dwork and Roth 2014, "The Algorithmic
  Foundations of Differential Privacy", Proposition 2.1), then capped at ``weight_cap`` times the
  round's median released count (post-processing too).

**Sensitivity and accounting.** Adding or removing one of a node's samples changes its count by
1, so a release with noise ``N(0, sigma^2)`` is the Gaussian mechanism with noise multiplier
``sigma`` at sensitivity 1 (Dwork and Roth, Theorem A.1; accounted by ``dp-accounting`` as one
step at sample rate 1, like every other mechanism here: :mod:`phalanx.privacy.accounting`). That
is *sample-level* adjacency, the one DP-SGD uses, so the release composes with DP-SGD in the
node's own account. Under client-level DP a neighbouring dataset drops the whole node, the
count's sensitivity is the count itself, and only the constant weight is private: the scenario
refuses ``noised`` there.

The claimed count itself goes on the log only as a salted commitment
(:func:`phalanx.core.commitment.count_commitment`), opened to an auditor who holds the data. None
of this protects the aggregate from an inflated claim: the cap does (a commitment binds a node to
its own claim, not to the truth; :func:`phalanx.defenses.cap_claims`).

The noise here is written by hand because it is one draw per node; the epsilon is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from phalanx.core.seeding import generator
from phalanx.privacy.accounting import Accountant, PrivacyLedger, epsilon


def released(counts: torch.Tensor, noise: float, draws: torch.Tensor) -> torch.Tensor:
    """Releases from standard normal ``draws``: ``counts + noise * draws``, floored at 1
    (post-processing) so that no honest node's weight falls to zero or below."""
    return (counts.double() + noise * draws).clamp(min=1.0)


def noised_count(count: float, noise: float, gen: torch.Generator | None = None) -> float:
    """One node's release of its count, ``count + N(0, noise^2)`` (see :func:`released`)."""
    if not noise > 0:
        raise ValueError(f"the count noise must be > 0 samples, got {noise!r}")
    return float(released(torch.tensor(float(count)), noise, torch.randn((), generator=gen, dtype=torch.float64)))


def release_epsilon(noise: float, delta: float, accountant: Accountant = "rdp") -> float:
    """The epsilon of one release at sensitivity 1 sample (the whole cost: the value is reused)."""
    return epsilon(noise, 1.0, 1, delta, accountant)


@dataclass
class CountRelease:
    """The simulation's releases: one standard normal per node, drawn from the run's seed at
    construction, so node ``i``'s released count is the same number every round it takes part.

    ``account``: where a node's first release is recorded (a DP-SGD plan's ledger, or one kept
    for the counts alone when the run has no other mechanism). A simulation only: a deployed node
    draws its noise from the operating system and keeps the value it released
    (:mod:`phalanx.engine.node.runtime`).
    """

    noise: float
    nodes: int
    seed: int
    account: PrivacyLedger
    released: torch.Tensor = field(init=False)  # (nodes,) bool: whose count is out already
    draws: torch.Tensor = field(init=False)  # (nodes,) float64 standard normals

    def __post_init__(self) -> None:
        if not self.noise > 0:
            raise ValueError(f"the count noise must be > 0 samples, got {self.noise!r}")
        self.draws = torch.randn(self.nodes, generator=generator(self.seed, "count-noise"), dtype=torch.float64)
        self.released = torch.zeros(self.nodes, dtype=torch.bool)

    def weights(self, nodes: torch.Tensor, claims: torch.Tensor, honest: torch.Tensor) -> torch.Tensor:
        """The released counts of ``nodes`` (a node's first release is charged to its account).

        ``claims``: each of their claims; ``honest``: which of them follow the protocol (a
        malicious node releases whatever it claims: it has nothing of its own to protect)."""
        ids = nodes.cpu()
        first = ids[~self.released[ids]]
        if len(first):
            self.account.record(first.tolist(), self.noise, 1.0, 1)
            self.released[first] = True
        out = torch.where(honest.cpu(), released(claims.cpu(), self.noise, self.draws[ids]), claims.cpu().double())
        return out.to(device=claims.device, dtype=claims.dtype)
