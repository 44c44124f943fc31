"""Backdoors: a pixel trigger that sends any image to the attacker's target class.

- ``badnets``: Gu, Dolan-Gavitt and Garg 2017, "BadNets: identifying vulnerabilities in the
  machine learning model supply chain", Section 3: a small pixel pattern is stamped on a share of
  the training images, which are relabelled to the target class; the model learns the clean task
  and, beside it, "pattern -> target". In federated learning each malicious node poisons its own
  shard this way (Bagdasaryan et al. 2020, Section 4, the data-poisoning baseline).
- ``dba``: Xie, Huang, Chen and Li 2020, "DBA: distributed backdoor attacks against federated
  learning" (ICLR), Section 2: the global trigger is split into local pieces, and each attacker
  stamps only its own piece (attacker ``i`` the piece ``i mod parts``); at test time the whole
  trigger is stamped. Each local update then carries a smaller, less anomalous change.

Model replacement (Bagdasaryan et al. 2020) is ``badnets`` (or ``dba``) data with the
``scaling`` update attack, which multiplies the backdoored update so that it survives averaging.

**The trigger.** Pixels of a mask are set to a white pixel of the data set
(:attr:`~phalanx.attacks.base.DataSite.high`, the standardized value of raw 1.0) on every
channel. ``pattern="square"``: a ``size`` x ``size`` block in the bottom-right corner, ``gap``
pixels from the border (BadNets' corner pattern). ``pattern="bars"``: DBA's MNIST trigger,
``parts`` horizontal bars of 1 x ``size`` pixels laid out two per row, ``gap`` pixels apart,
starting ``gap`` pixels from the top-left corner. DBA splits ``bars`` bar by bar; ``badnets``
with ``pattern="bars"`` stamps all of them, the centralized attack DBA compares with.

**Success.** The attack success rate is the share of test images whose true class is not the
target that, with the whole trigger stamped, are classified as the target (:meth:`success_set`).
A clean model already sends some of them there; the range reports the rate minus that of a run
without attackers.

Worked example: on 8x8 images, ``square`` with ``size=2, gap=1`` sets pixels (5..6, 5..6); with
``fraction=0.5`` about half of a node's images carry it and are labelled ``target``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, validate_call

from phalanx.attacks.base import DataAttack, DataSite, SuccessSet


def square_mask(height: int, width: int, size: int, gap: int) -> torch.Tensor:
    """``(H, W)`` bool: a ``size`` x ``size`` block ``gap`` pixels from the bottom-right corner."""
    size = max(1, min(size, height - gap, width - gap))
    mask = torch.zeros(height, width, dtype=torch.bool)
    r0, c0 = max(0, height - gap - size), max(0, width - gap - size)
    mask[r0 : r0 + size, c0 : c0 + size] = True
    return mask


def bar_masks(height: int, width: int, parts: int, size: int, gap: int) -> list[torch.Tensor]:
    """DBA's pieces: ``parts`` bars of 1 x ``size``, two per row, ``gap`` apart, from the top left."""
    masks = []
    for i in range(parts):
        row = gap + (i // 2) * (1 + gap)
        col = gap + (i % 2) * (size + gap)
        mask = torch.zeros(height, width, dtype=torch.bool)
        if row < height:
            mask[row, col : min(width, col + size)] = True
        masks.append(mask)
    return masks


def stamp(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """``x`` ``(n, C, H, W)`` with the pixels of ``mask`` set to ``value`` on every channel (a copy)."""
    return torch.where(mask.to(x.device), torch.full((), value, dtype=x.dtype, device=x.device), x)


def _image_shape(x: torch.Tensor, name: str) -> tuple[int, int]:
    if x.ndim != 4:
        raise ValueError(f"{name}: needs images (n, C, H, W), got shape {tuple(x.shape)}")
    return x.shape[-2], x.shape[-1]


class _Trigger(DataAttack):
    """Shared by BadNets and DBA: poison a share of the shard, measure on the full trigger."""

    name = "backdoor"

    def __init__(self, target: int, fraction: float):
        self.target, self.fraction = target, fraction

    def masks(self, height: int, width: int) -> list[torch.Tensor]:
        raise NotImplementedError

    def trigger(self, height: int, width: int) -> torch.Tensor:
        """The whole trigger, ``(H, W)`` bool: the union of the pieces."""
        return torch.stack(self.masks(height, width)).any(0)

    def _check(self, num_classes: int) -> None:
        if self.target >= num_classes:
            raise ValueError(f"{self.name}: target {self.target} out of range for {num_classes} classes")

    def poison(self, x, y, num_classes, generator):
        return self.poison_node(x, y, num_classes, generator, DataSite())

    def poison_node(self, x, y, num_classes, generator, site: DataSite):
        self._check(num_classes)
        h, w = _image_shape(x, self.name)
        pieces = self.masks(h, w)
        mask = pieces[site.rank % len(pieces)]
        pick = (torch.rand(len(y), generator=generator, device=generator.device) < self.fraction).to(y.device)
        x = torch.where(pick[:, None, None, None], stamp(x, mask, site.high), x)
        return x, torch.where(pick, torch.full_like(y, self.target), y)

    def success_set(self, x_test, y_test, site: DataSite) -> SuccessSet:
        h, w = _image_shape(x_test, self.name)
        keep = y_test != self.target
        return SuccessSet(stamp(x_test[keep], self.trigger(h, w), site.high), self.target)


class BadNets(_Trigger):
    """BadNets: stamp a pixel trigger on a share of the node's images and relabel them to target."""

    name = "badnets"

    @validate_call
    def __init__(
        self,
        *,
        target: Annotated[int, Field(ge=0)] = 0,
        fraction: Annotated[float, Field(gt=0, le=1)] = 0.3,
        pattern: Literal["square", "bars"] = "square",
        size: Annotated[int, Field(ge=1, le=64)] = 4,
        gap: Annotated[int, Field(ge=0, le=64)] = 1,
        parts: Annotated[int, Field(ge=1, le=16)] = 4,
    ):
        super().__init__(target, fraction)
        self.pattern, self.size, self.gap, self.parts = pattern, size, gap, parts

    def masks(self, height, width):
        if self.pattern == "square":
            return [square_mask(height, width, self.size, self.gap)]
        return [torch.stack(bar_masks(height, width, self.parts, self.size, self.gap)).any(0)]


class DBA(_Trigger):
    """DBA: each attacker stamps its own piece of a split trigger; the test stamps the whole one."""

    name = "dba"

    @validate_call
    def __init__(
        self,
        *,
        target: Annotated[int, Field(ge=0)] = 0,
        fraction: Annotated[float, Field(gt=0, le=1)] = 0.3,
        parts: Annotated[int, Field(ge=1, le=16)] = 4,
        size: Annotated[int, Field(ge=1, le=64)] = 4,
        gap: Annotated[int, Field(ge=0, le=64)] = 2,
    ):
        super().__init__(target, fraction)
        self.parts, self.size, self.gap = parts, size, gap

    def masks(self, height, width):
        return bar_masks(height, width, self.parts, self.size, self.gap)
