"""The simplest attacks, one of each family, that exercise the plug-in points.

- ``sign_flip``: send ``-scale`` times the honest update (Damaskinos et al. 2018, "Asynchronous
  Byzantine machine learning", the reversed-gradient attack; used as a baseline by most
  Byzantine-robustness papers since).
- ``gaussian``: send an update of i.i.d. ``N(0, std^2)`` noise (Blanchard et al. 2017, Section 5,
  the Gaussian Byzantine worker).
- ``malformed``: send what no honest node sends, to exercise validation: rows of NaN or of
  infinities, or a tensor of the wrong size. The engine must drop it, count it against the
  sender and go on (it is the range's bad-input case).
- ``label_flip``: rewrite labels before training (Biggio et al. 2012; Fung et al. 2020, Section
  5, for the one-to-one flip). ``all_to_one`` sends every label to ``target``; ``one_to_one``
  sends ``source`` to ``target``; ``random`` replaces every label by a uniformly drawn other one.
  ``fraction`` (default 1) flips only that share of the eligible samples, drawn at random.
  Its success is measured on the test inputs it wants relabelled (Fung et al. 2020's "attack
  rate"): ``one_to_one``, the test images of ``source``; ``all_to_one``, every test image not of
  ``target``; each counted a success when the model says ``target``. ``random`` is untargeted.

Worked example: labels (1, 1, 3, 7) with ``one_to_one`` 1 -> 7 become (7, 7, 3, 7); with
``all_to_one`` to 7 they become (7, 7, 7, 7); with ``fraction=0.5`` one of the two 1s stays.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from phalanx.attacks.base import AttackView, DataAttack, DataSite, SuccessSet, UpdateAttack


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


class Malformed(UpdateAttack):
    """Send malformed updates: NaN or infinite rows, or a tensor of the wrong size."""

    knowledge = "none"

    def __init__(self, *, mode: Literal["nan", "inf", "wrong_size"] = "nan"):
        self.mode = mode

    def craft(self, view: AttackView) -> torch.Tensor:
        n, d = view.own_updates.shape
        if self.mode == "wrong_size":
            return torch.zeros(n, 1, d + 1, dtype=view.own_updates.dtype)
        value = float("nan") if self.mode == "nan" else float("inf")
        return torch.full((n, 1, d), value, dtype=view.own_updates.dtype)


class LabelFlip(DataAttack):
    """Relabel the node's samples: all-to-one, one-to-one, or random."""

    def __init__(
        self,
        *,
        mode: Literal["all_to_one", "one_to_one", "random"] = "one_to_one",
        source: Annotated[int, Field(ge=0)] = 1,
        target: Annotated[int, Field(ge=0)] = 7,
        fraction: Annotated[float, Field(gt=0, le=1)] = 1.0,
    ):
        self.mode, self.source, self.target, self.fraction = mode, source, target, fraction

    def _check(self, num_classes: int) -> None:
        for label in (self.source, self.target):
            if label >= num_classes:
                raise ValueError(f"label_flip: label {label} out of range for {num_classes} classes")

    def poison(self, x, y, num_classes, generator):
        self._check(num_classes)
        if self.mode == "all_to_one":
            eligible, new = y != self.target, torch.full_like(y, self.target)
        elif self.mode == "one_to_one":
            eligible, new = y == self.source, torch.full_like(y, self.target)
        else:
            shift = torch.randint(1, num_classes, y.shape, generator=generator, device=generator.device)
            eligible, new = torch.ones_like(y, dtype=torch.bool), (y + shift.to(y.device)) % num_classes
        if self.fraction < 1.0:
            draw = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device)
            eligible = eligible & (draw < self.fraction)
        return x, torch.where(eligible, new, y)

    def success_set(self, x_test, y_test, site: DataSite) -> SuccessSet | None:
        if self.mode == "random":
            return None
        keep = y_test == self.source if self.mode == "one_to_one" else y_test != self.target
        return SuccessSet(x_test[keep], self.target)
