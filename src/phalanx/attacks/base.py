"""What an attack may see and what it returns.

Two plug-in families:

- **Update attacks** run after local training. For each chunk of receivers they return what each
  malicious sender sends to each receiver, as updates (model deltas over the round):
  ``(n_malicious, n_receivers, d)``, or ``(n_malicious, 1, d)`` when every receiver gets the same
  row. A malicious node may tell each neighbour something different; the engine adds the
  sender's base model in gossip, and the star server receives the update itself.
- **Data attacks** run once, before training: they rewrite a malicious node's shard. A targeted
  one (a label flip towards one class, a backdoor) also says how its success is measured: the
  test inputs it wants sent to its target class (:meth:`DataAttack.success_set`), from which the
  engine reports the **attack success rate** beside accuracy.

An update attack declares its threat model in ``knowledge``; the engine fills the
:class:`AttackView` only with what that level allows (``honest_updates`` is ``None`` below
``"honest_updates"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

Knowledge = Literal["none", "own_data", "honest_updates", "defense"]
KNOWLEDGE_ORDER: tuple[Knowledge, ...] = ("none", "own_data", "honest_updates", "defense")


@dataclass(frozen=True)
class AttackView:
    """What the adversary sees this round, filled according to the attack's knowledge.

    ``n_rows`` is how many rows a receiver aggregates (honest plus malicious senders): the ``n``
    of the attack papers' formulas. In a star it is the round's participants; in gossip the
    engine passes the typical neighbourhood (the graph's largest degree plus the receiver's own
    row), since the adversary crafts once per round for all receivers.
    """

    round: int
    own_updates: torch.Tensor  # (n_malicious, d): what its nodes would send if they were honest
    receivers: torch.Tensor  # (n_receivers,): the receiving node ids (-1 is the star server)
    generator: torch.Generator
    honest_updates: torch.Tensor | None = None  # (n_honest, d), this round's honest updates
    defense: Any | None = None  # the receivers' defense chain (an Aggregator), for adaptive attacks
    declared_f: int = 0  # the f the defense assumes (known with the defense)
    n_rows: int = 0  # rows a receiver aggregates; 0 means n_honest + n_malicious
    own_counts: torch.Tensor | None = None  # (n_malicious,) its nodes' true sample counts
    last_delta: torch.Tensor | None = None  # (d,) how the public model moved last round (star)

    @property
    def n_malicious(self) -> int:
        return self.own_updates.shape[0]

    def malicious_per_receiver(self) -> int:
        """The f of the attack papers' formulas: how many of a receiver's rows are malicious.

        Star: every malicious participant. Gossip: the expected share of a neighbourhood,
        ``round(n_rows * n_malicious / (n_honest + n_malicious))``, at least 1 and at most
        ``n_rows - 1``.
        """
        n = self.rows_per_receiver()
        honest = 0 if self.honest_updates is None else self.honest_updates.shape[0]
        total = max(1, honest + self.n_malicious) if self.honest_updates is not None else n
        share = round(n * self.n_malicious / total)
        return int(min(self.n_malicious, max(1, min(share, n - 1))))

    def rows_per_receiver(self) -> int:
        if self.n_rows:
            return self.n_rows
        honest = 0 if self.honest_updates is None else self.honest_updates.shape[0]
        return honest + self.n_malicious

    def simulate(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the known defense on ``c`` candidate row sets at once: ``(c, k, d) -> (c, d)``.

        Put the honest rows first and the malicious ones last in each set (the stand-ins for the
        root update and the rule's state are the mean of the first ``k - n_malicious`` rows).
        Adaptive attacks call this to score many candidate scales in one batched call. Raises if
        the attack does not know the defense.
        """
        if self.defense is None:
            raise RuntimeError("this attack's knowledge does not include the defense")
        from phalanx.aggregate.base import Context

        c, k, _ = rows.shape
        if mask is None:
            mask = torch.ones(c, k, dtype=torch.bool, device=rows.device)
        f = torch.full((c,), self.declared_f, dtype=torch.int64, device=rows.device)
        ctx = Context(f=f, generator=self.generator)
        if getattr(self.defense, "needs_root", False) or getattr(self.defense, "stateful", False):
            # the server's root update and the rule's state are not the adversary's to see;
            # it stands in the honest mean, a stronger guess than it could make in practice
            mean = rows[:, : k - self.n_malicious].mean(1) if k > self.n_malicious else rows.mean(1)
            ctx = Context(f=f, generator=self.generator, root=mean, previous=mean)
        return self.defense.aggregate(rows, mask, None, ctx)


class UpdateAttack:
    """Base class: override :meth:`craft` (and :meth:`claims` to lie about sample counts)."""

    knowledge: ClassVar[Knowledge] = "none"

    def craft(self, view: AttackView) -> torch.Tensor:
        raise NotImplementedError

    def claims(self, view: AttackView) -> torch.Tensor | None:
        """The sample counts its nodes claim, ``(n_malicious,)``; ``None``: the true counts."""
        return None


@dataclass(frozen=True)
class DataSite:
    """Where a data attack runs: which malicious node, and the pixel scale of the data set.

    ``rank`` is the node's index among the ``attackers`` malicious nodes (DBA gives each rank its
    own piece of the trigger); ``high`` and ``low`` are a white and a black pixel in the data
    set's standardized space (:meth:`phalanx.data.Dataset.standardize` of 1 and 0).
    """

    node: int = 0
    rank: int = 0
    attackers: int = 1
    high: float = 1.0
    low: float = 0.0


@dataclass(frozen=True)
class SuccessSet:
    """What a targeted attack wants: ``inputs`` classified as ``target``.

    The attack success rate of a model is the share of ``inputs`` it sends to ``target``.
    """

    inputs: torch.Tensor
    target: int


class DataAttack:
    """Base class: override :meth:`poison` to return the node's rewritten ``(x, y)``.

    Attacks that need to know which malicious node they run on (DBA's trigger pieces) or the
    data set's pixel scale (a white trigger) override :meth:`poison_node` instead. A targeted
    attack overrides :meth:`success_set`.
    """

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def poison_node(self, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                    generator: torch.Generator, site: DataSite) -> tuple[torch.Tensor, torch.Tensor]:
        """The node's rewritten ``(x, y)``; by default :meth:`poison`, whatever the node."""
        return self.poison(x, y, num_classes, generator)

    def success_set(self, x_test: torch.Tensor, y_test: torch.Tensor, site: DataSite) -> SuccessSet | None:
        """The test inputs the attack wants classified as its target, or ``None`` (untargeted)."""
        return None
