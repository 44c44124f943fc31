"""Local training on Ray: the node population sharded over a few actors, never one per node.

Flower's simulation spawns a Ray actor per client, which runs out of memory well before large
populations (flwr #5855, #1963). Here each of ``workers`` actors holds the pooled training data
and the model template once, and trains, each round, the block of participants assigned to it
(node ``i`` to actor ``i mod workers``), the fastest way for its device (:mod:`phalanx.train.local`:
the loop with one intra-op thread on a CPU, ``vmap`` on a GPU). Everything else of the round
(attacks, validation, exchange and aggregation, DP accounting, secure aggregation, the ledger)
stays in the driver, in :class:`~phalanx.engine.simulation.Simulation`, unchanged.

**Same numbers as the local engine.** The driver draws the round's batch plan for all
participants from the round's generator, exactly as local training does, and hands each actor
its rows of it; DP-SGD's noise is drawn per node id (:func:`phalanx.train.local.train_planned`),
so a node gets the same batches and noise on whichever actor it trains. On a CPU the result
equals the local engine's bit for bit (tested with two local workers).

**Where Ray runs.** ``address=None`` starts a local Ray instance with ``workers`` CPUs (and
stops it when the backend closes); an address (``"auto"``, ``"ray://head:10001"``) joins an
existing cluster, whose scheduler then places the actors on its machines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from phalanx.models.flat import FlatModel
from phalanx.train import SGDConfig, Shards
from phalanx.train.local import make_plan, train_planned


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError("engine ray needs Ray: pip install 'phalanx[ray]' (ray==2.55.1)") from None
    return ray


class _ShardTrainer:
    """One actor: the pooled data and a model template, training the blocks of nodes it is sent."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                 sizes: torch.Tensor, device: str):
        torch.set_num_threads(1)
        self.device = torch.device(device)
        self.fm = FlatModel(module).to(self.device)
        self.shards = Shards(x.to(self.device), y.to(self.device), index.to(self.device), sizes.to(self.device))

    def train(self, rows: torch.Tensor, ids: torch.Tensor, plan: torch.Tensor, active: torch.Tensor | None,
              config: SGDConfig, strategy: str, dp: Any, noise_seed: int) -> tuple[torch.Tensor, float]:
        """The block's trained rows and the seconds the training itself took."""
        start = time.perf_counter()
        rows = rows.to(self.device)
        local = torch.arange(len(ids), device=self.device)
        train_planned(self.fm, rows, local, self.shards, config, plan.to(self.device),
                      None if active is None else active.to(self.device), strategy, 0, 1, dp,
                      noise_seed, ids=ids.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return rows.cpu(), time.perf_counter() - start


@dataclass
class RayTraining:
    """Trains a round's participants on ``workers`` Ray actors (see the module docstring)."""

    module: torch.nn.Module  # the model template (its weights are overwritten by every row)
    shards: Shards
    workers: int = 2
    address: str | None = None
    device: str = "cpu"
    timings: list[dict] = field(default_factory=list, init=False)  # per round: wall and training seconds
    _actors: list = field(default_factory=list, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"engine ray needs at least one worker (got {self.workers})")
        _ray()  # fail now, not mid-run, where Ray is missing

    def _start(self) -> None:
        """Start (or join) Ray and the actors, on the first round that trains."""
        ray = _ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
                self._started = True
        actor = ray.remote(num_cpus=1)(_ShardTrainer)
        sh = self.shards
        data = [ray.put(t.cpu()) for t in (sh.x, sh.y, sh.index, sh.sizes)]
        self._actors = [actor.remote(self.module, *data, self.device) for _ in range(self.workers)]

    def train(self, rows: torch.Tensor, nodes: torch.Tensor, config: SGDConfig,
              generator: torch.Generator, strategy: str, dp, noise_seed: int,
              ids: torch.Tensor | None = None) -> None:
        """Train ``rows[nodes]`` in place, as :func:`phalanx.train.local.train_nodes` would
        (``ids``: the nodes' ids in the network when ``nodes`` only index ``rows``)."""
        if len(nodes) == 0:
            return
        positions, nodes = nodes, (nodes if ids is None else ids.to(nodes.device))
        if not self._actors:
            self._start()
        ray = _ray()
        start = time.perf_counter()
        plan, active = make_plan(self.shards, nodes, config, generator, dp is not None)
        owner = nodes % self.workers
        jobs, blocks = [], []
        for w, actor in enumerate(self._actors):
            pick = (owner == w).nonzero().squeeze(1)
            if len(pick) == 0:
                continue
            ids = nodes[pick]
            jobs.append(actor.train.remote(rows[positions[pick]].cpu(), ids.cpu(), plan[pick].cpu(),
                                           None if active is None else active[pick].cpu(),
                                           config, strategy, dp, noise_seed))
            blocks.append(positions[pick])
        results = ray.get(jobs)
        for where, (trained, _) in zip(blocks, results):
            rows[where] = trained.to(rows.device)
        # the slowest actor's training bounds the round; the rest is planning, shipping rows and
        # plans out and back, and Ray's scheduling: the backend's communication overhead
        self.timings.append({"wall_s": time.perf_counter() - start,
                             "train_s": max(seconds for _, seconds in results)})

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False
