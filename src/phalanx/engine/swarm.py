"""A Sybil swarm: one adversary buys identities under the network's admission policy.

The adversary holds a budget in the policy's unit (:mod:`phalanx.defenses.admission`). At its
arrival round it buys as many identities as the budget allows, up to the node slots the scenario
reserved for it; each identity joins the network as a node. When one is quarantined its cost is
lost (a stake is slashed, a proof of work was spent anyway), its vouchers are penalised under
``vouching``, and, while replacement slots remain (``at_once`` identities at the start, the other
slots kept for replacements), the adversary buys a replacement from what is left of its budget,
which joins the next round.

Node slots never bought never join (their join round stays past the end of the run). Identities
are bought in slot order, and under ``vouching`` each is vouched for by the adversary's
``vouches`` most recent identities, topped up by bribed honest members (drawn at random), whom
the penalty then hits too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from phalanx.core.seeding import generator
from phalanx.defenses.admission import Admission, Vouching

NEVER = 1 << 40  # the join round of a slot that is never bought


@dataclass
class Swarm:
    slots: list[int]  # node ids reserved for the adversary, in buying order
    policy: Admission
    budget: float
    arrival: int
    seed: int
    honest: list[int]  # honest members, who may be bribed to vouch
    at_once: int | None = None  # identities bought at the start (None: every slot); the rest replace
    joins: torch.Tensor | None = None  # (n,) the guard's join rounds, written here
    left: float = 0.0
    bought: int = 0
    slashed: float = 0.0
    costs: dict[int, float] = field(default_factory=dict)
    vouchers: dict[int, list[int]] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    initial: int = 0

    def start(self, joins: torch.Tensor) -> None:
        """Buy the first identities with the whole budget; they join at ``arrival``."""
        self.joins = joins
        self.left = self.budget
        self.initial = self._buy(self.at_once or len(self.slots), self.arrival, "start")

    def _buy(self, limit: int, when: int, why: str) -> int:
        g = generator(self.seed, "swarm", why, self.bought)
        purchase = self.policy.buy(self.left, min(limit, len(self.slots) - self.bought), g,
                                   members=self.active_count())
        for cost in purchase.costs:
            node = self.slots[self.bought]
            self.joins[node] = when
            self.costs[node] = cost
            self.vouchers[node] = self._vouchers_for(node, g)
            self.bought += 1
        self.left = purchase.left
        return purchase.identities

    def active_count(self) -> int:
        return sum(1 for s in self.slots[: self.bought] if s not in self.lost)

    def _vouchers_for(self, node: int, g: torch.Generator) -> list[int]:
        if not isinstance(self.policy, Vouching):
            return []
        own = [s for s in self.slots[: self.bought] if s not in self.lost][-self.policy.vouches:]
        need = max(0, self.policy.vouches - self.policy.insiders - len(own))
        bribed = []
        if need and self.honest:
            pick = torch.randperm(len(self.honest), generator=g)[:need].tolist()
            bribed = [self.honest[i] for i in pick]
        return own + bribed

    def quarantined(self, r: int, node: int) -> tuple[list[int], str]:
        """An identity was quarantined at round ``r``: slash it, maybe replace it.

        Returns the vouchers to penalise and a line for the events.
        """
        if node not in self.costs:
            return [], ""
        self.lost.add(node)
        cost = self.costs[node]
        refund = self.policy.on_quarantine(cost)
        self.slashed += cost - refund
        self.left += refund
        text = f"adversary loses identity {node} ({cost - refund:g} {self.policy.unit})"
        if self.bought < len(self.slots):
            got = self._buy(1, r + 1, f"respawn-{r}")
            if got:
                text += f"; buys node {self.slots[self.bought - 1]}, joining at round {r + 1}"
        return list(self.vouchers.get(node, [])), text

    def summary(self) -> dict:
        spent = sum(self.costs.values())
        return {"policy": getattr(self.policy, "label", ""), "unit": self.policy.unit, "budget": self.budget,
                "identities_initial": self.initial, "identities_bought": self.bought,
                "identities_lost": len(self.lost), "spent": spent, "slashed": self.slashed,
                "left": self.left, "honest_join_cost": self.policy.honest_cost()}
