"""The simulated run's ledger: what every party would have logged, written as the round runs.

:class:`LedgerRecorder` is the :class:`~phalanx.engine.observer.RoundObserver` the range attaches
to a :class:`~phalanx.engine.simulation.Simulation`. It writes, into ``ledger.db`` (issue 6,
item 5):

- **round 0**: every node's registration (its Ed25519 key, the software version, admission
  ``open``) and dataset commitment (:mod:`phalanx.data.commitment`: a salted Merkle root, the
  count and label histogram hidden under a salt); the server's and the validators'
  registrations; the starting model, as an aggregate record of round 0 (rule ``initial``)
  signed by validator 0;
- **each round**, in one transaction: every participant's update commitment (a hiding
  commitment to what it sent, the hash of the model it started from, its dataset's root, a
  hiding commitment to its claimed sample count, the weight the aggregator gave it); the
  evidence of equivocation its receivers found; the aggregate record of every aggregator
  (star: the server; gossip: each receiver), with the inputs used, the inputs rejected and why,
  the rule and its parameters, the result's hash, and what a replay needs (declared f, the
  generator's seed, the device and torch's thread count, the slots, hiding commitments to any
  private input); privacy budget entries under DP; then a checkpoint cosigned by the
  validators (3 of 4 by default);
- **quarantine decisions** of the validators' vote (:class:`~phalanx.engine.guard.Guard` hands
  each :class:`~phalanx.defenses.quarantine.Decision` to :meth:`LedgerRecorder.decision`), as
  governance (issue 4: a network-wide decision is a proposal that cites the evidence, passed by
  the validators): validator 0's ``governance_proposal`` (action ``quarantine`` or ``release``,
  the node and the round it applies from, the evidence's entry), every validator's yes vote (the
  simulation's vote policy stands for theirs), the ``governance_activation``, and the
  ``quarantine`` entry citing the activation and the node's update commitment of the round where
  it had one. The audit checks the chain, and refuses any later commitment of a quarantined node;
- **a scheduled rollback** (:mod:`.rollback`);
- **committee rounds** (topology ``committee``, :mod:`phalanx.engine.committee_round`): the log's
  validators are the committee (the committee signs with their registered keys, under the log's
  origin, and names each update by its update commitment), the starting record names the
  committee's origin (param ``committee``), and each certified round logs its
  ``round_certificate`` (signed by the sequencer who proposed the batch), every new piece of
  ``committee_evidence`` (double signing, a missed promise, ...), then the aggregate record,
  signed by that sequencer, citing the certificate (param ``certificate``) and carrying the hash
  of the certified aggregate (param ``aggregate``). A round without a certificate logs no
  aggregate: the model stays. The audit re-checks all of it (:mod:`.checks`).

What it sent means: in a star, the update (the model delta) the server received; in gossip,
the model each neighbour received. A malicious node logs one commitment per round (the message
for its first neighbour); each receiver checks what it got against it and logs any other as
:class:`~phalanx.ledger.entries.UpdateEquivocation` evidence, signed envelope included. Honest
senders' messages are their committed rows by construction, so only messages an attack crafted
are compared (bit for bit; hashed only when they differ).

Salts and kept bytes go to ``ledger-private/`` (:mod:`.private`), unless ``keep_updates`` is off,
in which case only hashes exist and the log can be audited but not replayed. DP noise seeds are
neither logged nor kept.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import phalanx
from phalanx.core.commitment import count_commitment
from phalanx.core.merkle import leaf_hashes, root_of
from phalanx.data.commitment import commit_dataset
from phalanx.engine.observer import RoundObserver
from phalanx.engine.provenance.identities import Identities
from phalanx.engine.provenance.private import PrivateWriter, tensor_hash
from phalanx.ledger import (
    Admission,
    AggregateInput,
    AggregateRecord,
    DatasetCommitment,
    Ledger,
    NodeRegistration,
    Policy,
    PrivacyBudget,
    Quarantine,
    Rejection,
    UpdateCommitment,
    UpdateEquivocation,
    envelope_message,
)
from phalanx.engine.committee.ledger import certificate_entry, evidence_entry
from phalanx.privacy.client import clip_updates

PROTOCOL = {"star": "phalanx-star/1", "gossip": "phalanx-gossip/1"}
LEDGER_FILE = "ledger.db"
PRIVATE_DIR = "ledger-private"
POLICY_FILE = "policy.txt"


@dataclass(frozen=True)
class RollbackPlan:
    """Validators roll back at the start of round ``at`` to the model of round ``to_round``."""

    at: int
    to_round: int
    reason: str = "scheduled by the scenario"


@dataclass(frozen=True)
class RecorderConfig:
    origin: str  # the log's name: "phalanx.sim/<run>"
    seed: int
    chain: list[tuple[str, dict[str, Any]]]  # the defense chain's stages: (registered name, hyper-parameters)
    num_classes: int
    keep_updates: bool = True
    validators: int = 4
    checkpoint_every: int = 1
    rollback: RollbackPlan | None = None
    model: str = ""
    software: str = f"phalanx-{phalanx.__version__}"


@dataclass
class _Commit:
    update: bytes
    base: bytes
    samples: bytes
    weight: float | None = None


@dataclass
class _Round:
    """What round ``r`` logs, gathered by the hooks and written at its end."""

    r: int
    topology: str = ""
    commits: dict[int, _Commit] = field(default_factory=dict)
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # committed rows unlike sim.rows
    crafted: set[int] = field(default_factory=set)  # senders whose messages an attack crafted
    revealed: tuple | None = None  # star under SecAgg: (bucket means, node ids per bucket, f)
    rejections: dict[tuple[int, int], str] = field(default_factory=dict)  # (receiver | -1, sender) -> why
    everywhere: dict[int, str] = field(default_factory=dict)  # sender -> why, at all its receivers
    star: dict[str, Any] | None = None
    receivers: dict[int, dict[str, Any]] = field(default_factory=dict)
    evidence: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)  # sender, receiver, got, sig
    received: dict[tuple[int, int], bytes] = field(default_factory=dict)
    clip: float | None = None
    seed: int | None = None
    threads: int = 1  # torch's intra-op threads when the rule ran: its reductions depend on them


def _scalar(value: Any) -> Any:
    """A hyper-parameter as a ledger parameter value (a scalar; anything else as JSON text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + json.dumps(value, sort_keys=True)


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    same = a.shape == b.shape and a.dtype == b.dtype
    return same and bool(torch.equal(a.view(torch.uint8), b.view(torch.uint8)))


class LedgerRecorder(RoundObserver):
    """Writes a simulated run's ledger (see the module docstring); ``close`` when the run ends."""

    def __init__(self, sim, folder: Path, config: RecorderConfig):
        from phalanx.engine.provenance.rollback import Rollbacks

        if sim.central and sim.weighting == "samples" and sim.aggregator.accepts_weights:
            raise ValueError("the log shows each update's weight, and weighting samples would make it the exact "
                             "claimed count: use uniform or noised (phalanx.privacy.counts)")
        self.sim, self.folder, self.config = sim, Path(folder), config
        self.kind = "gossip" if sim.topology.kind == "gossip" else "star"  # a committee's model is global
        self.n = sim.shards.num_nodes
        self.committee = getattr(sim, "committee", None)
        self.ids = Identities(config.seed, config.origin, self.n, config.validators,
                              self.kind == "star" and self.committee is None)
        if self.committee is not None:
            if config.validators != self.committee.t.validators:
                raise ValueError(f"ledger: the log's validators are the committee's "
                                 f"({self.committee.t.validators}), not {config.validators}")
            self.committee.bind([self.ids.validator(j) for j in range(config.validators)], config.origin,
                                lambda r, node: self.round.commits[node].update)
            self.committee_logged = 0  # pieces of the committee's evidence already in the log
        self.log = self.ids.log_signer()
        self.witnesses = self.ids.witnesses(self.log)
        self.policy = Policy.byzantine([self.log.vkey], [w.vkey for w in self.witnesses])
        for stale in (LEDGER_FILE, LEDGER_FILE + "-wal", LEDGER_FILE + "-shm", POLICY_FILE):
            (self.folder / stale).unlink(missing_ok=True)
        shutil.rmtree(self.folder / PRIVATE_DIR, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.create(self.folder / LEDGER_FILE, self.log, policy=self.policy)
        (self.folder / POLICY_FILE).write_text(self.policy.format())
        self.private = PrivateWriter(self.folder / PRIVATE_DIR if config.keep_updates else None)
        self.node_ids = [self.ids.node(i).node_id for i in range(self.n)]
        self.chain_rule = "+".join(name for name, _ in config.chain)
        self.chain_params = {f"{i}.{k}": _scalar(v) for i, (_, params) in enumerate(config.chain)
                             for k, v in sorted(params.items()) if k != "f"}
        self.round: _Round | None = None
        self.equivocations: Counter[int] = Counter()
        self.epsilon: dict[int, float] = {}
        self.rollbacks = Rollbacks(self, config.rollback)
        self.decisions: list = []  # the round's quarantine decisions, written at its end
        self.dtype = str(sim.rows.dtype).removeprefix("torch.")
        self._register()

    # -- round 0 ---------------------------------------------------------------------------
    def _register(self) -> None:
        sim, ids = self.sim, self.ids
        items: list = []
        software = self.config.software
        self.datasets: list[bytes] = []
        for i in range(self.n):
            size = int(sim.shards.sizes[i])
            rows = sim.shards.index[i, :size]
            opening = commit_dataset(sim.shards.x[rows], sim.shards.y[rows], self.config.num_classes,
                                     ids.salt("dataset", i), ids.salt("dataset-stats", i))
            self.private.opening(opening.stats, opening.stats_salt,
                                 {"count": opening.count, "histogram": list(opening.histogram)})
            self.private.opening(opening.root, opening.salt, {"dataset": f"node{i}"})
            self.datasets.append(opening.root)
            dataset = DatasetCommitment(name=f"node{i}", root=opening.root, stats=opening.stats)
            items += [(NodeRegistration(software=software, admission=Admission(kind="open")), ids.node(i)),
                      (dataset, ids.node(i))]
        if self.kind == "star":
            items.append((NodeRegistration(software=software, admission=Admission(kind="open"),
                                           roles=["aggregator"]), ids.server_key()))
        for j in range(self.config.validators):
            items.append((NodeRegistration(software=software, admission=Admission(kind="open"),
                                           roles=["validator", "witness"]), ids.validator(j)))
        initial = sim.global_row if self.kind == "star" else sim.rows[0]
        start = self.private.keep_tensor(initial)
        genesis = AggregateRecord(round=0, rule="initial", inputs=[], result=start,
                                  params={"topology": self.kind, "dtype": self.dtype,
                                          "d": int(initial.numel()), "model": self.config.model or "model",
                                          "nodes": self.n,
                                          **({"committee": self.config.origin} if self.committee else {})})
        items.append((genesis, ids.validator(0)))
        self.genesis = self.ledger.size + len(items) - 1
        self.ledger.submit_many(items)
        self.global_hash = start
        self.model_hash = [start] * self.n
        self.private.flush()
        self._checkpoint()
        self.rollbacks.round_finished(0)

    def _checkpoint(self) -> int:
        published = self.ledger.checkpoint(self.witnesses)
        if not published.final:
            raise RuntimeError(f"ledger: checkpoint at size {published.checkpoint.size} is not final "
                               f"({published.refusals})")
        return published.checkpoint.size

    # -- hooks -----------------------------------------------------------------------------
    def round_started(self, sim, r: int) -> None:
        self.ids.clock_round = r
        self.round = _Round(r, self.kind)
        self.rollbacks.maybe_roll_back(r)

    def rejected(self, sim, r, senders, why, receivers=None) -> None:
        rnd = self.round
        if receivers is None:
            for s in senders.tolist():
                rnd.everywhere[s] = why
        else:
            for s, t in zip(senders.tolist(), receivers.tolist()):
                rnd.rejections[(t, s)] = why

    def _commit(self, r: int, node: int, row: torch.Tensor, base: bytes, claim: int) -> None:
        ids = self.ids
        update = self.private.commit_tensor(ids.salt("update", node, r), row)
        claim = min(max(int(claim), 0), (1 << 63) - 1)
        count_salt = ids.salt("count", node, r)
        samples = count_commitment(count_salt, claim)
        self.private.opening(samples, count_salt, {"count": claim})
        self.round.commits[node] = _Commit(update, base, samples)

    def star_sent(self, sim, r, part, updates, claims) -> None:
        rnd = self.round
        if sim.privacy is not None:
            rnd.clip = float(sim.privacy.clip)  # before central DP's adaptive clipping moves it
        for j, node in enumerate(part.tolist()):
            claim = float(claims[j])
            self._commit(r, node, updates[j], self.global_hash, round(claim) if math.isfinite(claim) else 0)

    def star_revealed(self, sim, r, used, buckets, revealed, f) -> None:
        nodes = used.tolist()
        self.round.revealed = (revealed.detach().clone(), [[nodes[i] for i in b.tolist()] for b in buckets], f)

    def star_aggregated(self, sim, r, used, updates, weights, context, out) -> None:
        rnd, chain = self.round, sim.aggregator
        rnd.seed = int(context.generator.initial_seed())
        params = {"topology": "star", "f": int(context.f[0]), "seed": rnd.seed, "device": out.device.type,
                  "threads": torch.get_num_threads(), "weights": "claims" if weights is not None else "none"}
        if rnd.revealed is not None:  # the server saw the bucket means SecAgg revealed, nothing else
            means, members, f_b = rnd.revealed
            params.update({"revealed": "bucket_means", "f": int(f_b), "buckets": len(members),
                           "bucket_members": json.dumps(members), "weights": "none",
                           "revealed_rows": self.private.keep_tensor(means).hex()})
            weights = None
        if self.committee is not None:  # the validators' recomputation: CPU, one thread
            params.update({"device": "cpu", "threads": 1})
            star_aggregate = tensor_hash(out[0]).hex()
        if chain.needs_root:
            params["root"] = self.private.commit_tensor(self.ids.salt("root", r), context.root[0]).hex()
        if chain.stateful and context.previous is not None:
            params["previous"] = self.private.commit_tensor(self.ids.salt("previous", "server", r),
                                                            context.previous[0]).hex()
        star = {"used": used.tolist(), "params": params, "pre_noise": None, "released": None,
                "weights": [1.0] * len(used) if weights is None else [float(w) for w in weights.tolist()]}
        plan = sim.privacy
        if plan is not None and plan.mechanism == "central":
            m = len(updates)
            # noise_std is linear in the clip norm, which adaptive clipping has just moved
            std = plan.noise_std(m) * rnd.clip / plan.clip
            pre = clip_updates(updates, rnd.clip)[0].sum(0)
            star["pre_noise"] = self.private.commit_tensor(self.ids.salt("pre-noise", r), pre)
            star["released"] = self.private.keep_tensor(out[0])
            params.update({"dp": "central", "clip": rnd.clip, "noise_std": float(std), "participants": m})
        if self.committee is not None:
            star["aggregate"] = star_aggregate
        for node, w in zip(star["used"], star["weights"]):
            rnd.commits[node].weight = w
        rnd.star = star

    def gossip_sent(self, sim, r, part, sent, before, crafted) -> None:
        rnd = self.round
        nodes = part.tolist()
        bad = sim.malicious.to(part.device)[part].tolist()
        rank = 0
        for j, node in enumerate(nodes):
            row = sent[node]
            if bad[j] and crafted is not None:
                col = self._first_column(sim, node, part) if crafted.shape[1] > 1 else 0
                row = before[j] + crafted[rank, col]  # its first neighbour's, as the engine forms it
                rnd.crafted.add(node)
            rank += bad[j]
            if sent is not sim.rows or node in rnd.crafted:
                rnd.rows[node] = row.clone()
            self._commit(r, node, row, self.model_hash[node], int(sim.shards.sizes[node]))

    def _first_column(self, sim, node: int, part: torch.Tensor) -> int:
        """The column of ``crafted`` for the sender's first participating neighbour (0 if none)."""
        taking = torch.zeros(self.n, dtype=torch.bool, device=part.device)
        taking[part] = True
        index, mask = sim.table_index[node, 1:], sim.table_mask[node, 1:]
        first = index[mask & taking[index]]
        if len(first) == 0:
            return 0
        return int(torch.searchsorted(part, first[0]))

    def gossip_chunk(self, sim, r, start, recv, idx, mask, msgs, ref, ok, f, generator) -> None:
        rnd, chain, ids = self.round, sim.aggregator, self.ids
        rnd.seed, rnd.threads = int(generator.initial_seed()), torch.get_num_threads()
        for c, node in enumerate(recv.tolist()):
            slots = mask[c].nonzero()[:, 0].tolist()
            senders = idx[c, slots].tolist()
            info: dict[str, Any] = {"slots": slots, "senders": senders, "f": int(f[c]), "chunk": int(start),
                                    "k": int(idx.shape[1]), "ok": bool(ok[c]), "own": None, "previous": None}
            info["weights"] = sim.table_weight[node, slots].tolist() if chain.accepts_weights else None
            own = rnd.rows.get(node)
            if own is not None and not _bitwise_equal(own, msgs[c, 0]):
                info["own"] = self.private.commit_tensor(ids.salt("own", node, r), msgs[c, 0])
            if chain.stateful:
                info["previous"] = self.private.commit_tensor(ids.salt("previous", node, r),
                                                              sim.previous[node])
            if not info["ok"]:
                info["refused"] = chain.failing(len(slots), int(f[c]))
            for s, sender in zip(slots, senders):
                if s > 0 and sender in rnd.crafted and not _bitwise_equal(rnd.rows[sender], msgs[c, s]):
                    self._equivocation(r, sender, node, msgs[c, s])
            rnd.receivers[node] = info

    def _equivocation(self, r: int, sender: int, receiver: int, message: torch.Tensor) -> None:
        """Receiver got a message other than the sender's commitment: keep it and the envelope."""
        ids = self.ids
        received = self.private.commit_tensor(ids.salt("update", sender, r), message)  # the sender's salt
        message = envelope_message(self.ledger.origin, r, self.node_ids[receiver], received)
        envelope = ids.node(sender).sign(message)
        self.round.evidence.append((sender, receiver, received, envelope))
        self.round.received[(receiver, sender)] = received

    def round_finished(self, sim, r: int, info: dict[str, Any]) -> dict[str, Any]:
        rnd = self.round
        if rnd is None:
            return {}
        first = self.ledger.size
        items: list = []
        order = sorted(rnd.commits)
        index = {node: first + k for k, node in enumerate(order)}
        for node in order:
            c = rnd.commits[node]
            items.append((UpdateCommitment(round=r, base_model=c.base, update=c.update,
                                           dataset=self.datasets[node], protocol=PROTOCOL[self.kind],
                                           samples=c.samples, weight=c.weight), self.ids.node(node)))
        for sender, receiver, received, envelope in rnd.evidence:
            items.append((UpdateEquivocation(round=r, node=self.node_ids[sender], commitment=index[sender],
                                             received=received, envelope=envelope), self.ids.node(receiver)))
            self.equivocations[sender] += 1
        if self.committee is not None:
            items += self._committee_entries(r, index, first + len(items))
        elif self.kind == "star":
            items += self._star_record(sim, r, index)
        else:
            items += self._gossip_records(sim, r, index)
        items += self._privacy_entries(sim, r, order)
        items += self._quarantine_entries(index, first + len(items))
        if items:
            self.ledger.submit_many(items)
        self.private.flush()
        if rnd.evidence:
            senders = sorted({s for s, *_ in rnd.evidence})
            text = (f"equivocation: node(s) {senders} sent {len(rnd.evidence)} receiver(s) an update other "
                    "than the one they committed (evidence in the ledger)")
            sim.events.append({"round": r, "kind": "evidence", "target": senders, "text": text})
        if items and r % self.config.checkpoint_every == 0:
            self._checkpoint()
        self.rollbacks.round_finished(r)
        self.round = None
        return {"equivocations": len(rnd.evidence)} if self.kind == "gossip" else {}

    def decision(self, d) -> None:
        """A quarantine or release decided this round (``Guard.on_decision``): logged at the round's end."""
        self.decisions.append(d)

    def _quarantine_entries(self, index: dict[int, int], start: int) -> list:
        """Each decision of the round as a passed proposal and its ``quarantine`` entry; ``start``
        is the log index the first of them will get."""
        items: list = []
        validators = [self.ids.validator(j) for j in range(self.config.validators)]
        from phalanx.engine.provenance.rollback import passed_proposal

        for d in self.decisions:
            votes = ("the server" if tuple(d.voters) in ((), (-1,))
                     else f"{len(d.votes)} of {len(d.voters)} validators scoring it")
            reason = f"{d.reason}; decided in round {d.round} by {votes}"[:1000]
            evidence = [index[d.node]] if d.node in index else []
            params = {"node": self.node_ids[d.node].hex(), "round": d.round + 1}
            if evidence:
                params["evidence"] = evidence[0]
            passed, activation = passed_proposal(start + len(items), validators, d.action, reason,
                                                 d.round + 1, params)
            items += passed
            items.append((Quarantine(node=self.node_ids[d.node], round=d.round + 1, action=d.action,
                                     reason=reason, evidence=[activation, *evidence]), validators[0]))
        self.decisions = []
        return items

    def _rejections(self, receiver: int, senders, index: dict[int, int]) -> list[Rejection]:
        rnd = self.round
        out = []
        for s in senders:
            why = rnd.rejections.get((receiver, s)) or rnd.everywhere.get(s)
            if why is not None and s in index:
                out.append(Rejection(entry=index[s], reason=why))
        return out

    def _star_record(self, sim, r: int, index: dict[int, int]) -> list:
        rnd = self.round
        if not rnd.commits:
            return []  # the server was down, or refused before anyone trained
        self.global_hash = self.private.keep_tensor(sim.global_row)
        server = self.ids.server_key()
        if rnd.star is None:  # the server refused what was left after the rejections
            problem = next((e["text"] for e in reversed(sim.events)
                            if e.get("round") == r and e.get("kind") == "availability"), "refused")
            rejected = self._rejections(-1, sorted(rnd.commits), index)
            named = {x.entry for x in rejected}
            rejected += [Rejection(entry=index[s], reason=problem) for s in sorted(rnd.commits)
                         if index[s] not in named]
            params = {"topology": "star", "refused": problem}
            return [(AggregateRecord(round=r, rule=self.chain_rule, params=params, inputs=[],
                                     rejected=rejected, result=self.global_hash), server)]
        star = rnd.star
        used = star["used"]
        inputs = [AggregateInput(entry=index[s], weight=w) for s, w in zip(used, star["weights"])]
        rejected = self._rejections(-1, [s for s in sorted(rnd.commits) if s not in set(used)], index)
        params = {**star["params"], **self.chain_params}
        return [(AggregateRecord(round=r, rule=self.chain_rule, params=params, inputs=inputs,
                                 rejected=rejected, result=self.global_hash, pre_noise=star["pre_noise"],
                                 released=star["released"]), server)]

    def _committee_entries(self, r: int, index: dict[int, int], start: int) -> list:
        """Round ``r``'s certificate, the committee's new evidence, and the certified aggregate's
        record (``start``: the log index the first of them will get); nothing without a certificate."""
        committee, rnd = self.committee, self.round
        cert = committee.certificates.get(r)
        fresh = committee.evidence[self.committee_logged:]
        self.committee_logged = len(committee.evidence)
        if cert is None or rnd.star is None:
            return []
        sequencer = self.ids.validator(cert.proposal.signer)
        items: list = [(certificate_entry(cert, committee.public), sequencer)]
        for e in fresh:  # reported by a voter other than the culprit
            reporter = next((j for j in cert.signers if j != e.culprit), cert.proposal.signer)
            items.append((evidence_entry(e, committee.public), self.ids.validator(reporter)))
        record, _ = self._star_record(self.sim, r, index)[0]
        params = {**record.params, "certificate": start, "aggregate": rnd.star["aggregate"]}
        return items + [(record.model_copy(update={"params": params}), sequencer)]

    def _gossip_records(self, sim, r: int, index: dict[int, int]) -> list:
        rnd, chain = self.round, sim.aggregator
        items = []
        for node in sorted(rnd.receivers):
            info = rnd.receivers[node]
            model = sim.rows[node]
            result = self.private.keep_tensor(model) if chain.needs_root else tensor_hash(model)
            self.model_hash[node] = result
            weights = info["weights"] or [1.0] * len(info["slots"])
            inputs = [AggregateInput(entry=index[s], weight=float(w))
                      for s, w in zip(info["senders"], weights, strict=True)]
            neighbours = sim.table_index[node, 1:][sim.table_mask[node, 1:]].tolist()
            rejected = self._rejections(node, [s for s in neighbours if s not in set(info["senders"])], index)
            params = {"topology": "gossip", "node": node, "f": info["f"], "seed": rnd.seed,
                      "device": sim.rows.device.type, "threads": rnd.threads, "k": info["k"],
                      "chunk": info["chunk"], "slots": ",".join(map(str, info["slots"])),
                      "weights": "mixing" if info["weights"] is not None else "none",
                      "ref": "before" if chain.needs_root else "trained"}
            for key in ("own", "previous"):
                if info[key] is not None:
                    params[key] = info[key].hex()
            if not info["ok"]:
                params["refused"] = info["refused"]
            record = AggregateRecord(round=r, rule=self.chain_rule, params={**params, **self.chain_params},
                                     inputs=inputs, rejected=rejected, result=result)
            items.append((record, self.ids.node(node)))
        return items

    def _privacy_entries(self, sim, r: int, nodes: list[int]) -> list:
        plan = sim.privacy
        if plan is None or not nodes:
            return []
        items = []
        totals = plan.epsilons(torch.tensor(nodes))
        for node, total in zip(nodes, totals):
            spent = total - self.epsilon.get(node, 0.0)
            self.epsilon[node] = total
            if not (math.isfinite(total) and math.isfinite(spent)):
                continue
            items.append((PrivacyBudget(round=r, node=self.node_ids[node], mechanism=plan.mechanism,
                                        accountant=plan.accountant, epsilon=max(0.0, float(spent)),
                                        delta=float(plan.delta), total_epsilon=float(total),
                                        total_delta=float(plan.delta)), self.ids.node(node)))
        return items

    # -- the end ---------------------------------------------------------------------------
    def current_model(self) -> bytes:
        """The run's model now: the star's global model, or the root over every node's model hash."""
        if self.kind == "star":
            return self.global_hash
        return root_of(leaf_hashes(self.model_hash))

    def checkpointed(self) -> int:
        """Checkpoint the entries not yet under a checkpoint (if any); the size now covered."""
        latest = self.ledger.latest_checkpoint()
        if latest is None or latest.checkpoint.size < self.ledger.size:
            return self._checkpoint()
        return latest.checkpoint.size

    def close(self) -> dict[str, Any]:
        """Checkpoint what is left, close the log, and return the run's ledger summary."""
        self.checkpointed()
        summary = {
            "path": LEDGER_FILE, "policy": POLICY_FILE,
            "private": PRIVATE_DIR if self.private.keeping else None,
            "origin": self.ledger.origin, "log_vkey": self.ledger.vkey,
            "entries": self.ledger.size, "checkpoints": self.ledger.checkpoint_count,
            "validators": self.config.validators, "keep_updates": self.config.keep_updates,
            "model": self.global_hash.hex() if self.kind == "star" else None,
            "models": None if self.kind == "star" else [h.hex() for h in self.model_hash],
            "equivocation": {str(k): v for k, v in sorted(self.equivocations.items())},
            "rollbacks": self.rollbacks.done,
        }
        self.ledger.close()
        return summary
