"""Quarantine, slashing and re-admission: network-wide decisions, taken by the validators.

A receiver's reputation scores are its own business (:mod:`phalanx.defenses.reputation`): they
change only its own weights. Removing a node from the whole network is a governance decision: a
proposal that cites the evidence, carried by the validators. In the simulation the validators'
vote is this policy:

- each round, every validator that scores node ``j`` (it received ``j``'s rows: in a star the
  server, in gossip the validators among ``j``'s neighbours) votes against ``j`` when its score
  of ``j`` is below ``threshold`` or one of its screens flagged ``j``'s row;
- ``j`` is **flagged** this round when at least ``quorum`` (default two thirds) of the validators
  that score it vote against it;
- ``j`` is **quarantined** after ``rounds`` consecutive flagged rounds: every node then drops
  its messages, it takes no part in rounds, and the admission policy slashes its stake
  (:mod:`phalanx.defenses.admission`).

Every quarantine and release is a :class:`Decision`: the node, the round, the votes and voters,
the scores each validator held and the streak. The engine keeps them in order
(``Simulation.guard.decisions``) and calls its ``on_decision`` hook with each one, which is where
a ledger turns it into a governance entry (``quarantine`` with ``action``, ``reason`` and the
cited evidence; :meth:`Decision.entry`); the events list shows them too.

**Re-admission** is a policy (:data:`READMISSION`): ``never`` keeps a quarantined node out; ``after``
releases it after ``rounds`` rounds, with its scores kept (``reset=false``: it must earn its way
back from where it fell) or reset to the prior.

Worked example: 3 validators, ``rounds=2``: a node two of them score below the threshold in
rounds 4 and 5 is quarantined at round 5 (2/3 is a quorum); one vote in round 5 would reset the
streak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, validate_call

from phalanx.core import Registry

READMISSION: Registry = Registry("re-admission policy")


@dataclass(frozen=True)
class Decision:
    """A network-wide decision about one node, with the evidence the validators cited."""

    round: int
    node: int
    action: Literal["quarantine", "release"]
    reason: str
    votes: tuple[int, ...] = ()  # validators that voted for the action (against the node)
    voters: tuple[int, ...] = ()  # validators that scored the node this round
    evidence: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The fields of the ledger's ``quarantine`` entry (the node as its id in the run)."""
        return {"node": self.node, "round": self.round, "action": self.action, "reason": self.reason,
                "evidence": {"votes": list(self.votes), "voters": list(self.voters), **self.evidence}}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["votes"], out["voters"] = list(self.votes), list(self.voters)
        return out


@READMISSION.register("never")
class Never:
    """A quarantined node stays out for the rest of the run."""

    reset = False

    def due(self, since: torch.Tensor, r: int) -> torch.Tensor:
        return torch.zeros_like(since, dtype=torch.bool)


@READMISSION.register("after")
class After:
    """Release a quarantined node after ``rounds`` rounds; ``reset`` its scores to the prior or keep them."""

    @validate_call
    def __init__(self, *, rounds: Annotated[int, Field(ge=1, le=100_000)] = 10, reset: bool = False):
        self.rounds, self.reset = rounds, reset

    def due(self, since: torch.Tensor, r: int) -> torch.Tensor:
        return (since >= 0) & (r - since >= self.rounds)


class ValidatorVote:
    """Quarantine after ``rounds`` consecutive rounds flagged by a ``quorum`` of the validators."""

    def __init__(self, n: int, *, threshold: float = 0.3, rounds: int = 3, quorum: float = 2 / 3,
                 readmit: Any = None):
        if not 0 < quorum <= 1:
            raise ValueError(f"quarantine: quorum must be in (0, 1] (got {quorum})")
        self.threshold, self.rounds, self.quorum = threshold, rounds, quorum
        self.readmit = readmit if readmit is not None else Never()
        self.streak = torch.zeros(n, dtype=torch.int64)
        self.since = torch.full((n,), -1, dtype=torch.int64)  # round of quarantine, -1 if active

    @property
    def quarantined(self) -> torch.Tensor:
        return self.since >= 0

    def flagged(self, against: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """``(n,)``: nodes that at least a quorum of the validators scoring them vote against.

        ``against`` and ``seen`` are ``(v, n)`` bool: validator ``v`` votes against ``j``, and
        scores ``j`` at all this round.
        """
        votes = (against & seen).sum(0)
        voters = seen.sum(0)
        return (voters > 0) & (votes.double() >= self.quorum * voters.double() - 1e-9)

    def step(self, r: int, against: torch.Tensor, seen: torch.Tensor, scores: torch.Tensor,
             validators: list[int]) -> tuple[torch.Tensor, list[Decision]]:
        """One round's vote: ``(flagged (n,), decisions)``. ``scores`` ``(v, n)``, NaN where unseen."""
        decisions: list[Decision] = []
        for j in self.readmit.due(self.since, r).nonzero().squeeze(1).tolist():
            decisions.append(Decision(r, j, "release", f"re-admitted after {r - int(self.since[j])} "
                                      f"rounds of quarantine", evidence={"since": int(self.since[j])}))
            self.since[j], self.streak[j] = -1, 0
        flagged = self.flagged(against, seen) & ~self.quarantined
        active = seen.any(0) & ~self.quarantined
        self.streak = torch.where(flagged, self.streak + 1, torch.where(active, 0, self.streak))
        for j in (self.streak >= self.rounds).nonzero().squeeze(1).tolist():
            voters = [validators[v] for v in seen[:, j].nonzero().squeeze(1).tolist()]
            votes = [validators[v] for v in (seen[:, j] & against[:, j]).nonzero().squeeze(1).tolist()]
            held = {str(validators[v]): round(float(scores[v, j]), 4)
                    for v in seen[:, j].nonzero().squeeze(1).tolist()}
            decisions.append(Decision(
                r, j, "quarantine",
                f"flagged by at least {self.quorum:.0%} of the validators scoring it for "
                f"{int(self.streak[j])} consecutive rounds (threshold {self.threshold:g})",
                tuple(votes), tuple(voters), {"scores": held, "rounds_flagged": int(self.streak[j])}))
            self.since[j], self.streak[j] = r, 0
        return flagged | self.quarantined, decisions
