"""Provenance: which rounds, nodes, datasets and decisions a model came from (issue 6, item 8).

Every aggregate record names its inputs (update commitments) and its result (the SHA-256 of the
model it produced); every update commitment names the model it was computed from
(``base_model``) and the dataset commitment behind it. Following these links backwards from a
model's hash gives its provenance, a directed acyclic graph that ends at the starting model
(the round-0 record):

    model --result of--> aggregate record --inputs--> update commitments --base_model--> model ...

For a star this is a chain of rounds, each with its participants; in gossip a node's model
depends on its neighbours' models of the round before, and so on outwards. A rollback needs no
special case: the updates after it name the restored model as their base, so the reverted
rounds simply drop out of the graph; :func:`trace` lists them beside it, with the reason.

:class:`LedgerIndex` reads a log once and answers the lookups; :func:`trace` walks the graph;
:func:`format_trace` prints it (``phalanx trace``); :meth:`Trace.matrix` gives the rounds x nodes
picture of the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from phalanx.core.keys import node_id
from phalanx.ledger.entries import (
    AggregateRecord,
    DatasetCommitment,
    Entry,
    GovernanceActivation,
    GovernanceProposal,
    KeyRotation,
    NodeRegistration,
    Rollback,
    UpdateCommitment,
    UpdateEquivocation,
)

#: Codes of :meth:`Trace.matrix`.
ABSENT, USED, REJECTED, EQUIVOCATED = 0, 1, 2, 3


class TraceError(ValueError):
    """A model that no aggregate record in the log produced, or a log without the links."""


@dataclass(frozen=True)
class Record:
    index: int
    node: bytes  # the aggregator's node ID
    body: AggregateRecord


@dataclass(frozen=True)
class Commitment:
    index: int
    node: bytes
    body: UpdateCommitment


@dataclass
class LedgerIndex:
    """One pass over a log: who is who, and every link :func:`trace` follows."""

    keys: dict[bytes, bytes] = field(default_factory=dict)  # raw key -> node ID
    roles: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    labels: dict[bytes, str] = field(default_factory=dict)
    trainers: list[bytes] = field(default_factory=list)  # in registration order
    commitments: dict[int, Commitment] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    evidence: dict[tuple[int, bytes, bytes], tuple[int, UpdateEquivocation]] = field(default_factory=dict)
    rollbacks: list[tuple[int, Rollback, GovernanceActivation | None]] = field(default_factory=list)
    genesis: Record | None = None
    _producers: dict[bytes, list[int]] = field(default_factory=lambda: defaultdict(list))  # result -> records
    _proposals: dict[int, GovernanceProposal] = field(default_factory=dict)
    _activations: dict[int, GovernanceActivation] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: Iterable[tuple[int, Entry]]) -> LedgerIndex:
        index = cls()
        for i, entry in entries:
            index.add(i, entry)
        return index

    def add(self, i: int, entry: Entry) -> None:
        body = entry.body
        if isinstance(body, NodeRegistration):
            node = node_id(entry.key)
            self.keys[entry.key] = node
            self.roles[node] = tuple(body.roles)
            if "trainer" in body.roles:
                self.trainers.append(node)
            elif "aggregator" in body.roles:
                self.labels.setdefault(node, "server")
            else:
                count = sum(1 for r in self.roles.values() if "validator" in r)
                self.labels.setdefault(node, f"validator{count - 1}")
            return
        node = self.keys.get(entry.key, node_id(entry.key))
        if isinstance(body, KeyRotation):
            self.keys[body.new_key] = node
        elif isinstance(body, DatasetCommitment):
            self.labels.setdefault(node, body.name)
        elif isinstance(body, UpdateCommitment):
            self.commitments[i] = Commitment(i, node, body)
        elif isinstance(body, UpdateEquivocation):
            self.evidence[(body.round, body.node, node)] = (i, body)
        elif isinstance(body, AggregateRecord):
            record = Record(i, node, body)
            if body.round == 0 and body.rule == "initial" and self.genesis is None:
                self.genesis = record
            self._producers[body.result].append(len(self.records))
            self.records.append(record)
        elif isinstance(body, GovernanceProposal):
            self._proposals[i] = body
        elif isinstance(body, GovernanceActivation):
            self._activations[i] = body
        elif isinstance(body, Rollback):
            self.rollbacks.append((i, body, self._activations.get(body.activation)))

    def label(self, node: bytes) -> str:
        return self.labels.get(node) or f"node {node.hex()[:8]}"

    def producer(self, model: bytes, before: int | None = None) -> Record | None:
        """The latest aggregate record (before log index ``before``) whose result is ``model``."""
        for position in reversed(self._producers.get(model, [])):
            record = self.records[position]
            if before is None or record.index < before:
                return record
        return None

    def reverted(self) -> list[dict]:
        """Each rollback: the rounds it reverted, to which round's model, why, and its approval."""
        out = []
        for i, body, activation in self.rollbacks:
            at = activation.round if activation is not None else None
            rounds = list(range(body.round + 1, at)) if at is not None else []
            proposal = self._proposals.get(activation.proposal) if activation is not None else None
            out.append({"entry": i, "round": body.round, "at": at, "rounds": rounds, "model": body.model,
                        "reason": body.reason, "votes": len(activation.votes) if activation else 0,
                        "proposal": activation.proposal if activation else None,
                        "title": proposal.title if proposal else None})
        return out


