"""What an attack may see and what it returns.

Two plug-in families:

- **Update attacks** run after local training. For each chunk of receivers they return what each
  malicious sender sends to each receiver, as updates (model deltas over the round):
  ``(n_malicious, n_receivers, d)``, or ``(n_malicious, 1, d)`` when every receiver gets the same
  row. A malicious node may tell each neighbour something different; the engine adds the
  sender's base model in gossip, and the star server receives the update itself.
- **Data attacks** run once, before training: they rewrite a malicious node's shard.

An update attack declares its threat model in ``knowledge``; the engine fills the
:class:`AttackView` only with what that level allows (``honest_updates`` is ``None`` below
``"honest_updates"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

Knowledge = Literal["none", "own_data", "honest_updates", "defense"]
KNOWLEDGE_ORDER: tuple[Knowledge, ...] = ("none", "own_data", "honest_updates", "defense")


@dataclass(frozen=True)
class AttackView:
    """What the adversary sees this round, filled according to the attack's knowledge."""

    round: int
    own_updates: torch.Tensor  # (n_malicious, d): what its nodes would send if they were honest
    receivers: torch.Tensor  # (n_receivers,): the receiving node ids (-1 is the star server)
    generator: torch.Generator
    honest_updates: torch.Tensor | None = None  # (n_honest, d), this round's honest updates
    defense: object | None = None  # the receivers' aggregator, for adaptive attacks


class UpdateAttack:
    """Base class: override :meth:`craft`."""

    knowledge: ClassVar[Knowledge] = "none"

    def craft(self, view: AttackView) -> torch.Tensor:
        raise NotImplementedError


class DataAttack:
    """Base class: override :meth:`poison` to return the node's rewritten ``(x, y)``."""

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
