"""The round's sender-aware defenses, in one object the engine calls at four points.

:class:`Guard` holds what lives across rounds around the aggregation: the screens' state per
(receiver, sender) slot (FoolsGold's histories, reputation's evidence), the validators' vote and
its decisions, the data auditor, the Sybil swarm's purchases, and the detection log. The
simulation (:mod:`phalanx.engine.simulation`) calls it:

1. :meth:`Guard.present` at the start of a round: the live nodes that have joined and are not
   quarantined (the others send nothing and nobody listens to them);
2. :meth:`Guard.screen` before each receiver's chain: the screens reweigh, rescale and flag the
   rows, and say how much noise to add after the rule;
3. :meth:`Guard.observe` after it: reputation evidence from the rows and the aggregate (and the
   root-set loss of each row, in a star with root data); :meth:`Guard.invalid` whenever a row
   was dropped as invalid;
4. :meth:`Guard.close_round` at the end: data audits, the validators' vote, quarantine and
   re-admission decisions, and the round's detection metrics.

**Slots.** Star: one receiver (the server, row 0 of the state) and one slot per node. Gossip:
receiver ``r``'s slot ``s`` is its ``s``-th table neighbour (slot 0 is itself: always kept, never
scored or flagged).

**The seam for the ledger.** Every network-wide decision is a
:class:`~phalanx.defenses.quarantine.Decision`, appended to :attr:`Guard.decisions`, shown as an
event, and passed to :attr:`Guard.on_decision` (``None`` by default), where a ledger writes the
governance entry. Audit failures and rejected registrations are events of kind ``evidence``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from phalanx.core.seeding import generator
from phalanx.defenses.provenance import audit
from phalanx.defenses.quarantine import Decision, ValidatorVote
from phalanx.defenses.reputation import Reputation
from phalanx.defenses.screen import Screen, unscreened
from phalanx.engine.detection import DetectionLog, scores
from phalanx.engine.swarm import NEVER, Swarm
from phalanx.models.flat import FlatModel


@dataclass
class Audits:
    """The data auditor: per node its statistics opening (or ``None``) and the labels it holds."""

    openings: Sequence[object | None]
    held: Sequence[torch.Tensor]
    num_classes: int
    per_round: int = 1
    tolerance: float = 0.1

    def registration_problem(self, node: int) -> str | None:
        """Why node ``node``'s commitment cannot be registered, or ``None``."""
        opening = self.openings[node]
        if opening is None:
            return "no dataset commitment"
        commitment = getattr(opening, "commitment", None)
        if not isinstance(commitment, (bytes, bytearray)) or len(commitment) != 32:
            return "the dataset commitment is not a 32-byte hash"
        return None


