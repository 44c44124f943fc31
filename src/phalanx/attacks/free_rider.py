"""Free-riding: send something that looks like an update, without training, to collect influence.

Fraboni, Vidal and Lorenzi 2021, "Free-rider attacks on model aggregation in federated learning"
(AISTATS), Section 3: a free rider holds no useful data (or will not spend the compute) and still
wants the final model, and whatever influence or reward taking part brings. Its options, by mode:

- ``zero``: the plain free rider, an all-zero update (the model sent back unchanged);
- ``noise``: the disguised free rider, Gaussian noise ``N(0, sigma_t^2)`` per coordinate with
  ``sigma_t = std * t^(-decay)`` at round ``t`` (Section 3.2: a decaying noise that mimics the
  shrinking updates of a converging model);
- ``stale``: its first real update, replayed every later round (it trains once, then stops);
- ``delta``: the global model's last change, ``G_t - G_(t-1)``, which every participant can
  compute from two models it received, plus the disguising noise when ``std > 0``
  (Section 3.3's "delta weights"). Star only: in gossip there is no public model to difference.

Knowledge: ``none`` (``zero``, ``noise``, ``stale``: only what the node itself has); ``delta``
reads the public model's last change, which the engine passes in the view.

Worked example: at round 4 with ``std=0.1`` and ``decay=0.5`` the noise has standard deviation
0.1 / 2 = 0.05; ``delta`` after the model moved by (0.2, -0.1) sends (0.2, -0.1).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, validate_call

from phalanx.attacks.base import AttackView, UpdateAttack


class FreeRider(UpdateAttack):
    """Send zero, noise, a stale update, or the model's last change, instead of training."""

    label = "free_rider"
    knowledge = "none"

    @validate_call
    def __init__(
        self,
        *,
        mode: Literal["zero", "noise", "stale", "delta"] = "noise",
        std: Annotated[float, Field(ge=0, le=1e6)] = 0.01,
        decay: Annotated[float, Field(ge=0, le=10)] = 0.0,
    ):
        self.mode, self.std, self.decay = mode, std, decay
        self._stale: torch.Tensor | None = None

    def _noise(self, view: AttackView) -> torch.Tensor:
        own = view.own_updates
        if self.std == 0:
            return torch.zeros_like(own)
        sigma = self.std * max(1, view.round) ** (-self.decay)
        g = view.generator
        return (sigma * torch.randn(own.shape, generator=g, device=g.device)).to(own)

    def craft(self, view: AttackView) -> torch.Tensor:
        own = view.own_updates
        if self.mode == "zero":
            rows = torch.zeros_like(own)
        elif self.mode == "noise":
            rows = self._noise(view)
        elif self.mode == "stale":
            if self._stale is None or self._stale.shape != own.shape:
                self._stale = own.clone()
            rows = self._stale.clone()
        else:
            if view.last_delta is None:
                raise ValueError("free_rider: mode 'delta' needs the public model's last change "
                                 "(a star's global model); use zero, noise or stale in gossip")
            rows = view.last_delta.to(own)[None, :].expand_as(own) + self._noise(view)
        return rows[:, None, :]
