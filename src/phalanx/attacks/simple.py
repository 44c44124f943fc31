"""The simplest attacks, one of each family, that exercise the plug-in points.

- ``sign_flip``: send ``-scale`` times the honest update (Damaskinos et al. 2018, "Asynchronous
  Byzantine machine learning", the reversed-gradient attack; used as a baseline by most
  Byzantine-robustness papers since).
- ``gaussian``: send an update of i.i.d. ``N(0, std^2)`` noise (Blanchard et al. 2017, Section 5,
  the Gaussian Byzantine worker).
- ``label_flip``: rewrite labels before training (Biggio et al. 2012; Fung et al. 2020, Section
  5, for the one-to-one flip). ``all_to_one`` sends every label to ``target``; ``one_to_one``
  sends ``source`` to ``target``; ``random`` replaces every label by a uniformly drawn other one.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from phalanx.attacks.base import AttackView, DataAttack, UpdateAttack


class SignFlip(UpdateAttack):
    """Send the honest update reversed and scaled: ``-scale * u``."""

    knowledge = "own_data"

    def __init__(self, *, scale: Annotated[float, Field(gt=0, le=1e6)] = 1.0):
        self.scale = scale

    def craft(self, view: AttackView) -> torch.Tensor:
        return (-self.scale * view.own_updates)[:, None, :]


class Gaussian(UpdateAttack):
    """Send pure noise: every coordinate drawn from ``N(0, std^2)``."""

    knowledge = "none"

    def __init__(self, *, std: Annotated[float, Field(gt=0, le=1e6)] = 1.0):
        self.std = std

    def craft(self, view: AttackView) -> torch.Tensor:
        n, d = view.own_updates.shape
        noise = torch.randn(n, 1, d, generator=view.generator, device=view.generator.device)
        return (self.std * noise).to(view.own_updates.device, view.own_updates.dtype)


class LabelFlip(DataAttack):
    """Relabel the node's samples: all-to-one, one-to-one, or random."""

    def __init__(
        self,
        *,
        mode: Literal["all_to_one", "one_to_one", "random"] = "one_to_one",
        source: Annotated[int, Field(ge=0)] = 1,
        target: Annotated[int, Field(ge=0)] = 7,
    ):
        self.mode, self.source, self.target = mode, source, target

    def poison(self, x, y, num_classes, generator):
        for label in (self.source, self.target):
            if label >= num_classes:
                raise ValueError(f"label_flip: label {label} out of range for {num_classes} classes")
        if self.mode == "all_to_one":
            return x, torch.full_like(y, self.target)
        if self.mode == "one_to_one":
            return x, torch.where(y == self.source, torch.full_like(y, self.target), y)
        shift = torch.randint(1, num_classes, y.shape, generator=generator, device=generator.device)
        return x, (y + shift.to(y.device)) % num_classes
