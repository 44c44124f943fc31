"""Client-level DP: DP-FedAvg, central or local, with optional adaptive clipping.

**DP-FedAvg** (McMahan, Ramage, Talwar, Zhang 2018, "Learning differentially private recurrent
language models", ICLR, Algorithm 1, the fixed-denominator estimator): each participant's
update is clipped to norm ``C``, and Gaussian noise of standard deviation ``sigma * S`` is added
to their sum, ``S`` the sensitivity of the sum (``C`` for zero-out adjacency, ``2C`` for
replace-one: :func:`phalanx.privacy.accounting.sensitivity_factor`); the server divides by the
number of participants, which the ledger makes public anyway.

- ``central``: the server adds the noise once, to the sum. Individual updates reach it in the
  clear, so the guarantee is about what the *model* reveals, against everyone but the server.
- ``local``: every node adds noise of the same standard deviation to its own clipped update
  before it sends it: the guarantee holds against the server and every peer too, at the price
  of ``m`` times the noise variance in the mean. It is the only client-level mode in gossip,
  where every neighbour is a receiver.

Either way each participant's privacy composes one Gaussian step per round it took part in, at
sample rate 1 (participation is public: :mod:`phalanx.privacy.accounting`).

**Adaptive clipping** (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially private learning
with adaptive clipping", NeurIPS, Algorithm 1 and Section 3): the clip norm tracks the
``gamma``-quantile of the update norms. Each round the server releases the noisy share of
updates that were not clipped, ``b = (sum_i [||u_i|| <= C] + N(0, sigma_b^2)) / m``, and moves
``C <- C exp(-eta (b - gamma))``. That count is a second Gaussian query; with the update sum at
noise multiplier ``z_u`` the pair is one Gaussian mechanism of noise multiplier
``z = (z_u^-2 + (2 sigma_b)^-2)^(-1/2)`` (the paper's Theorem 1; the count of bits centred on
1/2 has sensitivity 1/2). So the accountant is given ``z``, and the updates get
``z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` (:func:`update_noise_multiplier`), with the paper's
defaults ``gamma = 0.5``, ``eta = 0.2``, ``sigma_b = m / 20``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def clip_updates(updates: torch.Tensor, clip: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, d)`` updates scaled to norm at most ``clip``, and their norms before clipping."""
    norms = updates.norm(dim=-1)
    factor = (clip / norms.clamp(min=1e-12)).clamp(max=1.0)
    return updates * factor[..., None], norms


def gaussian(shape, std: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``N(0, std^2)`` of ``shape``, drawn from ``generator``, on ``like``'s device and dtype."""
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device) * std


def update_noise_multiplier(z: float, count_std: float) -> float:
    """The updates' noise multiplier ``z_u`` that, with the count's ``sigma_b``, composes to ``z``.

    Raises when ``2 sigma_b <= z``: the count alone would then spend more than the whole budget.
    """
    if not 2 * count_std > z:
        raise ValueError(f"adaptive clipping: the count's noise sigma_b = {count_std:g} must exceed "
                         f"z / 2 = {z / 2:g} (raise count_noise, or lower the noise multiplier)")
    return (z ** -2 - (2 * count_std) ** -2) ** -0.5


@dataclass(frozen=True)
class AdaptiveClipping:
    """Andrew et al. 2021: target quantile ``gamma``, learning rate ``eta``, count noise ``sigma_b``."""

    quantile: float = 0.5
    lr: float = 0.2
    count_noise: float | None = None  # sigma_b; None: the paper's m / 20

    def count_std(self, participants: int) -> float:
        return self.count_noise if self.count_noise is not None else participants / 20

    def next_clip(self, clip: float, norms: torch.Tensor, generator: torch.Generator) -> float:
        """The next round's clip norm from this round's update norms (before clipping)."""
        m = len(norms)
        unclipped = float((norms <= clip).sum())
        noisy = unclipped + float(gaussian((), self.count_std(m), generator, norms))
        return clip * math.exp(-self.lr * (noisy / max(m, 1) - self.quantile))
