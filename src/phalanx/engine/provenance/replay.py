"""``phalanx audit --replay``: every aggregate record re-run from what the protocol revealed.

The structural audit shows that the log is intact and signed; replay shows that what it says
the aggregators did is what their rule computes. For each aggregate record, in log order
(issue 6, item 7):

1. **the inputs** are opened: each used update commitment through its salt and kept bytes
   (:mod:`.private`), checked against the commitment. In gossip a receiver that holds
   equivocation evidence against a sender used what it received, opened through the evidence's
   commitment; its own slot is its trained model (``own``, when that is not what it sent, as
   under local DP). *What the protocol revealed* is the individual updates here; under secure
   aggregation it will be the bucket sums (:func:`revealed_star_rows` is the seam);
2. **the context** is rebuilt from the record: the chain by its registered names and
   hyper-parameters, each receiver's declared f, the weights actually used, FLTrust's root
   update and a stateful rule's previous output (opened like the updates), and the generator,
   seeded as the engine seeded it;
3. **the rule runs** on the CPU, in the engine's batch layout (gossip: the same receivers per
   call, the same slots, one generator per round consumed chunk by chunk) and with as many torch
   threads as the engine had (a parallel reduction's order depends on them), so the result is
   bit for bit the engine's on the same kind of CPU, and its SHA-256 must equal the record's
   ``result``;
4. **central DP** is replayed up to the noise: the clipped sum is recomputed and must open the
   hiding ``pre_noise`` commitment; the released aggregate (kept, public) must give the result;
   and the difference must look like the declared noise (its standard deviation within a few
   standard errors of ``noise_std``); the noise itself cannot be replayed, since its seed is
   never kept;
5. **continuity**: every update's base model is the model its node held (the star's previous
   result, a gossip node's own previous result, or the model a rollback restored).

Replay needs ``ledger.keep_updates`` (the default for runs, off in grids).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from phalanx.aggregate import AGGREGATORS, PRE_AGGREGATORS, Chain, Context
from phalanx.core import PluginError
from phalanx.core.merkle import leaf_hashes, root_of
from phalanx.engine.provenance.private import Openings, PrivateError, tensor_commitment, tensor_hash
from phalanx.ledger import Ledger, StorageError
from phalanx.ledger.trace import LedgerIndex, Record
from phalanx.privacy.client import clip_updates


class ReplayMismatch(ValueError):
    """One record whose replay does not reproduce what it says."""


class _Stop(Exception):
    """Stop at the first finding."""


@dataclass
class ReplayReport:
    location: str
    records: int = 0
    rounds: int = 0
    noised: int = 0
    refused: int = 0
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if not self.ok:
            return f"replay failed: {self.findings[0]}"
        extra = ""
        if self.noised:
            extra += f"; {self.noised} central-DP aggregates replayed up to the noise"
        if self.refused:
            extra += f"; {self.refused} refusals (the model kept) confirmed"
        return (f"replay: {self.records} aggregate records of {self.rounds} rounds re-run, every result hash "
                f"matches{extra}")


def on_the_cpu(record: Record) -> None:
    """Replay runs on the CPU, and matches bit for bit only what ran there."""
    device = record.body.params.get("device", "cpu")
    if device != "cpu":
        raise ReplayMismatch(f"aggregate entry {record.index} ran on {device}; replay runs on the CPU, whose "
                             "results match another device's only approximately")


def number(record: Record, key: str, low: int, high: int, default: int | None = None) -> int:
    """An integer parameter of the record, within bounds, or a one-line mismatch (a log can be
    signed and still hostile: no record makes replay allocate or loop without bound)."""
    value = record.body.params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ReplayMismatch(f"aggregate entry {record.index}: parameter {key} is {value!r}, not an integer "
                             f"in [{low}, {high}]")
    return value


SEED_MAX = (1 << 64) - 1
THREADS_MAX = 1024
F_MAX = 1 << 31


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch intra-op threads, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_chain(rule: str, params: dict) -> Chain:
    """The defense chain a record names: ``pre+...+rule``, stage ``i``'s hyper-parameters under ``i.*``."""
    names = rule.split("+")
    stages: dict[int, dict] = {i: {} for i in range(len(names))}
    for key, value in params.items():
        head, _, name = key.partition(".")
        if head.isdigit() and name and int(head) in stages:
            if isinstance(value, str) and value.startswith("json:"):
                value = json.loads(value[5:])
            stages[int(head)][name] = value
    try:
        pre = [PRE_AGGREGATORS.build(n, **stages[i]) for i, n in enumerate(names[:-1])]
        return Chain(pre, AGGREGATORS.build(names[-1], **stages[len(names) - 1]))
    except (PluginError, ValueError, TypeError) as e:
        raise ReplayMismatch(f"rule {rule!r} cannot be rebuilt here: {e}") from None


