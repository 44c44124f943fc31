"""The engine's audit checks: the rules that need governance state, not just the log's structure.

:func:`phalanx.ledger.audit` checks every hash, signature, proof and structural rule, and takes
extra per-entry checks from the caller (issue 6, item 7: they "live in phalanx.engine and are
composed by the CLI"). :class:`EngineChecks` holds the state they need, in log order:

- **non-quarantined**: no update commitment from a node under quarantine (a ``quarantine``
  entry from its round on, until a ``release``), and no aggregate that used one; together with
  the structural rules (a registered key, a committed dataset) this is "every update
  commitment comes from a registered, non-quarantined node with a committed dataset"; a
  quarantine or release counts only if it cites an activation that passed a proposal of that
  action for that node (a network-wide decision, issue 4);
- **governance**: only validators vote; an activation carries more than two thirds of the
  validators' yes votes (the quorum of the checkpoints, 2f + 1 of 3f + 1);
- **rollback**: its activation approves a ``rollback`` proposal for that round (and that model,
  if the proposal names one);
  the model is what the log says the network held after that round (the star's global model,
  or the root over every node's model), and the checkpoint it names covers that round's
  records and existed before the rollback;
- **committee**: every ``round_certificate`` carries q = floor(2n/3) + 1 votes of distinct
  validators (the nodes the log registered with the role ``validator``, by their current keys) on
  the hash of its batch and aggregate, each vote re-checked for the committee's origin
  (:func:`phalanx.engine.committee.ledger.check_certificate_entry`); one round has one certified
  value; a committee's evidence must name a validator. The committee's origin is the one a
  simulated run's starting record names (param ``committee``) or, for a deployed node's log,
  derives from the log's (``committee_origin``). In a simulated run, which logs every update
  commitment, a certificate's batch must name the round's logged commitments, and every
  aggregate record needs its round's certificate: it cites it, its inputs are the certified
  batch in order, and the aggregate it applied is the certified one.

:meth:`EngineChecks.reverted` then lists which rounds each rollback reverted and why, for the
audit's report.
"""

from __future__ import annotations

from collections.abc import Callable

from phalanx.core.keys import VerifyKey
from phalanx.core.merkle import leaf_hashes, root_of
from phalanx.ledger import Entry, LedgerState
from phalanx.ledger.trace import LedgerIndex


def _span(rounds: list[int]) -> str:
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"


