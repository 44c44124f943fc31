"""Admission cost: what one more identity costs, and so how many a Sybil budget buys.

In an open network an identity is free, and one adversary can be a majority (Douceur 2002, "The
Sybil attack", Lemma 1: without a central authority, only a cost per identity bounds how many one
entity presents). Each policy here prices an identity in its own unit and says how many a budget
buys (:meth:`Admission.buy`), what joining costs an honest node, and what happens when a node is
quarantined (:meth:`Admission.on_quarantine`):

- ``open``: free; a budget buys ``max_identities`` (the cap stands for "as many as it wants").
- ``proof_of_work``: a hashcash puzzle (Back 2002, "Hashcash: a denial of service
  counter-measure"): find a nonce such that ``SHA-256(challenge || nonce)`` starts with ``bits``
  zero bits. The cost is counted in hash evaluations, each succeeding with probability
  ``2^-bits``: a puzzle costs a geometric number of evaluations (mean ``2^bits``). :func:`solve`
  and :func:`verify` are the real puzzle; :meth:`ProofOfWork.buy` draws the costs from the same
  distribution, so a budget of ``2^30`` evaluations need not be hashed to be priced. Honest
  nodes pay it too, and a quarantined identity's work is simply lost.
- ``stake``: each identity locks ``stake`` units of the adversary's budget. It is returned when
  the node leaves in good standing and **slashed** (lost) when the node is quarantined; the
  adversary can then re-buy only from what remains. Honest nodes lock it too, but get it back.
- ``vouching``: a newcomer needs ``vouches`` members to vouch for it; a voucher loses
  reputation when its vouchee is quarantined (``penalty`` negative observations at every
  receiver, :mod:`phalanx.defenses.reputation`). The adversary starts with ``insiders``
  compromised members; every identity it gets in can vouch for the next. Missing vouches are
  bought from honest members at ``bribe`` each, so the first identities are dear and, once the
  adversary holds ``vouches`` members, the rest are free: vouching stops outsiders, not an
  adversary with a foothold.

A :class:`Purchase` records what a budget bought: identities, what each cost and what is left.
The range turns these into Sybil budget curves: per policy, identities against budget, and the
damage those identities do (:mod:`phalanx.range.runner`).

Worked example: a budget of 100 buys 10 identities at ``stake: 10``, on average ``100 / 2^4`` =
6.25 puzzles at ``proof_of_work: 4`` bits (a budget of 100 evaluations), and with ``vouching``,
``vouches: 2``, ``insiders: 0``, ``bribe: 20``: 2 bribes (40) for the first, 1 (20) for the second,
then every identity is free: ``max_identities``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field, validate_call

from phalanx.core import Registry

ADMISSION: Registry = Registry("admission policy")

Budget = Annotated[float, Field(ge=0, le=1e18)]


@dataclass
class Purchase:
    """What a budget bought under a policy: identities, the cost of each, what is left."""

    policy: str
    budget: float
    identities: int
    costs: list[float] = field(default_factory=list)
    left: float = 0.0
    unit: str = ""

    def as_dict(self) -> dict:
        return {"policy": self.policy, "budget": self.budget, "identities": self.identities,
                "spent": self.budget - self.left, "left": self.left, "unit": self.unit}


class Admission:
    """Base class: price identities in a unit, buy them, and react to a quarantine."""

    unit = ""
    label = ""

    def buy(self, budget: float, limit: int, generator: torch.Generator, members: int = 0) -> Purchase:
        """Identities that ``budget`` buys, at most ``limit``; ``members`` the adversary already holds."""
        raise NotImplementedError

    def honest_cost(self) -> float:
        """What joining costs an honest node (lost for proof of work, locked for a stake)."""
        return 0.0

    def on_quarantine(self, cost: float) -> float:
        """What the adversary gets back when an identity bought for ``cost`` is quarantined."""
        return 0.0


@ADMISSION.register("open")
class Open(Admission):
    """Anyone joins for free: a budget buys as many identities as the adversary wants."""

    unit = "nothing"
    label = "open"

    def buy(self, budget, limit, generator, members=0):
        return Purchase("open", budget, limit, [0.0] * limit, budget, self.unit)


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits ``digest`` starts with."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def verify(challenge: bytes, nonce: int, bits: int) -> bool:
    """Whether ``SHA-256(challenge || nonce as 8 bytes)`` starts with ``bits`` zero bits."""
    if not 0 <= nonce < 1 << 64:
        return False
    return leading_zero_bits(hashlib.sha256(challenge + nonce.to_bytes(8, "big")).digest()) >= bits


def solve(challenge: bytes, bits: int, start: int = 0, limit: int = 1 << 32) -> tuple[int, int]:
    """The first nonce from ``start`` that solves the puzzle, and how many hashes it took."""
    for tries, nonce in enumerate(range(start, start + limit), start=1):
        if verify(challenge, nonce, bits):
            return nonce, tries
    raise RuntimeError(f"proof_of_work: no solution within {limit} nonces at {bits} bits")


@ADMISSION.register("proof_of_work")
class ProofOfWork(Admission):
    """Hashcash: an identity costs a puzzle of ``bits`` leading zero bits, counted in hash evaluations."""

    unit = "hash evaluations"
    label = "proof_of_work"

    @validate_call
    def __init__(self, *, bits: Annotated[int, Field(ge=0, le=64)] = 20):
        self.bits = bits

    def buy(self, budget, limit, generator, members=0):
        p = 2.0 ** -self.bits
        costs: list[float] = []
        left = budget
        while len(costs) < limit:
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            # tries until the first success: geometric on {1, 2, ...} with success probability p
            tries = 1.0 if p >= 1 else math.floor(math.log1p(-u) / math.log1p(-p)) + 1.0
            if tries > left:
                break
            costs.append(tries)
            left -= tries
        return Purchase(self.label, budget, len(costs), costs, left, self.unit)

    def honest_cost(self):
        return 2.0 ** self.bits


@ADMISSION.register("stake")
class Stake(Admission):
    """Each identity locks ``stake`` units; slashed when it is quarantined, returned otherwise."""

    unit = "stake units"
    label = "stake"

    @validate_call
    def __init__(self, *, stake: Annotated[float, Field(gt=0, le=1e18)] = 100.0):
        self.stake = stake

    def buy(self, budget, limit, generator, members=0):
        count = min(limit, int(budget // self.stake))
        return Purchase(self.label, budget, count, [self.stake] * count, budget - count * self.stake, self.unit)

    def honest_cost(self):
        return self.stake


@ADMISSION.register("vouching")
class Vouching(Admission):
    """A newcomer needs ``vouches`` members' vouches; vouchers lose reputation if it is quarantined."""

    unit = "bribes"
    label = "vouching"

    @validate_call
    def __init__(
        self,
        *,
        vouches: Annotated[int, Field(ge=1, le=1000)] = 3,
        insiders: Annotated[int, Field(ge=0, le=100_000)] = 0,
        bribe: Annotated[float, Field(gt=0, le=1e18)] = 100.0,
        penalty: Annotated[float, Field(ge=0, le=1000)] = 5.0,
    ):
        self.vouches, self.insiders, self.bribe, self.penalty = vouches, insiders, bribe, penalty

    def buy(self, budget, limit, generator, members=0):
        own = self.insiders + members
        costs: list[float] = []
        left = budget
        while len(costs) < limit:
            cost = max(0, self.vouches - own) * self.bribe
            if cost > left:
                break
            costs.append(float(cost))
            left -= cost
            own += 1
        return Purchase(self.label, budget, len(costs), costs, left, self.unit)
