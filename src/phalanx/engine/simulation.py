"""The simulated round, for star and gossip networks, with every node in one process.

All nodes' models are the rows of one ``(n, d)`` tensor on the device. A round:

1. **Faults and sampling.** The fault schedule says which nodes (and, in a star, whether the
   server) are up; each live node takes part with probability ``participation`` (star: the
   server samples that share of the live nodes).
2. **Local training** of every participant, batched or looped (:mod:`phalanx.train`).
3. **Attack.** Malicious participants replace what they send with what their update attack
   crafts, per receiver (:mod:`phalanx.attacks`).
4. **Exchange and aggregation.** Star: the server aggregates the participants' updates and adds
   the result to the global model, which every participant receives. Gossip: every participant
   aggregates, relative to its own model, its own row and its participating neighbours'
   messages, all receivers at once as ``(m, k, d)`` rows with a mask, in chunks of receivers
   sized to a memory budget.
5. **Metrics.** Test accuracy and loss (star: the global model; gossip: mean, min and max over
   honest live nodes), the consensus distance between honest live models, availability, time.

Availability is the share of honest nodes that are up and connected to a working aggregation this
round: in a star, all live honest nodes while the server is up and none when it is down; in
gossip, the live honest nodes with at least one live neighbour whose rule accepted the rows they
had. A receiver whose rows fall below its rule's bound keeps its own model and the round logs an
availability event.

Consensus distance is ``sqrt(mean_i ||x_i - mean_j x_j||^2)`` over honest live nodes, the
quantity whose square Kong et al. 2021 ("Consensus control for decentralized deep learning",
eq. 2) track.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from phalanx.aggregate import Aggregator
from phalanx.attacks import AttackView, UpdateAttack
from phalanx.core.seeding import generator
from phalanx.engine.faults import FaultSchedule
from phalanx.models.flat import FlatModel
from phalanx.network import Gossip, Star
from phalanx.train import SGDConfig, Shards, train_nodes

KNOWS_HONEST = ("honest_updates", "defense")


@dataclass
class Simulation:
    flat_model: FlatModel
    initial: torch.Tensor  # (d,) the common starting model
    shards: Shards
    test_x: torch.Tensor
    test_y: torch.Tensor
    topology: Star | Gossip
    aggregator: Aggregator
    malicious: torch.Tensor  # (n,) bool
    faults: FaultSchedule
    sgd: SGDConfig
    seed: int
    update_attack: UpdateAttack | None = None
    participation: float = 1.0
    weighting: Literal["samples", "uniform"] = "samples"
    strategy: str = "auto"
    chunk_size: int = 0
    workers: int = 0
    eval_every: int = 1
    memory_budget_bytes: int = 256 << 20
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        device = self.initial.device
        n = self.shards.num_nodes
        self.flat_model.to(device)
        self.rows = self.initial.expand(n, -1).clone()
        self.global_row = self.initial.clone() if self.topology.kind == "star" else None
        self.honest = ~self.malicious.to(device)
        if self.topology.kind == "gossip":
            table = self.topology.table()
            self.table_index = table.index.to(device)
            self.table_mask = table.mask.to(device)
            self.table_weight = table.weight.to(device)
        self._last_eval: dict = {}

    # -- a round ----------------------------------------------------------------------------
    def run(self, rounds: int, start: int = 1) -> Iterator[dict]:
        """Run rounds ``start .. rounds``, yielding one metrics record per round."""
        t_start = time.perf_counter()
        for r in range(start, rounds + 1):
            t0 = time.perf_counter()
            info = self.step(r)
            if r % self.eval_every == 0 or r == rounds:
                info.update(self.evaluate(self.faults.alive(r)))
            else:
                info.update({k: None for k in ("accuracy", "loss", "accuracy_min", "accuracy_max",
                                               "consensus_distance")})
            if self.rows.device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            yield {"round": r, **info, "wall_time_s": now - t0, "elapsed_s": now - t_start}

    def step(self, r: int) -> dict:
        """Run round ``r`` (train, attack, exchange, aggregate) without evaluating."""
        return self._star_round(r) if self.topology.kind == "star" else self._gossip_round(r)

    def _sample(self, r: int, alive: torch.Tensor) -> torch.Tensor:
        """Participants this round (sorted node ids).

        Star: the server picks exactly ``max(1, round(participation * live))`` live nodes
        uniformly without replacement (FedAvg's C-fraction, McMahan et al. 2017, Algorithm 1).
        Gossip has no one to pick: each live node takes part independently with probability
        ``participation``.
        """
        live = alive.nonzero().squeeze(1)
        if self.participation >= 1.0 or len(live) == 0:
            return live
        g = generator(self.seed, "round", r, "participation")
        if self.topology.kind == "star":
            m = max(1, round(self.participation * len(live)))
            return live[torch.randperm(len(live), generator=g)[:m]].sort().values
        draw = torch.rand(alive.shape[0], generator=g) < self.participation
        return (alive & draw).nonzero().squeeze(1)

    def _train(self, r: int, nodes: torch.Tensor) -> None:
        g = generator(self.seed, "round", r, "shuffle")
        train_nodes(self.flat_model, self.rows, nodes.to(self.rows.device), self.shards, self.sgd,
                    g, self.strategy, self.chunk_size, self.workers)

    def _attack_view(self, r, receivers, own, honest_updates) -> AttackView:
        knows = self.update_attack.knowledge in KNOWS_HONEST
        return AttackView(
            round=r, own_updates=own, receivers=receivers,
            generator=generator(self.seed, "round", r, "attack", device=self.rows.device),
            honest_updates=honest_updates if knows else None,
            defense=self.aggregator if self.update_attack.knowledge == "defense" else None,
        )

    def _star_round(self, r: int) -> dict:
        alive = self.faults.alive(r)
        part = self._sample(r, alive).to(self.rows.device) if self.faults.server_alive(r) else alive[:0]

        def outcome(available: bool) -> dict:
            n_up = int((alive.to(self.honest.device) & self.honest).sum()) if available else 0
            return {"availability": n_up / max(1, int(self.honest.sum())),
                    "alive": int(alive.sum()), "participants": len(part)}

        if len(part) == 0:  # the server is down, or no live node to sample
            return outcome(False)
        if not bool(self.aggregator.admissible(torch.tensor([len(part)]))[0]):
            self.events.append({"round": r, "kind": "availability", "target": "server",
                                "text": f"server has {len(part)} rows, needs "
                                        f"{self.aggregator.requirement()}"})
            return outcome(False)
        self.rows[part] = self.global_row
        self._train(r, part)
        updates = self.rows[part] - self.global_row
        bad = self.malicious.to(part.device)[part]
        if self.update_attack is not None and bool(bad.any()):
            view = self._attack_view(r, torch.tensor([-1]), updates[bad], updates[~bad])
            updates[bad] = self.update_attack.craft(view)[:, 0, :].to(updates.dtype)
        self.global_row += self.aggregator(updates, self._weights(part))
        return outcome(True)

    def _weights(self, part: torch.Tensor) -> torch.Tensor | None:
        if self.weighting == "uniform" or not self.aggregator.accepts_weights:
            return None
        return self.shards.sizes[part].to(self.rows.dtype)

    def _gossip_round(self, r: int) -> dict:
        device = self.rows.device
        alive = self.faults.alive(r).to(device)
        part = self._sample(r, alive.cpu()).to(device)
        sending = torch.zeros_like(alive)
        sending[part] = True
        before = self.rows[part].clone()
        self._train(r, part)
        bad = self.malicious.to(device)[part]
        own = self.rows[part[bad]] - before[bad]
        honest_updates = self.rows[part[~bad]] - before[~bad]
        mal_rank = torch.full((self.rows.shape[0],), -1, dtype=torch.int64, device=device)
        mal_rank[part[bad]] = torch.arange(int(bad.sum()), device=device)
        mal_base = before[bad]
        attack = self.update_attack if (self.update_attack is not None and bool(bad.any())) else None

        # what every malicious participant sends to every receiver: (n_bad, 1 or len(part), d),
        # crafted once per round so that it cannot depend on how receivers are chunked
        crafted = None
        if attack is not None:
            crafted = attack.craft(self._attack_view(r, part, own, honest_updates)).to(self.rows.dtype)
            if crafted.shape[1] not in (1, len(part)):
                raise ValueError(f"{type(attack).__name__} returned {crafted.shape[1]} receivers, "
                                 f"expected 1 or {len(part)}")
        live_nb = (self.table_mask & alive[self.table_index])[:, 1:].any(1)

        n, k = self.table_index.shape
        d = self.rows.shape[1]
        chunk = max(1, self.memory_budget_bytes // (k * d * self.rows.element_size() * 3))
        new_rows, connected = [], []
        for start in range(0, len(part), chunk):
            recv = part[start : start + chunk]
            idx = self.table_index[recv]
            mask = self.table_mask[recv] & sending[idx]
            msgs = self.rows[idx]
            if crafted is not None:
                rank = mal_rank[idx]
                is_bad = (rank >= 0) & mask
                is_bad[:, 0] = False  # a node's own slot is its own model
                if bool(is_bad.any()):
                    cols = (start + torch.arange(len(recv), device=device))[:, None] \
                        if crafted.shape[1] > 1 else torch.zeros(len(recv), 1, dtype=torch.int64, device=device)
                    forged = mal_base[rank.clamp(min=0)] + crafted[rank.clamp(min=0), cols]
                    msgs = torch.where(is_bad[..., None], forged, msgs)
            own_rows = self.rows[recv]
            counts = mask.sum(1)
            ok = self.aggregator.admissible(counts)
            out = self.aggregator.aggregate(msgs - own_rows[:, None, :], mask,
                                            self.table_weight[recv], None)
            new_rows.append(own_rows + torch.where(ok[:, None], out, torch.zeros_like(out)))
            connected.append(ok & live_nb[recv])
            starved = (~ok).nonzero().squeeze(1)
            for i in starved.tolist():
                self.events.append({"round": r, "kind": "availability", "target": int(recv[i]),
                                    "text": f"node {int(recv[i])} has {int(counts[i])} rows, needs "
                                            f"{self.aggregator.requirement()}; keeps its model"})
        if new_rows:
            self.rows[part] = torch.cat(new_rows)
        reach = torch.zeros_like(alive)
        if connected:
            reach[part] = torch.cat(connected)
        # nodes that sat out this round's sampling but are up and have a live neighbour count too
        reach |= alive & ~sending & live_nb
        available = int((reach & self.honest).sum())
        return {"availability": available / max(1, int(self.honest.sum())),
                "alive": int(alive.sum()), "participants": len(part)}

    # -- metrics ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, alive: torch.Tensor | None = None) -> dict:
        """Test metrics: the global model (star) or the honest live nodes' models (gossip)."""
        if self.topology.kind == "star":
            acc, loss = self._eval_rows(self.global_row[None])
            a, l_ = float(acc[0]), float(loss[0])
            return {"accuracy": a, "loss": l_, "accuracy_min": a, "accuracy_max": a,
                    "consensus_distance": None}
        up = torch.ones_like(self.honest) if alive is None else alive.to(self.honest.device)
        nodes = (self.honest & up).nonzero().squeeze(1)
        if len(nodes) == 0:
            return {"accuracy": None, "loss": None, "accuracy_min": None, "accuracy_max": None,
                    "consensus_distance": None}
        rows = self.rows[nodes]
        acc, loss = self._eval_rows(rows)
        dist = (rows - rows.mean(0)).pow(2).sum(1).mean().sqrt()
        return {"accuracy": float(acc.mean()), "loss": float(loss.mean()),
                "accuracy_min": float(acc.min()), "accuracy_max": float(acc.max()),
                "consensus_distance": float(dist)}

    def _eval_rows(self, rows: torch.Tensor, batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        fm, module = self.flat_model, self.flat_model.module
        accs, losses = [], []
        for row in rows:
            fm.flat.copy_(row)
            correct, total_loss = 0, 0.0
            for s in range(0, len(self.test_y), batch):
                logits = module(self.test_x[s : s + batch])
                y = self.test_y[s : s + batch]
                correct += int((logits.argmax(1) == y).sum())
                total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            accs.append(correct / len(self.test_y))
            losses.append(total_loss / len(self.test_y))
        return torch.tensor(accs), torch.tensor(losses)