class EngineChecks:
    """Per-entry checks for :func:`phalanx.ledger.audit` (``checks=EngineChecks().checks()``)."""

    def __init__(self, origin: str | None = None) -> None:
        self.origin = origin  # the log's origin (its committee's derives from it)
        self.index = LedgerIndex()
        self.quarantined: dict[bytes, int] = {}  # node -> the round from which it is quarantined
        self.votes: dict[int, tuple[bytes, str]] = {}  # vote index -> (voter, choice)
        self.proposals: dict[int, object] = {}
        self.activations: dict[int, object] = {}
        self.approved: list[dict] = []
        self.certificates: dict[int, tuple[int, object]] = {}  # round -> (entry index, certificate)

    def checks(self) -> list[Callable[[int, Entry, LedgerState], str | None]]:
        return [self.observe, self.not_quarantined, self.governance, self.committee]

    def observe(self, index: int, entry: Entry, state: LedgerState) -> None:
        """Index the entry (first, so the other checks see the entries before it)."""
        self.index.add(index, entry)

    # -- quarantine ------------------------------------------------------------------------
    def not_quarantined(self, index: int, entry: Entry, state: LedgerState) -> str | None:
        body = entry.body
        if entry.type == "quarantine":
            problem = self._approved(body)
            if problem is not None:
                return problem
            if body.action == "quarantine":
                self.quarantined.setdefault(body.node, body.round)
            else:
                self.quarantined.pop(body.node, None)
        elif entry.type == "update_commitment":
            node = state.node_of(entry.key)
            since = self.quarantined.get(node)
            if since is not None and body.round >= since:
                return (f"update of round {body.round} from node {node.hex()[:16]}..., quarantined since "
                        f"round {since}")
        elif entry.type == "aggregate_record":
            for x in body.inputs:
                c = self.index.commitments.get(x.entry)
                since = self.quarantined.get(c.node) if c is not None else None
                if since is not None and c.body.round >= since:
                    return (f"input entry {x.entry} is from node {c.node.hex()[:16]}..., quarantined since "
                            f"round {since}")
        return None

    def _approved(self, body) -> str | None:
        """A quarantine or release is a network-wide decision: it must cite an activation that
        passed a proposal of that action for that node (issue 4)."""
        for ref in body.evidence:
            activation = self.activations.get(ref)
            proposal = self.proposals.get(activation.proposal) if activation is not None else None
            if (proposal is not None and proposal.action == body.action
                    and proposal.params.get("node") == body.node.hex()):
                return None
        return (f"{body.action} of node {body.node.hex()[:16]}... cites no passed governance proposal "
                f"to {body.action} it")

    # -- governance ------------------------------------------------------------------------
    def _validators(self) -> set[bytes]:
        return {n for n, roles in self.index.roles.items() if "validator" in roles}

    def governance(self, index: int, entry: Entry, state: LedgerState) -> str | None:
        body, node = entry.body, state.node_of(entry.key)
        if entry.type == "governance_proposal":
            self.proposals[index] = body
        elif entry.type == "governance_vote":
            if node not in self._validators():
                return f"vote by node {node.hex()[:16]}..., which is not a validator"
            self.votes[index] = (node, body.choice)
        elif entry.type == "governance_activation":
            validators = self._validators()
            yes = {self.votes[v][0] for v in body.votes if self.votes.get(v, (None, ""))[1] == "yes"}
            if 3 * len(yes) <= 2 * len(validators):
                return (f"activation of proposal {body.proposal} carries {len(yes)} yes votes of "
                        f"{len(validators)} validators; more than two thirds are needed")
            self.activations[index] = body
        elif entry.type == "rollback":
            return self._rollback(index, body)
        return None

    # -- committee ------------------------------------------------------------------------
    def _committee_origin(self) -> tuple[str | None, bool]:
        """(the committee's origin, whether a simulated run's starting record named it)."""
        genesis = self.index.genesis
        named = None if genesis is None else genesis.body.params.get("committee")
        if named is not None:
            return named, True
        from phalanx.engine.committee.ledger import committee_origin

        return (None if self.origin is None else committee_origin(self.origin)), False

    def _validator_keys(self, state: LedgerState) -> list[VerifyKey]:
        return [VerifyKey(state.current[n]) for n in sorted(self._validators()) if n in state.current]

    def committee(self, index: int, entry: Entry, state: LedgerState) -> str | None:
        from phalanx.engine.committee.ledger import check_certificate_entry

        body, (origin, simulated) = entry.body, self._committee_origin()
        if entry.type == "round_certificate":
            if origin is None:
                return (f"round_certificate round {body.round}: the log's origin was not given and its "
                        "starting record names no committee, so the committee's origin is unknown")
            keys = self._validator_keys(state)
            if not keys:
                return f"round_certificate round {body.round}: the log registered no validator"
            try:
                check_certificate_entry(body, keys, origin)
            except ValueError as e:
                return str(e)
            if simulated:
                logged = {c.body.update for c in self.index.commitments.values() if c.body.round == body.round}
                missing = [u for u in body.batch if u not in logged]
                if missing:
                    return (f"round_certificate round {body.round}: its batch names {missing[0].hex()[:16]}..., "
                            "no update commitment of that round")
            earlier = self.certificates.setdefault(body.round, (index, body))[1]
            if earlier.value != body.value:
                return (f"round_certificate round {body.round}: a second certified value (entry "
                        f"{self.certificates[body.round][0]} certified another)")
        elif entry.type == "committee_evidence":
            if body.node is not None and body.node not in {k.node_id for k in self._validator_keys(state)}:
                return (f"committee_evidence ({body.kind}) names node {body.node.hex()[:16]}..., "
                        "not a validator")
        elif entry.type == "aggregate_record" and simulated and body.rule != "initial":
            return self._certified(body)
        return None

    def _certified(self, body) -> str | None:
        """A committee run's aggregate is the one its round's certificate signed."""
        r = body.round
        if r not in self.certificates:
            return (f"aggregate record of round {r}: a committee run's aggregate needs a certificate, "
                    f"round {r} has none")
        at, cert = self.certificates[r]
        if body.params.get("certificate") != at:
            cited = body.params.get("certificate")
            return f"aggregate record of round {r} cites certificate entry {cited}, round {r}'s is entry {at}"
        inputs = [self.index.commitments.get(x.entry) for x in body.inputs]
        if [c.body.update if c is not None else None for c in inputs] != list(cert.batch):
            return f"aggregate record of round {r}: its inputs are not the certified batch, in its order"
        recorded = body.params.get("aggregate")
        if recorded != cert.aggregate.hex():
            return (f"aggregate record of round {r}: it applied aggregate {str(recorded)[:16]}..., the "
                    f"certificate signed {cert.aggregate.hex()[:16]}...")
        return None

    def _rollback(self, index: int, body) -> str | None:
        activation = self.activations.get(body.activation)
        if activation is None:
            return f"activation entry {body.activation} did not pass"
        proposal = self.proposals.get(activation.proposal)
        if proposal is None or proposal.action != "rollback":
            return f"activation entry {body.activation} does not approve a rollback"
        named = proposal.params.get("model")
        if proposal.params.get("round") != body.round or named not in (None, body.model.hex()):
            return f"proposal {activation.proposal} approved another round or model than this rollback's"
        held, produced = self.model_after(body.round)
        if held is None:
            return f"the log holds no model for round {body.round}"
        if held != body.model:
            return (f"names model {body.model.hex()[:16]}... for round {body.round}, but the log's model "
                    f"after that round is {held.hex()[:16]}...")
        if not produced < body.checkpoint <= index:
            return (f"checkpoint size {body.checkpoint} does not cover entry {produced} (round "
                    f"{body.round}'s model) or is not before the rollback")
        self.approved.append({"entry": index, "round": body.round, "at": activation.round,
                              "reason": body.reason, "votes": len(activation.votes),
                              "validators": len(self._validators()), "model": body.model,
                              "checkpoint": body.checkpoint})
        return None

    def model_after(self, round_: int) -> tuple[bytes | None, int]:
        """The model the log says the network held after ``round_`` and the entry that made it:
        the star's global model, or (gossip) the RFC 9162 root over every trainer's model hash,
        each its latest aggregate up to that round, else the starting model. A log without a
        round-0 record (not the engine's) is read as one chain of aggregates."""
        genesis = self.index.genesis
        records = [r for r in self.index.records if r.body.round <= round_ and r.body.rule != "initial"]
        if genesis is None or genesis.body.params.get("topology") != "gossip":
            last = records[-1] if records else genesis
            return (None, 0) if last is None else (last.body.result, last.index)
        latest = {r.node: r for r in records}
        chosen = [latest.get(node, genesis) for node in self.index.trainers]
        return root_of(leaf_hashes([r.body.result for r in chosen])), max(r.index for r in chosen)

    def unstored_checkpoints(self, sizes: set[int]) -> list[str]:
        """Findings for rollbacks whose checkpoint size is not one the log stored."""
        return [f"rollback entry {rb['entry']}: no stored checkpoint has size {rb['checkpoint']}"
                for rb in self.approved if rb["checkpoint"] not in sizes]

    def reverted(self) -> list[str]:
        """One line per approved rollback: the rounds reverted, to what, by whom, and why."""
        lines = []
        for rb in self.approved:
            rounds = list(range(rb["round"] + 1, rb["at"]))
            what = _span(rounds) if rounds else "no round"
            lines.append(f"reverted: {what}, by rollback entry {rb['entry']} at round {rb['at']} to round "
                         f"{rb['round']}'s model {rb['model'].hex()[:16]}... (checkpoint size "
                         f"{rb['checkpoint']}), approved by {rb['votes']} of {rb['validators']} validators: "
                         f"{rb['reason']}")
        return lines
