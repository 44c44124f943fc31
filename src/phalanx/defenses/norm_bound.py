"""Norm bounding with weak differential privacy: the two cheap backdoor defenses.

Sun, Kairouz, Suresh and McMahan 2019, "Can you really backdoor federated learning?" (arXiv
1911.07963), Section 3:

- **norm thresholding**: every update ``u_i`` is scaled to ``u_i / max(1, ||u_i|| / M)``, so a
  boosted update (model replacement) cannot weigh more than ``M`` in the sum;
- **weak differential privacy**: Gaussian noise of standard deviation ``sigma`` is added to the
  aggregate, "weak" because ``sigma`` is far below what a meaningful epsilon would need; it
  blurs the small, precise changes a backdoor relies on.

``bound`` is ``M``; ``noise`` is ``sigma`` (0: norm bounding alone). In gossip the rows are the
senders' models relative to the receiver's, bounded the same way. Nothing is flagged: the defense
limits every row and detects none.

Worked example: with ``bound=1`` the rows (3, 4) and (0.3, 0.4) become (0.6, 0.8) and stay
(0.3, 0.4).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, validate_call

from phalanx.aggregate.base import masked_fill_rows
from phalanx.defenses.screen import SCREENS, Screen, Screening


@SCREENS.register("norm_bound")
class NormBound(Screen):
    """Scale every row to norm at most ``bound``; add Gaussian noise ``noise`` to the aggregate."""

    label = "norm_bound"

    @validate_call
    def __init__(self, *, bound: Annotated[float, Field(gt=0, le=1e6)] = 1.0,
                 noise: Annotated[float, Field(ge=0, le=1e6)] = 0.0):
        self.bound, self.noise = bound, noise

    def screen(self, rows, mask, state, generator=None, base=None):
        clean = masked_fill_rows(rows, mask)
        norms = clean.norm(dim=-1, keepdim=True)
        bounded = clean / (norms / self.bound).clamp(min=1.0)
        noise = torch.full((rows.shape[0],), self.noise, dtype=rows.dtype, device=rows.device) if self.noise else None
        return Screening(bounded, mask.to(rows.dtype), torch.zeros_like(mask), noise), {}
