"""Sybil collusion: one adversary's many identities push one payload, disguised or not.

Douceur 2002 ("The Sybil attack") named the threat; Fung, Yoon and Beschastnikh 2020 ("The
limitations of federated learning in Sybil settings", RAID, Section 3) measured it on federated
learning: sybils that share one poisoned data set send near-identical updates, which is also what
betrays them to a similarity defense (FoolsGold). This attack makes the collusion explicit:

- ``mode="identical"``: every identity sends the payload ``p``, the mean of the identities' own
  updates (each trained on the adversary's poisoned data);
- ``mode="calibrated"``: every identity sends ``s_i = N (sqrt(rho) p_hat + sqrt(1 - rho) z_i)``,
  with ``p_hat = p / ||p||`` and ``z_i`` orthonormal directions orthogonal to ``p_hat``. Then
  ``||s_i|| = N`` and ``cos(s_i, s_j) = rho`` exactly: ``N`` is the median norm of the honest
  updates and ``rho`` the mean cosine similarity of honest pairs this round (clamped to
  ``[0, 1]``), so neither a norm check nor a per-round similarity check tells the identities
  from an honest pair. The payload survives in every row as the component ``N sqrt(rho)``.

``persistent=True`` keeps each identity's ``z_i`` across rounds (drawn once from a generator
seeded by the identity's rank), so that the similarity of the identities' *summed* updates also
stays at ``rho`` instead of rising as fresh noise averages out; the default draws fresh ``z_i``
each round.

Knowledge: the honest updates (for ``N`` and ``rho``). Every identity sends the same row to every
receiver.

Worked example: payload (1, 0, 0), honest median norm 2 and honest mean cosine 0.25: each
identity sends ``2 (0.5 (1, 0, 0) + 0.866 z_i)``, e.g. (1, 1.73, 0) and (1, 0, 1.73), of norm 2
and cosine 0.25.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import validate_call

from phalanx.attacks.base import AttackView, UpdateAttack
from phalanx.attacks.reference import honest_rows


def mean_pair_cosine(rows: torch.Tensor) -> float:
    """Mean cosine similarity over the distinct pairs of ``(h, d)`` rows (0 with fewer than 2)."""
    h = rows.shape[0]
    if h < 2:
        return 0.0
    unit = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-30)
    total = unit.sum(0).square().sum() - unit.square().sum()  # sum over ordered pairs i != j
    return float(total / (h * (h - 1)))


def orthonormal_noise(payload: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """``(m, d)`` orthonormal rows, each orthogonal to ``payload`` (QR of Gaussian draws)."""
    d = payload.shape[0]
    if m + 1 > d:
        raise ValueError(f"sybil: {m} calibrated identities need more than {m + 1} dimensions (d={d})")
    draws = torch.randn(d, m, generator=generator, device=generator.device, dtype=torch.float64)
    basis = torch.cat([payload.to(draws)[:, None], draws.to(payload.device)], dim=1)
    q, _ = torch.linalg.qr(basis)  # first column spans the payload, the rest are orthogonal to it
    return q[:, 1:].T.to(payload.dtype)


class Sybil(UpdateAttack):
    """Colluding identities send one payload: identical copies, or calibrated to look like honest pairs."""

    label = "sybil"
    knowledge = "honest_updates"

    @validate_call
    def __init__(self, *, mode: Literal["identical", "calibrated"] = "calibrated", persistent: bool = False):
        self.mode, self.persistent = mode, persistent

    def craft(self, view: AttackView) -> torch.Tensor:
        own = view.own_updates
        payload = own.mean(0)
        m = own.shape[0]
        if self.mode == "identical" or float(payload.norm()) == 0:
            return payload[None, None, :].expand(m, 1, -1).clone()
        honest = honest_rows(view)
        target_norm = honest.norm(dim=1).median()
        rho = min(1.0, max(0.0, mean_pair_cosine(honest)))
        if self.persistent:
            g = torch.Generator(device=view.generator.device).manual_seed(20_170_411)
        else:
            g = view.generator
        z = orthonormal_noise(payload, m, g)
        unit = payload / payload.norm()
        rows = target_norm * (rho**0.5 * unit[None, :] + (1 - rho) ** 0.5 * z)
        return rows[:, None, :].to(own.dtype)