@dataclass
class Guard:
    screens: list[Screen]
    malicious: torch.Tensor  # (n,) bool: the truth, read only by the detection metrics
    kind: str  # "star" or "gossip"
    events: list[dict]
    vote: ValidatorVote
    table_index: torch.Tensor | None = None  # gossip: (n, k), slot 0 = the receiver itself
    validators: list[int] = field(default_factory=list)  # gossip: node ids; star: the server
    joins: torch.Tensor | None = None  # (n,) the round each node joins
    swarm: Swarm | None = None
    audits: Audits | None = None
    root: tuple[torch.Tensor, torch.Tensor] | None = None  # trusted root data (star), for root_loss
    flat_model: FlatModel | None = None
    dim: int = 0  # the model's parameter count (the size of a history)
    device: torch.device = torch.device("cpu")  # where the state lives (the rows' device)
    dtype: torch.dtype = torch.float32  # the rows' dtype (a history's)
    seed: int = 0
    on_decision: Callable[[Decision], None] | None = None
    decisions: list[Decision] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.malicious.shape[0]
        self.malicious = self.malicious.cpu()
        if self.joins is None:
            self.joins = torch.ones(n, dtype=torch.int64)
        if self.swarm is not None:
            self.swarm.start(self.joins)
        for screen in self.screens:
            if self.kind not in screen.topologies:
                raise ValueError(f"{screen.name()}: runs in {', '.join(screen.topologies)} only, not {self.kind}"
                                 + ("; a gossip receiver sees its neighbours' models, not their updates"
                                    if screen.needs_updates else ""))
        self.reputation = next((s for s in self.screens if isinstance(s, Reputation)), None)
        if self.reputation is not None and self.reputation.needs_root_loss and self.root is None:
            raise ValueError("reputation: root_loss evidence needs a trusted root set (star, root data)")
        self.receivers = 1 if self.kind == "star" else n
        self.slots = n if self.kind == "star" else self.table_index.shape[1]
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.screens]
        self.log = DetectionLog(self.malicious, self.joins)
        self.honest_quarantined: set[int] = set()
        self.last_claims = torch.full((n,), float("nan"), dtype=torch.float64)
        self._begin()
        self._registered = torch.ones(n, dtype=torch.bool)
        if self.audits is not None:
            for node in range(n):
                problem = self.audits.registration_problem(node)
                if problem is not None:
                    self._registered[node] = False
                    self.events.append({"round": 0, "kind": "evidence", "target": node,
                                        "text": f"node {node} refused at registration: {problem}"})

    # -- state --------------------------------------------------------------------------------
    def _begin(self) -> None:
        n = self.malicious.shape[0]
        self._against = torch.zeros(self.receivers, n, dtype=torch.bool)
        self._seen = torch.zeros(self.receivers, n, dtype=torch.bool)
        self._admitted = 0  # malicious rows that reached a rule this round

    def _table(self, i: int) -> dict[str, torch.Tensor]:
        """Screen ``i``'s state, ``(receivers, slots, *shape)`` per name, allocated on first use."""
        if not self.state[i]:
            shapes = self.screens[i].state_shapes(self.dim)
            self.state[i] = {name: torch.zeros(self.receivers, self.slots, *shape,
                                               dtype=torch.float64 if not shape else self.dtype,
                                               device=self.device)
                             for name, shape in shapes.items()}
        return self.state[i]

    def _gather(self, i, recv_rows, slots, device):
        table = self._table(i)
        r = recv_rows.to(self.device)[:, None]
        return {name: t[r, slots.to(self.device)].to(device) for name, t in table.items()}

    def _scatter(self, i, recv_rows, slots, new: dict[str, torch.Tensor]) -> None:
        table = self.state[i]
        for name, value in new.items():
            t = table[name]
            t[recv_rows.to(t.device)[:, None], slots.to(t.device)] = value.to(t.dtype)

    def _rows_of(self, receivers: torch.Tensor) -> torch.Tensor:
        """State rows of the receiving nodes (star: the server is row 0)."""
        return torch.zeros(1, dtype=torch.int64) if self.kind == "star" else receivers.cpu()

    def _slots_of(self, receivers: torch.Tensor, senders: torch.Tensor) -> torch.Tensor:
        if self.kind == "star":
            return senders.cpu()
        k = self.table_index.shape[1]
        return torch.arange(k)[None, :].expand(len(receivers), k)

    # -- 1. who is in ---------------------------------------------------------------------------
    def present(self, r: int, alive: torch.Tensor) -> torch.Tensor:
        """``alive`` without the nodes not yet joined, refused at registration, or quarantined."""
        self._begin()
        self._members = (self.joins <= r) & self._registered  # the population the metrics count
        self._present = alive.cpu() & self._members & ~self.vote.quarantined
        return self._present.to(alive.device)

    # -- 2. before the rule -----------------------------------------------------------------------
    def screen(self, r: int, receivers: torch.Tensor, senders: torch.Tensor, rows: torch.Tensor,
               mask: torch.Tensor, weights: torch.Tensor | None, accepts_weights: bool,
               base: torch.Tensor | None = None):
        """Screen ``rows`` ``(m, k, d)`` of ``receivers`` ``(m,)`` from ``senders`` ``(m, k)``.

        ``base`` ``(m, d)``: the model the rows are relative to (see :meth:`Screen.screen`).

        Returns ``(rows, mask, weights, noise_std)``: the screened rows, the mask without the rows
        weighted 0, the weights for the rule (``None`` if it takes none) and ``(m,)`` noise or ``None``.
        """
        recv_rows = self._rows_of(receivers)
        slots = self._slots_of(receivers, senders)
        g = generator(self.seed, "round", r, "screen", device=rows.device)
        result = unscreened(rows, mask)
        before_reputation = None
        for i, sc in enumerate(self.screens):
            if sc is self.reputation:
                before_reputation = result.flags & mask
            state = self._gather(i, recv_rows, slots, rows.device)
            out, new = sc.screen(result.rows, mask, state, g, base=base)
            if new:
                self._scatter(i, recv_rows, slots, new)
            result = result.then(out)
        self._stash = (receivers, before_reputation)
        weights_s, flags = result.weights, result.flags & mask
        screened = result.rows
        if self.kind == "gossip":  # a receiver keeps its own model
            weights_s = weights_s.clone()
            weights_s[:, 0] = 1.0
            flags = flags.clone()
            flags[:, 0] = False
            screened = screened.clone()
            screened[:, 0] = rows[:, 0]
        if self.reputation is None:  # without reputation, the screens' flags are the votes
            self._mark(recv_rows, senders, mask, flags)
        keep = mask & (weights_s > 0)
        bad = self.malicious[senders.cpu()].to(keep.device) & keep
        if self.kind == "gossip":
            bad[:, 0] = False
        self._admitted += int(bad.sum())
        out_w = None
        if accepts_weights:
            out_w = weights_s * (weights if weights is not None else torch.ones_like(weights_s))
        return screened, keep, out_w, result.noise_std

    def _mark(self, recv_rows, senders, mask, against) -> None:
        s = senders.cpu()
        m = mask.cpu().clone()
        if self.kind == "gossip":
            m[:, 0] = False
        r = recv_rows[:, None].expand_as(s)
        self._seen[r[m], s[m]] = True
        hit = m & against.cpu()
        self._against[r[hit], s[hit]] = True

    # -- 3. after the rule ------------------------------------------------------------------------
    def observe(self, r: int, receivers: torch.Tensor, senders: torch.Tensor, rows: torch.Tensor,
                mask: torch.Tensor, aggregate: torch.Tensor, base: torch.Tensor | None = None) -> None:
        """Reputation evidence from each receiver's rows (as received) and its aggregate (same frame)."""
        rep = self.reputation
        if rep is None:
            return
        i = self.screens.index(rep)
        recv_rows = self._rows_of(receivers)
        slots = self._slots_of(receivers, senders)
        seen = mask.clone()
        if self.kind == "gossip":
            seen[:, 0] = False
        state = self._gather(i, recv_rows, slots, rows.device)
        losses = self._root_losses(rows, seen, base) if rep.needs_root_loss else None
        new = rep.observe(rows, seen, aggregate, state, losses, self._flags_for(receivers))
        self._scatter(i, recv_rows, slots, new)
        low = rep.scores(new) < rep.threshold
        self._mark(recv_rows, senders, seen, low)

    def _flags_for(self, receivers: torch.Tensor | None) -> torch.Tensor | None:
        """The earlier screens' flags of ``receivers`` (a subset of the last screened ones, in order)."""
        screened, flags = getattr(self, "_stash", (None, None))
        if flags is None or receivers is None or screened is None:
            return flags
        return flags[torch.isin(screened.to(receivers.device), receivers).to(flags.device)]

    @torch.no_grad()
    def _root_losses(self, rows, mask, base) -> torch.Tensor:
        fm = self.flat_model
        x, y = self.root
        out = torch.full(mask.shape, float("nan"), dtype=torch.float64)
        for (i, j) in mask.nonzero().tolist():
            fm.flat.copy_(base + rows[i, j])
            out[i, j] = float(F.cross_entropy(fm.module(x), y))
        return out.to(rows.device)

    def invalid(self, receivers: torch.Tensor | None, senders: torch.Tensor) -> None:
        """Rows from ``senders`` were dropped as invalid by ``receivers`` (star: ``None``)."""
        rep = self.reputation
        if rep is None or rep.invalid == 0 or len(senders) == 0:
            return
        senders = senders.cpu()
        if self.kind == "star":
            rows, slots = torch.zeros_like(senders), senders
        else:
            rows = receivers.cpu()
            slots = (self.table_index[rows] == senders[:, None]).to(torch.int8).argmax(1)
        table = self._table(self.screens.index(rep))
        table["beta"].index_put_((rows.to(table["beta"].device), slots.to(table["beta"].device)),
                                 torch.full((len(senders),), rep.invalid, dtype=table["beta"].dtype,
                                            device=table["beta"].device), accumulate=True)
        # the receiver saw these senders this round, and now holds this score of them
        low = rep.scores({k: t[rows.to(t.device), slots.to(t.device)] for k, t in table.items()}) < rep.threshold
        self._seen[rows, senders] = True
        self._against[rows[low.cpu()], senders[low.cpu()]] = True

    def note_claims(self, senders: torch.Tensor, claims: torch.Tensor) -> None:
        """The sample counts ``senders`` claimed this round (checked by the auditor)."""
        self.last_claims[senders.cpu()] = claims.detach().cpu().to(torch.float64)

    def penalize(self, node: int, amount: float, why: str | None, r: int) -> None:
        """``amount`` negative observations of ``node`` at every receiver that scores it."""
        rep = self.reputation
        if rep is not None and amount > 0 and self.state[self.screens.index(rep)]:
            beta = self.state[self.screens.index(rep)]["beta"]
            if self.kind == "star":
                beta[0, node] += amount
            else:
                where = (self.table_index == node)
                where[:, 0] = False
                beta[where.to(beta.device)] += amount
        if why:
            self.events.append({"round": r, "kind": "evidence", "target": node, "text": why})

    # -- 4. end of round --------------------------------------------------------------------------
    def close_round(self, r: int) -> dict:
        """Audits, the validators' vote and its decisions, and the round's detection metrics."""
        present = self._present
        if self.audits is not None:
            self._audit(r, present)
        if self.kind == "star":
            rows, ids = [0], [-1]
        else:
            ids = self.validators or [i for i in range(self.receivers) if not bool(self.malicious[i])]
            rows = ids
        against, seen = self._against[rows], self._seen[rows]
        flagged, decisions = self.vote.step(r, against, seen, self._held_scores(rows), ids)
        for d in decisions:
            self._apply(d)
        # quarantined nodes stay in the population: a mistaken quarantine stays a false flag
        out = scores(flagged, self.malicious, self._members)
        self.log.record(r, flagged & self._members, out["detect_f1"])
        out.update({"quarantined": int(self.vote.quarantined.sum()),
                    "honest_quarantined": len(self.honest_quarantined),
                    "malicious_present": int((self.malicious & present).sum()),
                    "malicious_admitted": self._admitted})
        return out

    def _held_scores(self, rows: list[int]) -> torch.Tensor:
        n = self.malicious.shape[0]
        out = torch.full((len(rows), n), float("nan"), dtype=torch.float64)
        rep = self.reputation
        if rep is None or not self.state[self.screens.index(rep)]:
            return out
        score = rep.scores(self.state[self.screens.index(rep)]).cpu()
        if self.kind == "star":
            out[0] = score[0]
        else:
            for v, node in enumerate(rows):
                out[v, self.table_index[node, 1:]] = score[node, 1:]
        return out

    def _audit(self, r: int, present: torch.Tensor) -> None:
        a = self.audits
        candidates = present.nonzero().squeeze(1)
        if len(candidates) == 0 or a.per_round == 0:
            return
        g = generator(self.seed, "round", r, "audit")
        pick = candidates[torch.randperm(len(candidates), generator=g)[: a.per_round]].tolist()
        failed = []
        for node in pick:
            claim = self.last_claims[node]
            claims = [float(claim)] if bool(torch.isfinite(claim)) else []
            result = audit(a.openings[node], a.held[node], a.num_classes, a.tolerance, claims)
            if not result.ok:
                amount = self.reputation.audit if self.reputation is not None else 0.0
                self.penalize(node, amount, None, r)
                failed.append((node, result.reason))
        if failed:  # one event per round: the nodes that failed and why
            self.events.append({"round": r, "kind": "evidence", "target": [n for n, _ in failed],
                                "text": "audit failed: " + "; ".join(f"node {n}: {why}" for n, why in failed)})

    def _apply(self, d: Decision) -> None:
        self.decisions.append(d)
        self.events.append({"round": d.round, "kind": d.action, "target": d.node, "text": f"node {d.node} "
                            f"{'quarantined' if d.action == 'quarantine' else 'released'}: {d.reason}"})
        if self.on_decision is not None:
            self.on_decision(d)
        if d.action == "quarantine":
            if not bool(self.malicious[d.node]):
                self.honest_quarantined.add(d.node)
            if self.swarm is not None:
                vouchers, text = self.swarm.quarantined(d.round, d.node)
                if text:
                    self.events.append({"round": d.round, "kind": "swarm", "target": d.node, "text": text})
                penalty = getattr(self.swarm.policy, "penalty", 0.0)
                for v in vouchers:
                    self.penalize(v, penalty, f"node {v} vouched for quarantined node {d.node}", d.round)
        elif getattr(self.vote.readmit, "reset", False):
            for state in self.state:
                for name, t in state.items():
                    if self.kind == "star":
                        t[0, d.node] = 0
                    else:
                        where = self.table_index == d.node
                        where[:, 0] = False
                        t[where.to(t.device)] = 0

    def summary(self) -> dict:
        """What the run's summary keeps: decisions, detection, the swarm's accounts."""
        out = {"decisions": [d.as_dict() for d in self.decisions], "detection": self.log.summary(),
               "honest_quarantined": sorted(self.honest_quarantined)}
        if self.swarm is not None:
            out["swarm"] = self.swarm.summary()
        scores = self.reputation_scores()
        if scores is not None:
            out["reputation"] = scores
        return out

    def reputation_scores(self) -> list[float | None] | None:
        """Each node's mean reputation over the receivers that score it at the end of the run
        (``None`` for a node no receiver scored), or ``None`` without the reputation screen."""
        rep = self.reputation
        if rep is None or not self.state[self.screens.index(rep)]:
            return None
        held = self._held_scores([0] if self.kind == "star" else list(range(self.receivers)))
        seen = torch.isfinite(held)
        total = torch.where(seen, held, torch.zeros_like(held)).sum(0)
        count = seen.sum(0)
        return [round(float(t / c), 6) if c else None for t, c in zip(total.tolist(), count.tolist())]


__all__ = ["NEVER", "Audits", "Guard"]