@dataclass
class Trace:
    """The provenance of one model: the aggregate records it depends on, newest first."""

    model: bytes
    records: list[Record]
    index: LedgerIndex

    @property
    def rounds(self) -> list[int]:
        return sorted({r.body.round for r in self.records}, reverse=True)

    def matrix(self) -> tuple[list[int], list[list[int]]]:
        """(rounds 1..R, one row per round of one code per trainer node): :data:`USED` when the
        node's update went into this model, :data:`REJECTED` when an aggregator in its provenance
        dropped it, :data:`EQUIVOCATED` when a receiver in it holds evidence against the node."""
        trainers = {n: j for j, n in enumerate(self.index.trainers)}
        last = max((r.body.round for r in self.index.records), default=0)
        rounds = list(range(1, last + 1))
        grid = [[ABSENT] * len(trainers) for _ in rounds]
        for record in self.records:
            r = record.body.round
            if r == 0:
                continue
            row = grid[r - 1]
            for x in record.body.rejected:
                node = self.index.commitments[x.entry].node
                if node in trainers:
                    row[trainers[node]] = max(row[trainers[node]], REJECTED)
            for x in record.body.inputs:
                node = self.index.commitments[x.entry].node
                if node in trainers and row[trainers[node]] == ABSENT:
                    row[trainers[node]] = USED
                if (r, node, record.node) in self.index.evidence and node in trainers:
                    row[trainers[node]] = EQUIVOCATED
        return rounds, grid


def trace(index: LedgerIndex, model: bytes) -> Trace:
    """Walk back from the model whose SHA-256 is ``model`` to the starting model."""
    start = index.producer(model)
    if start is None:
        raise TraceError(f"no aggregate record in this log produced the model {model.hex()[:16]}...")
    seen: dict[int, Record] = {}
    stack = [start]
    while stack:
        record = stack.pop()
        if record.index in seen:
            continue
        seen[record.index] = record
        for x in record.body.inputs:
            commitment = index.commitments.get(x.entry)
            if commitment is None:
                continue
            base = index.producer(commitment.body.base_model, before=commitment.index)
            if base is not None and base.index not in seen:
                stack.append(base)
    records = sorted(seen.values(), key=lambda r: (-r.body.round, r.index))
    return Trace(model, records, index)


def _short(h: bytes) -> str:
    return h.hex()[:16]


def _span(rounds: list[int]) -> str:
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"


def format_trace(t: Trace, *, rounds: int | None = None, updates: bool = True) -> str:
    """The provenance as text: per round, each aggregate with what it used and rejected and why.

    ``rounds`` keeps the latest that many rounds; ``updates=False`` prints one line per aggregate.
    """
    idx = t.index
    lines = []
    head = t.records[0]
    users = {idx.commitments[x.entry].node for r in t.records for x in r.body.inputs
             if x.entry in idx.commitments}
    n_updates = sum(len(r.body.inputs) for r in t.records)
    n_rejected = sum(len(r.body.rejected) for r in t.records)
    lines.append(f"model {_short(t.model)}: the result of round {head.body.round}'s aggregate by "
                 f"{idx.label(head.node)} (entry {head.index})")
    lines.append(f"provenance: {len(t.records)} aggregate records over rounds {t.rounds[-1]}-{t.rounds[0]}, "
                 f"{n_updates} updates used from {len(users)} nodes, {n_rejected} rejected")
    shown = t.rounds if rounds is None else t.rounds[:rounds]
    by_round = defaultdict(list)
    for record in t.records:
        by_round[record.body.round].append(record)
    for r in shown:
        lines.append(f"round {r}")
        for record in by_round[r]:
            lines.extend(_record_lines(idx, record, updates))
    if rounds is not None and len(t.rounds) > rounds:
        lines.append(f"... {len(t.rounds) - rounds} earlier rounds (--rounds to show more)")
    for rb in idx.reverted():
        if rb["rounds"]:
            lines.append(f"reverted: {_span(rb['rounds'])}, not in any later model's provenance: rollback "
                         f"entry {rb['entry']} at round {rb['at']} to round {rb['round']}'s model "
                         f"{_short(rb['model'])} ({rb['votes']} validator votes): {rb['reason']}")
    return "\n".join(lines) + "\n"


def _record_lines(idx: LedgerIndex, record: Record, updates: bool) -> list[str]:
    body = record.body
    who = idx.label(record.node)
    if body.rule == "initial":
        return [f"  initial model {_short(body.result)} (entry {record.index}, signed by {who})"]
    refused = body.params.get("refused")
    f = body.params.get("f")
    line = (f"  aggregate entry {record.index} by {who}: {body.rule}"
            + (f" f={f}" if f is not None else "")
            + f", {len(body.inputs)} used, {len(body.rejected)} rejected -> {_short(body.result)}")
    if body.pre_noise is not None:
        line += (f" (central DP: pre-noise commitment {_short(body.pre_noise)}, released "
                 f"{_short(body.released)})")
    if refused:
        line += f" (kept its model: {refused})"
    out = [line]
    if not updates:
        return out
    for x in body.inputs:
        c = idx.commitments.get(x.entry)
        if c is None:
            continue
        got = idx.evidence.get((body.round, c.node, record.node))
        weight = "-" if body.params.get("weights") == "none" else f"{x.weight:g}"
        out.append(f"    used     {idx.label(c.node):<12} update entry {c.index:<6} weight {weight:<10} "
                   f"dataset {_short(c.body.dataset)} base {_short(c.body.base_model)}"
                   + (f"  EQUIVOCATION: received another update (evidence entry {got[0]})" if got else ""))
    for x in body.rejected:
        c = idx.commitments.get(x.entry)
        name = idx.label(c.node) if c is not None else "?"
        out.append(f"    rejected {name:<12} update entry {x.entry:<6} {x.reason}")
    return out
