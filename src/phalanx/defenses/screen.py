"""Screens: defenses that see who sent each row, keep state per sender, and weigh the rows.

The aggregation chain (:mod:`phalanx.aggregate`) is a pure function of anonymous rows. Some
defenses need more: FoolsGold compares each sender's *history* of updates; reputation keeps a
score per sender; FLAME and norm bounding add noise to the aggregate after the rule. A
:class:`Screen` runs in front of the chain, per receiver, batched like the rules
(``(m, k, d)`` rows with a ``(m, k)`` mask), and returns a :class:`Screening`:

- ``rows``: the rows, possibly rescaled (FLAME and norm bounding clip them);
- ``weights``: ``(m, k)`` in ``[0, 1]``, multiplied into the weights the rule receives (the
  capped sample counts, or ones); a row of weight 0 is dropped from the mask, so rules without
  weights (median, Krum) still see only the rows the screen kept;
- ``flags``: ``(m, k)`` bool, the rows the screen holds suspect (the detection metrics and the
  validators' votes read them);
- ``noise_std``: ``(m,)`` or ``None``, the standard deviation of Gaussian noise the engine adds to
  each receiver's aggregate (FLAME, weak DP).

**State.** A screen's state is explicit: :meth:`Screen.state_shapes` names its per-slot tensors
(FoolsGold: the summed update of each sender, ``(d,)``); the engine keeps them as
``(receivers, slots, *shape)`` tensors and hands each call the ``(m, k, *shape)`` slice of the
receivers and senders at hand, taking back what :meth:`Screen.screen` returns. A slot is one
sender as seen by one receiver: in a star the server's slot ``j`` is node ``j``; in gossip
receiver ``r``'s slot ``s`` is its ``s``-th neighbour, always the same node.

Screens chain by name (``screens: [foolsgold]``): each sees the previous one's rows; weights
multiply, flags add up, and noise variances add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from phalanx.core import Registry

SCREENS: Registry = Registry("screen")


@dataclass
class Screening:
    """What a screen returns for ``m`` receivers of ``k`` slots each."""

    rows: torch.Tensor  # (m, k, d)
    weights: torch.Tensor  # (m, k) in [0, 1]
    flags: torch.Tensor  # (m, k) bool
    noise_std: torch.Tensor | None = None  # (m,)

    def then(self, other: Screening) -> Screening:
        """This screening followed by ``other`` (computed on this one's rows)."""
        noise = self.noise_std
        if other.noise_std is not None:
            noise = other.noise_std if noise is None else (noise.square() + other.noise_std.square()).sqrt()
        return Screening(other.rows, self.weights * other.weights, self.flags | other.flags, noise)


class Screen:
    """Base class: a sender-aware stage in front of the defense chain (see the module docstring)."""

    label: ClassVar[str] = ""
    topologies: ClassVar[tuple[str, ...]] = ("star", "gossip")
    needs_updates: ClassVar[bool] = False  # rows must be the senders' own updates (star)

    def state_shapes(self, d: int) -> dict[str, tuple[int, ...]]:
        """Per-slot state tensors: name -> shape of one slot's entry (``()`` for a scalar)."""
        return {}

    def screen(self, rows: torch.Tensor, mask: torch.Tensor, state: dict[str, torch.Tensor],
               generator: torch.Generator | None = None, base: torch.Tensor | None = None
               ) -> tuple[Screening, dict[str, torch.Tensor]]:
        """The screening of ``rows`` ``(m, k, d)`` and the new ``(m, k, ...)`` state entries.

        ``base`` ``(m, d)``, when given, is the model each receiver's rows are relative to (the
        star's global model; a gossip receiver's own), so ``base + rows`` are the senders' models.
        """
        raise NotImplementedError

    @classmethod
    def name(cls) -> str:
        return cls.label or cls.__name__


def unscreened(rows: torch.Tensor, mask: torch.Tensor) -> Screening:
    """The identity screening: every real row kept at weight 1, nothing flagged, no noise."""
    return Screening(rows, mask.to(rows.dtype), torch.zeros_like(mask))


def cosine_matrix(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(m, k, k)`` cosine similarities between each receiver's rows, in float64.

    Pairs with a masked-out slot, and zero rows, get 0.
    """
    x = torch.where(mask[..., None], rows, torch.zeros((), dtype=rows.dtype, device=rows.device)).double()
    unit = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    return unit @ unit.transpose(1, 2)