def revealed_star_rows(record: Record, commitments, opened, model) -> torch.Tensor:
    """What the star's server saw of its inputs: the individual updates, or under bucketed secure
    aggregation (``params["revealed"] == "bucket_means"``) only each bucket's mean, kept by its
    SHA-256 (``revealed_rows``, ``buckets`` rows) and opened in their place."""
    p = record.body.params
    revealed = p.get("revealed", "updates")
    if revealed == "bucket_means":
        buckets = number(record, "buckets", 1, F_MAX)
        rows = model(bytes.fromhex(str(p.get("revealed_rows", ""))))
        if rows.numel() % buckets:
            raise ReplayMismatch(f"aggregate entry {record.index}: {rows.numel()} revealed numbers do "
                                 f"not make {buckets} bucket means")
        return rows.reshape(buckets, -1)
    if revealed != "updates":
        raise ReplayMismatch(f"aggregate entry {record.index}: unknown revealed form {revealed!r}")
    return torch.stack([opened(commitments[x.entry].body.update) for x in record.body.inputs])


class _Replayer:
    def __init__(self, index: LedgerIndex, openings: Openings, report: ReplayReport, stop: bool):
        self.index, self.openings, self.report, self.stop = index, openings, report, stop
        genesis = index.genesis
        if genesis is None:
            raise ReplayMismatch("the log has no round-0 record (the starting model)")
        self.dtype = str(genesis.body.params.get("dtype", "float32"))
        self.star = genesis.body.params.get("topology") == "star"
        self.current: dict[bytes | None, bytes] = defaultdict(lambda: genesis.body.result)
        self._cache: dict[bytes, torch.Tensor] = {}

    # -- openings --------------------------------------------------------------------------
    def opened(self, commitment: bytes) -> torch.Tensor:
        if commitment not in self._cache:
            self._cache[commitment] = self.openings.tensor(commitment, self.dtype)
        return self._cache[commitment]

    def model(self, digest: bytes) -> torch.Tensor:
        return self.openings.model(digest, self.dtype)

    def param_tensor(self, record: Record, key: str) -> torch.Tensor | None:
        value = record.body.params.get(key)
        return None if value in (None, "") else self.opened(bytes.fromhex(value))

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> None:
        events = [(r.index, "record", r) for r in self.index.records if r is not self.index.genesis]
        events += [(i, "rollback", body) for i, body, _ in self.index.rollbacks]
        events.sort(key=lambda e: e[0])
        rounds = set()
        k = 0
        while k < len(events):
            _, kind, item = events[k]
            if kind == "rollback":
                self._rolled_back(events[k][0], item)
                k += 1
                continue
            group = [item]
            while (k + len(group) < len(events) and events[k + len(group)][1] == "record"
                   and events[k + len(group)][2].body.round == item.body.round and not self.star):
                group.append(events[k + len(group)][2])
            rounds.add(item.body.round)
            self._guarded(self._star if self.star else self._gossip_round, item if self.star else group, item)
            self._cache.clear()
            k += len(group)
        self.report.rounds = len(rounds)

    def _guarded(self, step, argument, record: Record) -> None:
        try:
            step(argument)
        except (ReplayMismatch, PrivateError, ValueError, RuntimeError, KeyError, IndexError) as e:
            self.report.findings.append(f"round {record.body.round}: {e}")
            if self.stop:
                raise _Stop from None

    def _check_base(self, node: bytes | None, commitment, what: str) -> None:
        want = self.current[node]
        if commitment.body.base_model != want:
            raise ReplayMismatch(f"{what}: update entry {commitment.index} starts from model "
                                 f"{commitment.body.base_model.hex()[:16]}..., but its node held "
                                 f"{want.hex()[:16]}...")

    def _rolled_back(self, index: int, body) -> None:
        if self.star:
            self.current[None] = body.model
            return
        latest = {}
        for r in self.index.records:
            if r.index < index and r.body.rule != "initial" and r.body.round <= body.round:
                latest[r.node] = r.body.result
        genesis = self.index.genesis.body.result
        hashes = [latest.get(n, genesis) for n in self.index.trainers]
        if root_of(leaf_hashes(hashes)) != body.model:
            self.report.findings.append(f"rollback entry {index}: its model is not the root of the nodes' "
                                        f"models after round {body.round}")
            if self.stop:
                raise _Stop
        for n, h in zip(self.index.trainers, hashes):
            self.current[n] = h

    def _matches(self, record: Record, result: torch.Tensor, how: str = "replayed") -> None:
        got = tensor_hash(result)
        if got != record.body.result:
            who = self.index.label(record.node)
            raise ReplayMismatch(f"aggregate entry {record.index} by {who}: the record "
                                 f"says {record.body.result.hex()[:16]}..., the {how} result is "
                                 f"{got.hex()[:16]}...")
        self.report.records += 1

    # -- star ------------------------------------------------------------------------------
    def _star(self, record: Record) -> None:
        body, p = record.body, record.body.params
        commitments = self.index.commitments
        involved = [commitments[x.entry] for x in (*body.inputs, *body.rejected)]
        for c in involved:
            self._check_base(None, c, f"aggregate entry {record.index}")
        base = self.model(self.current[None]) if involved else None
        if "refused" in p:
            if body.result != self.current[None]:
                raise ReplayMismatch(f"aggregate entry {record.index} refused the round but changed the "
                                     "model")
            self.report.records += 1
            self.report.refused += 1
            return
        on_the_cpu(record)
        rows = revealed_star_rows(record, commitments, self.opened, self.model)
        if p.get("dp") == "central":
            self._central(record, rows, base)
        else:
            chain = build_chain(body.rule, p)
            weights = None
            if p.get("weights") == "claims":
                weights = torch.tensor([x.weight for x in body.inputs], dtype=rows.dtype)[None]
            root, previous = self.param_tensor(record, "root"), self.param_tensor(record, "previous")
            context = Context(f=torch.tensor([number(record, "f", 0, F_MAX)]),
                              root=None if root is None else root[None],
                              previous=None if previous is None else previous[None],
                              generator=torch.Generator().manual_seed(number(record, "seed", 0, SEED_MAX)))
            mask = torch.ones(1, len(rows), dtype=torch.bool)
            with torch_threads(number(record, "threads", 1, THREADS_MAX, 1)):
                out = chain.aggregate(rows[None], mask, weights, context)
            self._matches(record, base + out[0])
        self.current[None] = body.result

    def _central(self, record: Record, rows: torch.Tensor, base: torch.Tensor) -> None:
        body, p = record.body, record.body.params
        with torch_threads(number(record, "threads", 1, THREADS_MAX, 1)):
            pre = clip_updates(rows, float(p["clip"]))[0].sum(0)
        if tensor_commitment(self.openings.salt(body.pre_noise), pre) != body.pre_noise:
            raise ReplayMismatch(f"aggregate entry {record.index}: the replayed clipped sum does not open "
                                 "its pre-noise commitment")
        released = self.model(body.released)
        self._matches(record, base + released, how="released")
        noise = released.double() * len(rows) - pre.double()
        std, want = float(noise.std()), float(p["noise_std"])
        tolerance = max(0.05, 6 / math.sqrt(2 * max(1, noise.numel())))
        if not abs(std / want - 1) <= tolerance:
            raise ReplayMismatch(f"aggregate entry {record.index}: the released aggregate's noise has "
                                 f"standard deviation {std:.4g}, not the declared {want:.4g}")
        self.report.noised += 1

    # -- gossip ----------------------------------------------------------------------------
    def _gossip_round(self, records: list[Record]) -> None:
        commitments = self.index.commitments
        involved = {x.entry for r in records for x in (*r.body.inputs, *r.body.rejected)}
        for entry in sorted(involved):
            self._check_base(commitments[entry].node, commitments[entry], f"round {records[0].body.round}")
        generator = None
        chunks: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            chunks[number(record, "chunk", 0, len(self.index.trainers))].append(record)
        for start in sorted(chunks):
            batch = [self._gossip_inputs(r) for r in chunks[start]]
            ready = [b for b in batch if "refused" not in b["record"].body.params]
            if ready:
                if generator is None:
                    generator = torch.Generator().manual_seed(number(ready[0]["record"], "seed", 0, SEED_MAX))
                self._aggregate(ready, generator)
            for b in batch:
                if "refused" in b["record"].body.params:
                    self._matches(b["record"], b["own"], how="kept")
                    self.report.refused += 1
        for record in records:
            self.current[record.node] = record.body.result

    def _gossip_inputs(self, record: Record) -> dict:
        body, p = record.body, record.body.params
        receiver, r = record.node, body.round
        commitments = self.index.commitments
        k = number(record, "k", 1, len(self.index.trainers) + 1)
        try:
            slots = [int(s) for s in str(p.get("slots", "")).split(",")]
        except ValueError:
            slots = []
        if len(slots) != len(body.inputs) or not slots or slots[0] != 0 or slots != sorted(set(slots)) \
                or slots[-1] >= k:
            raise ReplayMismatch(f"aggregate entry {record.index}: its slots do not match its inputs")
        own_commitment = commitments[body.inputs[0].entry]
        if own_commitment.node != receiver:
            raise ReplayMismatch(f"aggregate entry {record.index}: slot 0 is not the receiver's own update")
        own = self.param_tensor(record, "own")
        own = self.opened(own_commitment.body.update) if own is None else own
        rows = torch.zeros(k, own.numel(), dtype=own.dtype)
        mask = torch.zeros(k, dtype=torch.bool)
        weights = torch.zeros(k, dtype=own.dtype)
        for s, x in zip(slots, body.inputs):
            c = commitments[x.entry]
            if s == 0:
                rows[0] = own
            else:
                evidence = self.index.evidence.get((r, c.node, receiver))
                rows[s] = self.opened(evidence[1].received if evidence else c.body.update)
            mask[s], weights[s] = True, x.weight
        ref = self.model(own_commitment.body.base_model) if p.get("ref") == "before" else own
        return {"record": record, "rows": rows, "mask": mask, "weights": weights, "ref": ref, "own": own,
                "previous": self.param_tensor(record, "previous")}

    def _aggregate(self, batch: list[dict], generator: torch.Generator) -> None:
        first = batch[0]["record"].body
        for b in batch:
            on_the_cpu(b["record"])
        chain = build_chain(first.rule, first.params)
        refs = torch.stack([b["ref"] for b in batch])
        msgs = torch.stack([b["rows"] for b in batch]) - refs[:, None, :]
        mask = torch.stack([b["mask"] for b in batch])
        weights = None
        if first.params.get("weights") == "mixing":
            weights = torch.stack([b["weights"] for b in batch])
        previous = None
        if chain.stateful:
            previous = torch.stack([b["previous"] if b["previous"] is not None else torch.zeros_like(b["ref"])
                                    for b in batch])
        context = Context(f=torch.tensor([number(b["record"], "f", 0, F_MAX) for b in batch]),
                          root=torch.stack([b["own"] for b in batch]) - refs if chain.needs_root else None,
                          previous=previous, generator=generator)
        with torch_threads(number(batch[0]["record"], "threads", 1, THREADS_MAX, 1)):
            out = chain.aggregate(msgs, mask, weights, context)
        for b, ref, row in zip(batch, refs, out, strict=True):
            self._matches(b["record"], ref + row)


def replay(location: str | Path, private: str | Path, *, stop_at_first: bool = True) -> ReplayReport:
    """Replay every aggregate record of the ledger at ``location`` with the material in ``private``."""
    started = time.perf_counter()
    report = ReplayReport(str(location))
    try:
        with Ledger.open(location, readonly=True) as ledger:
            index = LedgerIndex.build(ledger.entries())
        with torch_threads(1):  # the inputs are copies, exact with any number of threads
            _Replayer(index, Openings(private), report, stop_at_first).run()
    except _Stop:
        pass
    except (StorageError, PrivateError, ReplayMismatch) as e:
        report.findings.append(str(e))
    report.seconds = time.perf_counter() - started
    return report
