"""Validation of what peers send, before any rule sees it.

A row that is not finite (NaN, +-Inf anywhere) or not of the model's size never reaches an
aggregation rule: robust rules assume real vectors of one size, and a single NaN poisons a mean,
a sort or a distance. Such a row is dropped (its mask slot cleared) and counted as evidence
against its sender, since no honest node produces one.

A sample count that a node claims about itself is a claim, not a fact (Flower weights updates by
the client's own ``num_examples``; a weight-inflation attacker claims millions). Claims are capped
at ``cap`` times the median claim among the rows of the round: an honest majority keeps the
median honest, so no node can weigh more than ``cap`` honest-median nodes. Non-finite or
negative claims count as zero.
"""

from __future__ import annotations

import torch


def finite_rows(rows: torch.Tensor, chunk_bytes: int = 64 << 20) -> torch.Tensor:
    """Which rows are entirely finite: ``(..., d) -> (...)`` bool.

    In chunks of about ``chunk_bytes`` of rows: ``torch.isfinite`` on a large tensor allocates
    temporaries several times its size (1.75 GB measured for a 1 GB population of gossip models).
    """
    flat = rows.reshape(-1, rows.shape[-1]) if rows.dim() > 1 else rows[None]
    step = max(1, chunk_bytes // max(1, flat.shape[1] * flat.element_size()))
    if len(flat) <= step:
        return torch.isfinite(rows).all(dim=-1)
    out = torch.cat([torch.isfinite(flat[s : s + step]).all(dim=-1) for s in range(0, len(flat), step)])
    return out.reshape(rows.shape[:-1])


def shape_ok(rows: torch.Tensor, expected: tuple[int, ...]) -> bool:
    """Whether a sender's tensor has exactly the expected shape (and a floating dtype)."""
    return tuple(rows.shape) == tuple(expected) and rows.is_floating_point()


def cap_claims(claims: torch.Tensor, cap: float | None) -> tuple[torch.Tensor, int]:
    """Claimed counts, cleaned and capped: ``(weights, how many were capped)``.

    ``cap=None`` trusts the claims (to show what the attack does without the defense).
    """
    w = torch.where(torch.isfinite(claims) & (claims > 0), claims, torch.zeros_like(claims))
    if cap is None or len(w) == 0:
        return w, 0
    limit = cap * w.median()
    capped = w > limit
    return torch.where(capped, limit, w), int(capped.sum())
