"""The governance state of one log: proposals, votes, what passed, and what is in force.

Proposals and votes are ledger entries (:class:`~phalanx.ledger.GovernanceProposal`,
:class:`~phalanx.ledger.GovernanceVote`); an activation (:class:`~phalanx.ledger.GovernanceActivation`)
cites the votes that carried a proposal. A proposal **passes** when the validators who voted yes
hold more than two thirds of the validators' total weight (``3 * yes > 2 * total``, the quorum
of Byzantine agreement: with at most f of 3f + 1 equal weights faulty, any two passing sets share
an honest validator), counting only votes logged before its ``deadline`` round ended.

Actions and their parameters (``params``, scalars only, as every ledger parameter):

- ``admit`` ``{node}``: the node may join under the ``approval`` admission policy;
- ``evict`` ``{node, evidence}``: the node is refused from the activation round on, for good;
- ``quarantine`` / ``release`` ``{node, evidence}``: its updates are refused (or accepted again);
- ``min_version`` ``{software, protocol}``: below them a node is refused in the handshake, and a
  stale node halts when the activation round comes (:mod:`.versions`);
- ``rollback`` ``{round}``: every node restores its model of that round.

Every action may carry ``at``, the activation round (default: the round after it passed);
``node`` is a hex node ID and ``evidence`` a comma-separated list of earlier entry indices of the
same log. :class:`Governance` is fed a log's entries in order (:meth:`Governance.observe`) and
answers what a node needs: what passed and is ready to activate, the minimum version at a round,
who is quarantined, evicted or admitted, and the upgrades that make the fork ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from phalanx.core.encoding import encode
from phalanx.governance.versions import Minimum, Upgrade, VersionError, parse_version
from phalanx.ledger import Entry

ACTIONS = ("admit", "evict", "quarantine", "release", "min_version", "rollback")


class GovernanceError(ValueError):
    """A proposal whose action or parameters are not understood (one line naming which)."""


@dataclass(frozen=True)
class Decision:
    """A proposal that passed: what it does, from which round, and the yes votes that carried it."""

    proposal: int
    action: str
    params: dict
    at: int
    votes: tuple[int, ...]
    yes_weight: float
    total_weight: float

    @property
    def node(self) -> bytes | None:
        value = self.params.get("node")
        return bytes.fromhex(value) if isinstance(value, str) else None

    @property
    def evidence(self) -> list[int]:
        return parse_evidence(self.params.get("evidence", ""))

    def digest(self) -> bytes:
        """What the fork ID sums for an upgrade: SHA-256 of the action and its parameters."""
        return hashlib.sha256(encode({"action": self.action, "params": dict(self.params)})).digest()


def parse_evidence(text) -> list[int]:
    if text in ("", None):
        return []
    if not isinstance(text, str) or not all(p.strip().isdigit() for p in text.split(",")):
        raise GovernanceError(f"evidence {str(text)[:40]!r} is not comma-separated entry indices")
    return [int(p) for p in text.split(",")]


def check_proposal(action: str, params: Mapping, index: int | None = None) -> None:
    """Raise :class:`GovernanceError` unless ``action`` and ``params`` make sense."""
    if action not in ACTIONS:
        raise GovernanceError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    at = params.get("at")
    if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 1):
        raise GovernanceError(f"at: {at!r} is not a round (an integer >= 1)")
    if action in ("admit", "evict", "quarantine", "release"):
        node = params.get("node")
        if not (isinstance(node, str) and len(node) == 64 and all(c in "0123456789abcdef" for c in node)):
            raise GovernanceError(f"{action}: node {str(node)[:70]!r} is not a 64-hex-digit node ID")
        refs = parse_evidence(params.get("evidence", ""))
        if index is not None and any(r >= index for r in refs):
            raise GovernanceError(f"{action}: evidence must cite earlier entries (before {index})")
    elif action == "min_version":
        try:
            parse_version(str(params.get("software", "")))
        except VersionError as e:
            raise GovernanceError(f"min_version: software: {e}") from None
        proto = params.get("protocol", 1)
        if not isinstance(proto, int) or isinstance(proto, bool) or proto < 1:
            raise GovernanceError(f"min_version: protocol {proto!r} is not an integer >= 1")
    elif action == "rollback":
        r = params.get("round")
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise GovernanceError(f"rollback: round {r!r} is not a round (an integer >= 0)")


@dataclass
class _Proposal:
    index: int
    action: str
    params: dict
    deadline: int
    votes: dict[bytes, tuple[int, str]] = field(default_factory=dict)  # voter -> (entry, choice)
    activated: int | None = None


class Governance:
    """Proposals, votes and their effects, read from one log's entries in order."""

    def __init__(self, validators: Mapping[bytes, float], minimum: Minimum):
        if not validators:
            raise GovernanceError("a network needs at least one validator")
        if any(w <= 0 for w in validators.values()):
            raise GovernanceError("every validator's weight must be positive")
        self.validators = dict(validators)
        self.total = float(sum(self.validators.values()))
        self.minimums = [minimum]
        self.proposals: dict[int, _Proposal] = {}
        self.decisions: list[Decision] = []
        self.quarantined: dict[bytes, int] = {}
        self.evicted: dict[bytes, int] = {}
        self.admitted: set[bytes] = set()
        self.rollbacks: list[tuple[int, int, int]] = []  # (at, to round, activation entry)
        self.round = 0  # the round the node is in, for deadlines

    # -------------------------------------------------------------- reading the log

    def observe(self, index: int, entry: Entry, signer: bytes | None) -> None:
        """Feed entry ``index`` (``signer``: the node that signed it) to the state."""
        body = entry.body
        if entry.type == "governance_proposal":
            try:
                check_proposal(body.action, body.params, index)
            except GovernanceError:
                return  # logged, but it asks for nothing this node can do: it never passes
            self.proposals[index] = _Proposal(index, body.action, dict(body.params), body.deadline)
        elif entry.type == "governance_vote":
            p = self.proposals.get(body.proposal)
            if p is not None and signer in self.validators and p.activated is None and self.round <= p.deadline:
                p.votes.setdefault(signer, (index, body.choice))
        elif entry.type == "governance_activation":
            p = self.proposals.get(body.proposal)
            if p is not None and p.activated is None:
                decision = self._tally(p)
                if decision is not None:  # an activation the votes do not carry changes nothing
                    self._apply(decision, index, body.round)
        elif entry.type == "quarantine":
            if body.action == "quarantine":
                self.quarantined.setdefault(body.node, body.round)
            else:
                self.quarantined.pop(body.node, None)

    def _tally(self, p: _Proposal) -> Decision | None:
        yes = sorted((entry, voter) for voter, (entry, choice) in p.votes.items() if choice == "yes")
        weight = sum(self.validators[v] for _, v in yes)
        if 3 * weight <= 2 * self.total:
            return None
        at = p.params.get("at") or self.round + 1
        return Decision(p.index, p.action, p.params, int(at), tuple(e for e, _ in yes), weight, self.total)

    def ready(self) -> list[Decision]:
        """Proposals that have passed and are not yet activated, oldest first."""
        out = []
        for p in self.proposals.values():
            if p.activated is None:
                d = self._tally(p)
                if d is not None:
                    out.append(d)
        return out

    def _apply(self, d: Decision, activation: int, at: int) -> None:
        d = Decision(d.proposal, d.action, d.params, at, d.votes, d.yes_weight, d.total_weight)
        self.proposals[d.proposal].activated = activation
        self.decisions.append(d)
        node = d.node
        if d.action == "admit":
            self.admitted.add(node)
        elif d.action == "evict":
            self.evicted.setdefault(node, at)
        elif d.action == "quarantine":
            self.quarantined.setdefault(node, at)
        elif d.action == "release":
            self.quarantined.pop(node, None)
        elif d.action == "min_version":
            self.minimums.append(Minimum(at, str(d.params["software"]), int(d.params.get("protocol", 1)),
                                         f"proposal entry {d.proposal}"))
        elif d.action == "rollback":
            self.rollbacks.append((at, int(d.params["round"]), activation))

    # -------------------------------------------------------------- what a node asks

    def minimum(self, round_: int) -> Minimum:
        """The minimum versions in force at ``round_`` (the latest activated by then)."""
        live = [m for m in self.minimums if m.since <= round_]
        return max(live, key=lambda m: (m.since, parse_version(m.software), m.protocol))

    def refuse_version(self, software: str, protocol: int, round_: int) -> str | None:
        """Why a node on these versions is refused at ``round_``, or ``None``."""
        return self.minimum(round_).refuse(software, protocol)

    def halts(self, software: str, protocol: int, round_: int) -> str | None:
        """For this node itself: the message to halt with at ``round_``, or ``None``."""
        why = self.refuse_version(software, protocol, round_)
        if why is None:
            return None
        return f"halting at round {round_}: this node's {why}"

    def barred(self, node: bytes, round_: int) -> str | None:
        """Why messages from ``node`` are refused at ``round_`` (evicted or quarantined), or ``None``."""
        if node in self.evicted and round_ >= self.evicted[node]:
            return f"node {node.hex()[:16]}... was evicted from round {self.evicted[node]}"
        if node in self.quarantined and round_ >= self.quarantined[node]:
            return f"node {node.hex()[:16]}... is quarantined since round {self.quarantined[node]}"
        return None

    def upgrades(self) -> list[Upgrade]:
        """The activated version changes, for the fork ID."""
        return [Upgrade(d.at, d.digest()) for d in self.decisions if d.action == "min_version"]

    def rollback_at(self, round_: int) -> tuple[int, int] | None:
        """(round to restore, activation entry) if a rollback takes effect at ``round_``."""
        for at, to, activation in self.rollbacks:
            if at == round_:
                return to, activation
        return None
