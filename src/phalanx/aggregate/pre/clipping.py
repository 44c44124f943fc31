"""Norm clipping in front of a rule: static (``clipping``) and adaptive robust (``arc``).

**Static clipping** scales every row longer than ``c`` back to norm ``c``: the fixed-threshold
clipping that Allouah et al. 2024 (below) start from, ByzFL's ``Clipping`` (whose default
``c = 2.0`` we keep); centered clipping (Karimireddy, He, Jaggi 2021) clips around a moving
centre instead of 0::

    clip_c(x_i) = min(1, c / ||x_i||) x_i

Worked example, ``c = 1``: (3, 4) becomes (0.6, 0.8); (0.3, 0.4) is unchanged.

**Adaptive robust clipping (ARC)** (Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan 2024,
"Boosting robustness by clipping gradients in distributed learning", arXiv:2405.14432,
Algorithm 1; later versions are titled "Adaptive gradient clipping for robust federated
learning") clips the ``k`` longest of the ``n`` rows to the norm of the ``(k+1)``-th longest::

    k = floor(2 (f / n) (n - f)),   C = the (k+1)-th largest of ||x_1||..||x_n||
    arc(x_i) = min(1, C / ||x_i||) x_i

Worked example, ``n = 4``, ``f = 1``: ``k = floor(2 * 3 / 4) = 1``; rows of norms 1, 2, 3, 10: the
one of norm 10 is scaled to norm 3, the others are unchanged.

``k`` is computed exactly, ``(2 f (n - f)) // n`` in integers. ByzFL 0.0.11 (``byzfl.ARC``)
evaluates ``int((2 * f / n) * (n - f))`` in floating point, which rounds one lower for a few
``(n, f)``, the first with ``2f < n`` being ``n = 242, f = 33`` (56 instead of 57); elsewhere the
two agree. Each receiver uses its own ``n`` and ``f``. Rows, mask and weights keep their shape;
masked-out slots come out as 0. Neither is translation equivariant (norms are measured from 0).
"""

from __future__ import annotations

from typing import Annotated

import pydantic
import torch
from pydantic import Field

from phalanx.aggregate.base import PreAggregator, masked_fill_rows
from phalanx.aggregate.registry import PRE_AGGREGATORS


def clip_rows(x: torch.Tensor, threshold: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` ``(m, k, d)`` with each row longer than its ``threshold`` (``(m, k)``) scaled to it.

    ``norm``: the rows' norms ``(m, k)``, when the caller has them already.
    """
    norm = x.norm(dim=2) if norm is None else norm
    long = norm > threshold
    scale = torch.where(long, threshold / torch.where(long, norm, torch.ones_like(norm)),
                        torch.ones_like(norm))
    return x * scale[..., None]


@PRE_AGGREGATORS.register("clipping")
class Clipping(PreAggregator):
    """Static clipping: every row longer than ``c`` is scaled to norm ``c`` (default 2.0, ByzFL's)."""

    label = "clipping"
    translation_equivariant = False

    @pydantic.validate_call
    def __init__(self, *, c: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0):
        self.c = c

    def apply(self, rows, mask, weights=None, context=None):
        x = masked_fill_rows(rows, mask)
        threshold = torch.full(mask.shape, self.c, dtype=rows.dtype, device=rows.device)
        return clip_rows(x, threshold), mask, weights


@PRE_AGGREGATORS.register("arc")
class AdaptiveRobustClipping(PreAggregator):
    """ARC: the ``floor(2 (f/n)(n - f))`` longest rows are clipped to the next row's norm."""

    label = "arc"
    translation_equivariant = False

    @pydantic.validate_call
    def __init__(self, *, f: Annotated[int, Field(ge=0)] = 0):
        self.f = f

    def min_rows(self, f: torch.Tensor) -> torch.Tensor:
        return f.clamp(min=1)

    def requirement(self) -> str:
        return "n >= max(f, 1)"

    def apply(self, rows, mask, weights=None, context=None):
        m = rows.shape[0]
        f = self.declared_f(m, rows.device, context)
        n = mask.sum(1)
        clipped = (2 * f * (n - f)).div(n.clamp(min=1), rounding_mode="floor")
        clipped = clipped.clamp(min=0).minimum((n - 1).clamp(min=0))
        x = masked_fill_rows(rows, mask)
        norm = x.norm(dim=2)
        longest = torch.where(mask, norm, torch.full_like(norm, -1.0)).sort(dim=1, descending=True)
        threshold = longest.values.gather(1, clipped[:, None]).clamp(min=0)  # (k+1)-th largest
        return clip_rows(x, threshold.expand_as(norm), norm), mask, weights
