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
   honest live nodes), the consensus distance between honest live models, availability, time;
   with a targeted data attack, the attack success rate (:mod:`phalanx.engine.success`).

A :class:`~phalanx.engine.guard.Guard` (screens such as FoolsGold and reputation, the
validators' quarantine, audits, a Sybil swarm) hooks into four points of the round: who is
present, each receiver's rows before its chain, the evidence after it, and the round's end.

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
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from phalanx.aggregate import Aggregator, Chain, Context
from phalanx.attacks import AttackView, SuccessSet, UpdateAttack
from phalanx.core.seeding import derive_seed, generator
from phalanx.defenses import cap_claims, finite_rows, shape_ok
from phalanx.engine.faults import FaultSchedule
from phalanx.engine.guard import Guard
from phalanx.engine.pipeline import aggregate_relative, declared_f, evaluate_rows
from phalanx.engine.secure import SecureAggregation, exposed_honest
from phalanx.engine.observer import RoundObserver
from phalanx.engine.success import success_rates
from phalanx.models.flat import FlatModel
from phalanx.network import Gossip, Star
from phalanx.privacy.client import clip_updates, gaussian
from phalanx.privacy.counts import CountRelease
from phalanx.privacy.plan import PrivacyPlan
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
    weighting: Literal["samples", "uniform", "noised"] = "samples"  # star and committee weights (public log: not samples)
    strategy: str = "auto"
    chunk_size: int = 0
    workers: int = 0
    eval_every: int = 1
    memory_budget_bytes: int = 256 << 20
    declared_f: int | None = None  # what the rule assumes: a count per receiver ...
    declared_share: float | None = None  # ... or a share of the rows it aggregates
    weight_cap: float | None = 3.0  # claimed (or released) sample counts capped at this x the median
    count_release: CountRelease | None = None  # weighting noised: each node's count, released once (privacy/counts.py)
    root_shards: Shards | None = None  # the star server's trusted root data (FLTrust)
    privacy: PrivacyPlan | None = None  # differential privacy: mechanism, noise, spend per node
    keep_released: bool = False  # keep what each node last sent and the model it trained from
    secure: SecureAggregation | None = None  # star: bucketed secure aggregation (engine/secure.py)
    observer: RoundObserver | None = None  # told what each round sends and aggregates (the ledger)
    trainer: Any = None  # trains elsewhere (engine/ray_backend.py RayTraining); None: in this process
    guard: Guard | None = None  # screens, reputation, quarantine, audits, swarm (engine/guard.py)
    success: SuccessSet | None = None  # a targeted attack's test inputs and target (engine/success.py)
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        device = self.initial.device
        n = self.shards.num_nodes
        self.flat_model.to(device)
        self.central = self.topology.kind in ("star", "committee")  # one global model
        # gossip: every node's model, (n, d); star and committee: only the round's participants'
        # models, (m, d) (empty before the first round), so that memory grows with the
        # participants, not the population: a central topology keeps nothing per node between rounds
        self.rows = self.initial.expand(0 if self.central else n, -1).clone()
        self.participants = torch.zeros(0, dtype=torch.int64, device=device)  # the last round's (central: self.rows')
        self.global_row = self.initial.clone() if self.central else None
        self.honest = ~self.malicious.to(device)
        if not isinstance(self.aggregator, Chain):
            self.aggregator = Chain([], self.aggregator)
        self.rejected = torch.zeros(n, dtype=torch.int64)  # evidence: rows dropped, per sender
        self.previous: torch.Tensor | None = None  # a stateful rule's last output, per receiver
        self.committee = None
        if self.topology.kind == "committee":
            from phalanx.engine.committee_round import CommitteeRound

            if self.aggregator.needs_root or self.aggregator.stateful:
                raise ValueError(f"committee: {self.aggregator.name()} needs a root update or state that "
                                 "validators cannot recompute from the batch alone")
            if self.secure is not None or self.privacy is not None and self.privacy.mechanism == "central":
                raise ValueError("committee: validators recompute the aggregate from the revealed updates; "
                                 "secure aggregation and central DP hide them")
            self.committee = CommitteeRound(self.topology, self.aggregator, self.seed)
        if (self.weighting == "noised") != (self.count_release is not None):
            raise ValueError("weighting noised needs a count release (privacy/counts.py), and only it uses one")
        if self.aggregator.needs_root and self.topology.kind == "star" and self.root_shards is None:
            raise ValueError(f"{self.aggregator.name()} needs the server's root data (root_shards)")
        if self.secure is not None and self.topology.kind != "star":
            raise ValueError("secure aggregation runs between a star's server and its nodes")
        if self.secure is not None and self.privacy is not None and self.privacy.mechanism == "central":
            raise ValueError("central DP under secure aggregation: the server never sees the sum "
                             "before it is revealed; use mechanism distributed")
        if self.privacy is not None and self.privacy.mechanism == "distributed" and self.secure is None:
            raise ValueError("distributed noise is added under secure aggregation: set secure_aggregation")
        if self.privacy is not None and self.privacy.mechanism == "central":
            if self.topology.kind != "star":
                raise ValueError("central DP needs a server that adds the noise: use a star, or "
                                 "local DP or DP-SGD in gossip")
            if self.aggregator.name() != "mean":
                raise ValueError(f"central DP noises the mean of clipped updates; the defense "
                                 f"{self.aggregator.name()} would see the updates before the "
                                 "noise. Use local DP or DP-SGD with a robust rule")
        self.out_of_budget = torch.zeros(n, dtype=torch.bool)  # honest nodes that have stopped
        # for the leakage attacks (range/leakage.py): per node, the model it last sent (its base
        # plus the update as it left the node) and that base; rounds with nothing sent keep NaN
        self.released = self.released_base = None
        if self.keep_released:
            self.released = self.initial.new_full((n, self.initial.shape[0]), float("nan"))
            self.released_base = torch.full_like(self.released, float("nan"))
        if self.topology.kind == "gossip":
            table = self.topology.table()
            self.table_index = table.index.to(device)
            self.table_mask = table.mask.to(device)
            self.table_weight = table.weight.to(device)
            degree = self.table_mask[:, 1:].sum(1)
            self.gossip_f = self._f_for(degree)
        self._last_eval: dict = {}
        # star: the global model's last change (zero before the first round); gossip has no public model
        self.last_delta = torch.zeros_like(self.initial) if self.central else None
        if self.guard is not None and (self.secure is not None or (
                self.privacy is not None and self.privacy.mechanism == "central")):
            raise ValueError("screens and reputation read each update; secure aggregation and central "
                             "DP hide them from the server")

    def _f_for(self, rows: torch.Tensor) -> torch.Tensor:
        """Declared f for receivers that aggregate from ``rows`` others (count, or share rounded up)."""
        return declared_f(rows, self.declared_f, self.declared_share)

    # -- a round ----------------------------------------------------------------------------
    def run(self, rounds: int, start: int = 1) -> Iterator[dict]:
        """Run rounds ``start .. rounds``, yielding one metrics record per round."""
        t_start = time.perf_counter()
        for r in range(start, rounds + 1):
            t0 = time.perf_counter()
            if self.privacy is not None and bool(self.out_of_budget[self.honest.cpu()].all()):
                self.events.append({"round": r, "kind": "privacy", "target": "all",
                                    "text": f"every honest node has spent its privacy budget "
                                            f"({self.privacy.budget:g}): training stops"})
                return
            info = self.step(r)
            if self.privacy is not None or self.count_release is not None:
                info.update(self._privacy_spent())
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
        if self.observer is not None:
            self.observer.round_started(self, r)
        info = self._star_round(r) if self.central else self._gossip_round(r)
        if self.guard is not None:
            info.update(self.guard.close_round(r))
        if self.observer is not None:
            info.update(self.observer.round_finished(self, r, info))
        return info

    # -- privacy ----------------------------------------------------------------------------
    def _privacy_spent(self) -> dict:
        """Epsilon spent so far over the honest nodes (training, and a noised count's release): the
        largest and the mean."""
        honest = self.honest.cpu().nonzero().squeeze(1)
        eps = (self.privacy.epsilons(honest) if self.privacy is not None
               else self.count_release.account.epsilons(honest.tolist()))
        return {"epsilon": max(eps, default=0.0), "epsilon_mean": sum(eps) / max(len(eps), 1)}

    def _with_budget(self, r: int, alive: torch.Tensor) -> torch.Tensor:
        """``alive`` without the honest nodes whose next round would pass their privacy budget."""
        if self.privacy is None or self.privacy.budget is None:
            return alive
        honest = (alive & self.honest.cpu()).nonzero().squeeze(1)
        spent = honest[~self.privacy.within_budget(honest)]
        fresh = spent[~self.out_of_budget[spent]]
        if len(fresh):
            self.out_of_budget[fresh] = True
            self.events.append({"round": r, "kind": "privacy", "target": fresh.tolist(),
                                "text": f"node(s) {fresh.tolist()} stop: one more round would pass "
                                        f"the privacy budget epsilon = {self.privacy.budget:g}"})
        alive = alive.clone()
        alive[spent] = False
        return alive

    def _privatize(self, r: int, senders: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        """Local DP: each honest sender's update clipped and noised before it leaves the node."""
        std = self.privacy.noise_std(len(senders))
        clipped, _ = clip_updates(updates, self.privacy.clip)
        noise = gaussian(updates.shape, std, generator(self.seed, "round", r, "local-dp"), updates)
        return clipped + noise

    def _central_mean(self, r: int, updates: torch.Tensor) -> torch.Tensor:
        """Central DP-FedAvg: the mean of the clipped updates plus the server's Gaussian noise."""
        plan = self.privacy
        std = plan.noise_std(len(updates))
        clipped, norms = clip_updates(updates, plan.clip)
        noise = gaussian(updates.shape[1:], std, generator(self.seed, "round", r, "central-dp"),
                         updates)
        plan.adapt_clip(norms, generator(self.seed, "round", r, "clip-count"))
        return (clipped.sum(0) + noise) / len(updates)

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
        if self.central:
            m = max(1, round(self.participation * len(live)))
            return live[torch.randperm(len(live), generator=g)[:m]].sort().values
        draw = torch.rand(alive.shape[0], generator=g) < self.participation
        return (alive & draw).nonzero().squeeze(1)

    def _train(self, r: int, nodes: torch.Tensor) -> None:
        """Train ``nodes``: gossip, their rows of ``self.rows``; star, ``self.rows`` holds exactly
        the participants, in the order of ``nodes``."""
        g = generator(self.seed, "round", r, "shuffle")
        dp = self.privacy.dpsgd() if self.privacy is not None else None
        noise_seed = derive_seed(self.seed, "round", r, "dp-sgd-noise")
        ids = nodes.to(self.rows.device)
        positions = ids if self.topology.kind == "gossip" else torch.arange(len(ids), device=ids.device)
        if self.trainer is not None:
            self.trainer.train(self.rows, positions, self.sgd, g, self.strategy, dp, noise_seed, ids=ids)
        else:
            train_nodes(self.flat_model, self.rows, positions, self.shards, self.sgd, g, self.strategy,
                        self.chunk_size, self.workers, dp=dp, noise_seed=noise_seed, ids=ids)
        if self.privacy is not None:
            self.privacy.record(nodes.cpu())

    def _attack_view(self, r, receivers, own, honest_updates, declared_f, n_rows, own_counts) -> AttackView:
        knows = self.update_attack.knowledge in KNOWS_HONEST
        knows_defense = self.update_attack.knowledge == "defense"
        return AttackView(
            round=r, own_updates=own, receivers=receivers,
            generator=generator(self.seed, "round", r, "attack", device=self.rows.device),
            honest_updates=honest_updates if knows else None,
            defense=self.aggregator if knows_defense else None,
            declared_f=declared_f if knows_defense else 0, n_rows=n_rows, own_counts=own_counts,
            last_delta=self.last_delta,
        )

    def _reject(self, r: int, senders: torch.Tensor, why: str, receivers: torch.Tensor | None = None) -> int:
        """Count dropped rows as evidence against their senders; log one event per round and cause."""
        if len(senders) == 0:
            return 0
        if self.observer is not None:
            self.observer.rejected(self, r, senders, why, receivers)
        if self.guard is not None:
            self.guard.invalid(receivers, senders)
        counts = torch.bincount(senders.cpu(), minlength=len(self.rejected))
        self.rejected += counts
        who = counts.nonzero().squeeze(1).tolist()
        self.events.append({"round": r, "kind": "evidence", "target": who,
                            "text": f"dropped {len(senders)} {why} row(s) from node(s) {who}"})
        return len(senders)

    def _star_round(self, r: int) -> dict:
        alive = self.faults.alive(r)
        if self.guard is not None:
            alive = self.guard.present(r, alive)
        eligible = self._with_budget(r, alive)
        part = self._sample(r, eligible).to(self.rows.device) if self.faults.server_alive(r) else alive[:0]
        rejected = 0

        def outcome(available: bool) -> dict:
            n_up = int((alive.to(self.honest.device) & self.honest).sum()) if available else 0
            return {"availability": n_up / max(1, int(self.honest.sum())),
                    "alive": int(alive.sum()), "participants": len(part), "rejected_rows": rejected}

        if len(part) == 0:  # the server is down, or no live node to sample
            return outcome(False)
        f = int(self._f_for(torch.tensor([len(part)]))[0])
        if self._refused(r, len(part), f):
            return outcome(False)
        self.rows = self.global_row.expand(len(part), -1).clone()  # the participants, in part's order
        self.participants = part
        self._train(r, part)
        updates = self.rows - self.global_row
        claims = self.shards.sizes[part].to(self.rows.dtype)
        bad = self.malicious.to(part.device)[part]
        if self.privacy is not None and self.privacy.mechanism == "local" and bool((~bad).any()):
            updates[~bad] = self._privatize(r, part[~bad], updates[~bad])
        if self.released is not None:
            self.released[part] = self.global_row + updates
            self.released_base[part] = self.global_row
        keep = torch.ones(len(part), dtype=torch.bool, device=part.device)
        if self.update_attack is not None and bool(bad.any()):
            view = self._attack_view(r, torch.tensor([-1]), updates[bad], updates[~bad], f, len(part),
                                     self.shards.sizes[part][bad])
            crafted = self.update_attack.craft(view)
            if shape_ok(crafted, (int(bad.sum()), 1, updates.shape[1])):
                updates[bad] = crafted[:, 0, :].to(updates.dtype)
            else:  # a sender that sends the wrong shape sends nothing usable
                keep &= ~bad
                rejected += self._reject(r, part[bad], f"wrong-shape ({tuple(crafted.shape)})")
            claimed = self.update_attack.claims(view)
            if claimed is not None:
                claims[bad] = torch.as_tensor(claimed, dtype=claims.dtype, device=claims.device)
        if self.observer is not None:
            self.observer.star_sent(self, r, part, updates, claims)
        finite = finite_rows(updates)
        rejected += self._reject(r, part[keep & ~finite], "non-finite")
        keep &= finite
        if rejected and self._refused(r, int(keep.sum()), f):
            return outcome(False)
        updates, claims = updates[keep], claims[keep]
        weights = None
        if self.weighting != "uniform" and self.aggregator.accepts_weights:
            public = claims if self.count_release is None else self.count_release.weights(
                part[keep], claims, ~bad[keep])
            weights, _ = cap_claims(public, self.weight_cap)
        noise = None
        if self.guard is not None:
            senders, received = part[keep], updates
            self.guard.note_claims(senders, claims)
            ones = torch.ones(1, len(updates), dtype=torch.bool, device=updates.device)
            screened, admitted, weights, noise = self.guard.screen(
                r, None, senders[None], updates[None], ones, None if weights is None else weights[None],
                self.aggregator.accepts_weights, base=self.global_row[None])
            updates = screened[0][admitted[0]]
            weights = None if weights is None else weights[0][admitted[0]]
            if self._refused(r, len(updates), f):
                return outcome(False)
        context = Context(
            f=torch.tensor([f], device=updates.device),
            root=self._root_update(r)[None] if self.aggregator.needs_root else None,
            previous=self.previous if self.aggregator.stateful else None,
            generator=generator(self.seed, "round", r, "aggregate", device=updates.device))
        mask = torch.ones(1, len(updates), dtype=torch.bool, device=updates.device)
        extra = {}
        if self.secure is not None:
            out, extra = self._bucketed(r, part[keep], updates, bad[keep], f, context)
            if out is None:
                return {**outcome(False), **extra}
        elif self.privacy is not None and self.privacy.mechanism == "central":
            out = self._central_mean(r, updates)[None]  # uniform weights: bounded sensitivity
        elif self.committee is not None:  # validators certify the aggregate (engine/committee_round.py)
            out, extra, included = self.committee.certify(r, part[keep], updates, f,
                                                          int(context.generator.initial_seed()))
            weights = None
            if out is None:
                return {**outcome(False), **extra}
            kept = keep.nonzero()[:, 0]
            keep[kept[~included.to(kept.device)]] = False  # a censoring sequencer dropped these
            updates = updates[included.to(updates.device)]
        else:
            out = self.aggregator.aggregate(updates[None], mask,
                                            None if weights is None else weights[None], context)
        if self.observer is not None:
            self.observer.star_aggregated(self, r, part[keep], updates, weights, context, out)
        if self.aggregator.stateful:
            self.previous = out.clone()
        if self.guard is not None:
            self.guard.observe(r, None, senders[None], received[None], ones, out, base=self.global_row)
            if noise is not None:
                g = generator(self.seed, "round", r, "screen-noise", device=out.device)
                out = out + noise[:, None] * torch.randn(out.shape, generator=g, device=out.device)
        self.global_row += out[0]
        self.last_delta = out[0].clone()
        return {**outcome(True), **extra}

    def _bucketed(self, r: int, senders: torch.Tensor, updates: torch.Tensor, malicious: torch.Tensor,
                  f: int, context: Context) -> tuple[torch.Tensor | None, dict]:
        """Bucketed secure aggregation: the chain over the bucket means that SecAgg reveals.

        At most ``f`` buckets hold a malicious node, so the chain declares ``min(f, buckets)``.
        Returns ``(None, ...)`` when the chain refuses that many buckets (an availability event).
        """
        sec = self.secure
        buckets = sec.buckets(len(updates), sec.bucket_seed(r, sec.commitments(r, senders, updates)))
        extra = {"buckets": len(buckets), "exposed": exposed_honest(buckets, malicious)}
        f_b = min(f, len(buckets))
        if self._refused(r, len(buckets), f_b):
            return None, extra
        plan = self.privacy
        if plan is not None and plan.mechanism == "distributed":
            noise = plan.distributed
            honest = ~malicious
            updates = updates.clone()
            updates[honest], _ = clip_updates(updates[honest], plan.clip)
            means, _ = sec.reveal(r, updates, buckets, noise_variance=noise.variance,
                                  frac_bits=noise.frac_bits, clip=plan.clip, adds_noise=honest)
            for bucket in buckets:
                members = torch.as_tensor(bucket, device=senders.device)
                plan.record_bucket(senders[members][honest[members]].tolist(), len(bucket))
        else:
            means, _ = sec.reveal(r, updates, buckets)
        if self.observer is not None:
            self.observer.star_revealed(self, r, senders, buckets, means, f_b)
        mask = torch.ones(1, len(buckets), dtype=torch.bool, device=updates.device)
        context = replace(context, f=torch.tensor([f_b], device=updates.device))
        return self.aggregator.aggregate(means[None], mask, None, context), extra

    def _refused(self, r: int, count: int, f: int) -> bool:
        """Whether the chain refuses ``count`` rows with declared ``f``; logs why."""
        problem = self.aggregator.failing(count, f)
        if problem is not None:
            self.events.append({"round": r, "kind": "availability", "target": "server",
                                "text": f"server: {problem}; the global model is kept"})
        return problem is not None

    def _root_update(self, r: int) -> torch.Tensor:
        """The server's trusted update: one local training run on its root data (FLTrust)."""
        row = self.global_row[None].clone()
        train_nodes(self.flat_model, row, torch.zeros(1, dtype=torch.int64, device=row.device),
                    self.root_shards, self.sgd, generator(self.seed, "round", r, "root"),
                    "loop", 0, 1)
        return row[0] - self.global_row

    def _gossip_round(self, r: int) -> dict:
        device = self.rows.device
        alive = self.faults.alive(r).to(device)
        if self.guard is not None:
            alive = self.guard.present(r, alive)
        part = self._sample(r, self._with_budget(r, alive.cpu())).to(device)
        self.participants = part
        sending = torch.zeros_like(alive)
        sending[part] = True
        before = self.rows[part].clone()
        self._train(r, part)
        bad = self.malicious.to(device)[part]
        own = self.rows[part[bad]] - before[bad]
        honest_updates = self.rows[part[~bad]] - before[~bad]
        sent = self.rows  # what each node's neighbours receive from it
        if self.privacy is not None and self.privacy.mechanism == "local" and len(honest_updates):
            honest_updates = self._privatize(r, part[~bad], honest_updates)
            sent = self.rows.clone()
            sent[part[~bad]] = before[~bad] + honest_updates
        if self.released is not None:
            self.released[part] = sent[part]
            self.released_base[part] = before
        mal_rank = torch.full((self.rows.shape[0],), -1, dtype=torch.int64, device=device)
        mal_rank[part[bad]] = torch.arange(int(bad.sum()), device=device)
        mal_base = before[bad]
        attack = self.update_attack if (self.update_attack is not None and bool(bad.any())) else None
        rejected = 0

        # what every malicious participant sends to every receiver: (n_bad, 1 or len(part), d),
        # crafted once per round so that it cannot depend on how receivers are chunked
        crafted = None
        if attack is not None:
            n_rows = int(self.table_mask.sum(1).max())
            view = self._attack_view(r, part, own, honest_updates, int(self.gossip_f.max()), n_rows,
                                     self.shards.sizes[part[bad]])
            crafted = attack.craft(view)
            d = self.rows.shape[1]
            if not any(shape_ok(crafted, (len(own), w, d)) for w in (1, len(part))):
                rejected += self._reject(r, part[bad], f"wrong-shape ({tuple(crafted.shape)})")
                crafted, sending[part[bad]] = None, False  # what they send is unusable
            else:
                crafted = crafted.to(self.rows.dtype)
        if self.observer is not None:
            self.observer.gossip_sent(self, r, part, sent, before, crafted)
        live_nb = (self.table_mask & alive[self.table_index])[:, 1:].any(1)
        chain = self.aggregator
        if chain.stateful and self.previous is None:
            self.previous = torch.zeros_like(self.rows)
        agg_gen = generator(self.seed, "round", r, "aggregate", device=device)

        n, k = self.table_index.shape
        d = self.rows.shape[1]
        # which messages are finite: once per honest sender, and per forged message
        finite_node = finite_rows(sent)
        chunk = max(1, self.memory_budget_bytes // (k * d * self.rows.element_size() * 3))
        new_rows, connected = [], []
        for start in range(0, len(part), chunk):
            recv = part[start : start + chunk]
            idx = self.table_index[recv]
            mask = self.table_mask[recv] & sending[idx]
            msgs = sent[idx]
            if sent is not self.rows:
                msgs[:, 0] = self.rows[recv]  # a node's own slot is its own model, not what it sent
            finite = finite_node[idx]
            if crafted is not None:
                rank = mal_rank[idx]
                is_bad = (rank >= 0) & mask
                is_bad[:, 0] = False  # a node's own slot is its own model
                if bool(is_bad.any()):
                    which = is_bad.nonzero(as_tuple=True)
                    sender = rank[which]
                    col = (start + which[0]) if crafted.shape[1] > 1 else torch.zeros_like(sender)
                    forged = mal_base[sender] + crafted[sender, col]
                    msgs[which] = forged
                    finite[which] = finite_rows(forged)
            bad_rows = mask & ~finite
            bad_rows[:, 0] = False  # a receiver does not reject itself
            if bool(bad_rows.any()):
                rejected += self._reject(r, idx[bad_rows], "non-finite", recv[bad_rows.nonzero()[:, 0]])
                mask = mask & ~bad_rows
            own_rows = self.rows[recv]
            # the frame rows are given in: relative to the receiver's trained model, or, for a
            # rule that reads a trusted root update (FLTrust), to its model before this round,
            # so that its own row is its own update and serves as the root
            ref = before[start : start + chunk] if chain.needs_root else own_rows
            weights = self.table_weight[recv] if chain.accepts_weights else None
            noise, relative = None, False
            if self.guard is not None:
                msgs -= ref[:, None, :]
                relative, received, got_mask = True, msgs, mask
                msgs, mask, weights, noise = self.guard.screen(r, recv, idx, msgs, mask, weights,
                                                               chain.accepts_weights, base=ref)
            counts = mask.sum(1)
            f_r = self.gossip_f[recv]
            ok = chain.admissible(counts, f_r)
            if self.observer is not None:
                self.observer.gossip_chunk(self, r, start, recv, idx, mask, msgs, ref, ok, f_r, agg_gen)
            def screened(got: torch.Tensor, sel: torch.Tensor, pick) -> torch.Tensor:
                """The guard sees what each receiver aggregated; weak DP noise goes on the model."""
                if self.guard is None:
                    return got
                self.guard.observe(r, recv[sel], idx[sel], pick(received), pick(got_mask), got)
                if noise is not None:
                    g = generator(self.seed, "round", r, "screen-noise", start, device=got.device)
                    got = got + pick(noise)[:, None] * torch.randn(got.shape, generator=g, device=got.device)
                return got

            # msgs is this chunk's own gathered copy: the shared step shifts it in place
            new, got, sel = aggregate_relative(chain, msgs, mask, ref, own_rows, f_r, ok, weights,
                                               self.previous[recv] if chain.stateful else None, agg_gen,
                                               relative=relative, post=screened)
            if chain.stateful and got is not None:
                self.previous[recv[sel]] = got
            new_rows.append(new)
            connected.append(ok & live_nb[recv])
            starved = (~ok).nonzero().squeeze(1)
            for i in starved.tolist():
                problem = chain.failing(int(counts[i]), int(f_r[i]))
                self.events.append({"round": r, "kind": "availability", "target": int(recv[i]),
                                    "text": f"node {int(recv[i])}: {problem}; keeps its model"})
        if new_rows:
            self.rows[part] = torch.cat(new_rows)
        reach = torch.zeros_like(alive)
        if connected:
            reach[part] = torch.cat(connected)
        # nodes that sat out this round's sampling but are up and have a live neighbour count too
        reach |= alive & ~sending & live_nb
        available = int((reach & self.honest).sum())
        return {"availability": available / max(1, int(self.honest.sum())),
                "alive": int(alive.sum()), "participants": len(part), "rejected_rows": rejected}

    # -- metrics ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, alive: torch.Tensor | None = None) -> dict:
        """Test metrics: the global model (star, committee) or the honest live nodes' models (gossip)."""
        if self.central:
            acc, loss = self._eval_rows(self.global_row[None])
            a, l_ = float(acc[0]), float(loss[0])
            return {"accuracy": a, "loss": l_, "accuracy_min": a, "accuracy_max": a,
                    "consensus_distance": None, **self._success_of(self.global_row[None])}
        up = torch.ones_like(self.honest) if alive is None else alive.to(self.honest.device)
        nodes = (self.honest & up).nonzero().squeeze(1)
        if len(nodes) == 0:
            return {"accuracy": None, "loss": None, "accuracy_min": None, "accuracy_max": None,
                    "consensus_distance": None}
        # in chunks of the memory budget: a gathered copy of every node's model would double the
        # population's memory at each evaluation
        step = max(1, self.memory_budget_bytes // (self.rows.shape[1] * self.rows.element_size()))
        chunks = [nodes[s : s + step] for s in range(0, len(nodes), step)]
        acc, loss = (torch.cat(t) for t in zip(*(self._eval_rows(self.rows[c]) for c in chunks)))
        mean = sum(self.rows[c].sum(0, dtype=torch.float64) for c in chunks) / len(nodes)
        spread = sum(float((self.rows[c] - mean).pow(2).sum()) for c in chunks)
        success = {}
        if self.success is not None:
            rates = torch.cat([success_rates(self.flat_model, self.rows[c], self.success.inputs,
                                             self.success.target) for c in chunks])
            success = {"attack_success": float(rates.mean()), "attack_success_max": float(rates.max())}
        return {"accuracy": float(acc.mean()), "loss": float(loss.mean()),
                "accuracy_min": float(acc.min()), "accuracy_max": float(acc.max()),
                "consensus_distance": (spread / len(nodes)) ** 0.5, **success}

    def _success_of(self, rows: torch.Tensor) -> dict:
        """The attack success rate of the evaluated models (mean and largest), if an attack is targeted."""
        if self.success is None:
            return {}
        rates = success_rates(self.flat_model, rows, self.success.inputs, self.success.target)
        return {"attack_success": float(rates.mean()), "attack_success_max": float(rates.max())}

    def _eval_rows(self, rows: torch.Tensor, batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        return evaluate_rows(self.flat_model, rows, self.test_x, self.test_y, batch)

