"""A governance-approved rollback, as a simulated network's validators carry it out (issue 6, item 9).

A scenario schedules one (``ledger: {rollback: {at: 6, to_round: 3}}``). At the end of round
``to_round`` the recorder makes sure a checkpoint covers that round's aggregate record and keeps
the models it produced. At the start of round ``at``, in one transaction:

1. validator 0 proposes (``governance_proposal``, action ``rollback``, parameters the round and
   the model's hash, the reason as its title, voting open until round ``at``);
2. every validator votes yes (``governance_vote``);
3. validator 0 activates it (``governance_activation``), citing the votes: more than two thirds
   of the validators, the same quorum that makes a checkpoint final;
4. validator 0 logs the ``rollback``: the round, the model, the size of the checkpoint that
   covered it, the reason.

The engine then resumes from that model: the star's global model (and a stateful rule's state)
or, in gossip, every node's model as it was after ``to_round``; the hash it names is then the
RFC 9162 root over the nodes' model hashes, in node order. Rounds ``to_round + 1 .. at - 1`` are
reverted; their entries stay in the log (it is append-only), and the audit reports them as
reverted (:mod:`.checks`). Privacy spent in reverted rounds stays spent: a rollback changes the
model, not what was released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from phalanx.ledger import GovernanceActivation, GovernanceProposal, GovernanceVote, Rollback

if TYPE_CHECKING:
    from phalanx.engine.provenance.recorder import LedgerRecorder, RollbackPlan


def passed_proposal(start: int, validators: list, action: str, title: str, r: int,
                    params: dict[str, Any]) -> tuple[list, int]:
    """The entries of a proposal every validator passes in round ``r``: validator 0's proposal,
    each validator's yes vote and validator 0's activation, to be appended from log index
    ``start``; returns them and the activation's index."""
    votes = list(range(start + 1, start + 1 + len(validators)))
    items: list = [(GovernanceProposal(action=action, params=params, title=title, deadline=r), validators[0])]
    items += [(GovernanceVote(proposal=start, choice="yes"), v) for v in validators]
    items.append((GovernanceActivation(proposal=start, votes=votes, round=r), validators[0]))
    return items, votes[-1] + 1


@dataclass
class _Saved:
    rows: torch.Tensor  # the star's global model (d,), or every node's model (n, d)
    previous: torch.Tensor | None  # a stateful rule's state
    model: bytes  # what the rollback entry names
    global_hash: bytes
    model_hash: list[bytes]
    checkpoint: int  # size of a checkpoint that covers the round


class Rollbacks:
    """Keeps what a scheduled rollback restores, and performs it."""

    def __init__(self, recorder: LedgerRecorder, plan: RollbackPlan | None):
        self.rec = recorder
        self.plan = plan
        self.saved: _Saved | None = None
        self.done: list[dict[str, Any]] = []

    def round_finished(self, r: int) -> None:
        if self.plan is None or r != self.plan.to_round:
            return
        rec, sim = self.rec, self.rec.sim
        size = rec.checkpointed()
        rows = sim.global_row if rec.kind == "star" else sim.rows
        self.saved = _Saved(rows.clone(), None if sim.previous is None else sim.previous.clone(),
                            rec.current_model(), rec.global_hash, list(rec.model_hash), size)

    def maybe_roll_back(self, r: int) -> None:
        plan = self.plan
        if plan is None or r != plan.at:
            return
        if self.saved is None:
            raise RuntimeError(f"rollback at round {r}: no model was kept for round {plan.to_round}")
        rec, sim, saved = self.rec, self.rec.sim, self.saved
        ids, ledger = rec.ids, rec.ledger
        validators = [ids.validator(j) for j in range(rec.config.validators)]
        items, activation = passed_proposal(ledger.size, validators, "rollback", plan.reason, r,
                                            {"round": plan.to_round, "model": saved.model.hex()})
        items.append((Rollback(activation=activation, round=plan.to_round, model=saved.model,
                               checkpoint=saved.checkpoint, reason=plan.reason), validators[0]))
        ledger.submit_many(items)
        target = sim.global_row if rec.kind == "star" else sim.rows
        target.copy_(saved.rows)
        sim.previous = None if saved.previous is None else saved.previous.clone()
        rec.global_hash, rec.model_hash = saved.global_hash, list(saved.model_hash)
        reverted = list(range(plan.to_round + 1, r))
        self.done.append({"at": r, "to_round": plan.to_round, "reverted": reverted, "reason": plan.reason,
                          "entry": activation + 1, "model": saved.model.hex()})
        sim.events.append({"round": r, "kind": "rollback", "target": "all",
                           "text": f"rollback to the model of round {plan.to_round} ({span(reverted)} "
                                   f"reverted), approved by {len(validators)} of "
                                   f"{len(validators)} validators: {plan.reason}"})
        rec.checkpointed()


def span(rounds: list[int]) -> str:
    """``[4, 5, 6]`` as "rounds 4-6"; one round as "round 4"; none as "no round"."""
    if not rounds:
        return "no round"
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"
