"""What a deployed node learns with: its model, its own data, the defense chain, its attack.

The range builds a :class:`Task` from the genesis's task (a scenario) and the node's shard
(:func:`phalanx.range.network.build_task`); the round driver (:mod:`.runtime`) only uses it. The
fields are the simulation's, for one node: the same model, training configuration, chain and
declared f, so a deployed round and a simulated one run the same pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from phalanx.aggregate import Chain
from phalanx.attacks import UpdateAttack
from phalanx.core.seeding import generator
from phalanx.engine.pipeline import evaluate_rows
from phalanx.models.flat import FlatModel
from phalanx.train import SGDConfig, Shards, train_nodes


@dataclass
class Task:
    flat_model: FlatModel
    initial: torch.Tensor  # (d,) the common starting model
    shards: Shards | None  # this node's data as a one-node Shards (None: a star's server)
    test_x: torch.Tensor
    test_y: torch.Tensor
    sgd: SGDConfig
    chain: Chain
    chain_spec: list[tuple[str, dict[str, Any]]]
    seed: int
    num_classes: int
    model_name: str
    declared_f: int | None = None
    declared_share: float | None = None
    weight_cap: float | None = 3.0
    weighting: str = "uniform"  # star weights on the log: uniform (constant) or noised (phalanx.privacy.counts)
    count_noise: float | None = None  # noised: the noise of the node's one release of its count, in samples
    attack: UpdateAttack | None = None
    colluders: int = 1  # malicious nodes in the network: the f an attack's formulas assume
    strategy: str = "loop"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.initial.numel())

    @property
    def samples(self) -> int:
        return 0 if self.shards is None else int(self.shards.sizes[0])

    def train(self, model: torch.Tensor, round_: int, node: int) -> torch.Tensor:
        """The model after this node's local training in round ``round_`` (seeded per node and round)."""
        row = model.detach().clone()[None]
        g = generator(self.seed, "node", node, "round", round_, "shuffle")
        train_nodes(self.flat_model, row, torch.zeros(1, dtype=torch.int64), self.shards, self.sgd, g,
                    self.strategy, 0, 1)
        return row[0]

    def evaluate(self, model: torch.Tensor) -> tuple[float, float]:
        """(accuracy, loss) of ``model`` on the test set (the simulation's evaluation)."""
        acc, loss = evaluate_rows(self.flat_model, model[None], self.test_x, self.test_y)
        return float(acc[0]), float(loss[0])
