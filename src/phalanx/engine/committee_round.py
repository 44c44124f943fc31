"""The committee's part of a simulated round: the server of the star's round, replaced by validators.

Nodes train and send their updates as in the star (:meth:`Simulation._star_round`); where the
star's server would aggregate, :meth:`CommitteeRound.certify` runs the real protocol core
(:mod:`phalanx.engine.committee`) in process: the round's sequencer signs an inclusion promise
per update and proposes the batch in sender order; every live validator recomputes the
aggregate (one CPU thread, the scenario's chain) and the statements travel on an in-memory bus
until q votes make the certificate, or every view stalls. The certified aggregate is the one the
global model takes; without a certificate the round is unavailable and the model stays.

Faults come from the topology (:class:`phalanx.network.Committee`): crashed validators hear
nothing; Byzantine ones stay silent, sign a wrong hash, or double-sign; a censoring sequencer
drops an update it promised, which the :class:`~.committee.PromiseBook` proves once the
deadline's rounds are certified, and the committee rotates it out of the schedule. Keys derive
from the scenario seed (a simulation only: anyone with the seed can sign as any validator).

A run that writes its ledger binds the committee to it (:meth:`~CommitteeRound.bind`): the validators
sign with the keys the log registers, under the log's origin, and each update in a batch is
named by its update commitment, so the logged certificate re-checks against the log alone
(:mod:`phalanx.engine.provenance.recorder`, :mod:`phalanx.engine.provenance.checks`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

from phalanx.core.keys import SigningKey
from phalanx.engine.committee import (
    Echo,
    PromiseBook,
    Recomputer,
    Validator,
    Vote,
    promise,
    quorum,
    sequencer,
    sign,
)
from phalanx.engine.committee.recompute import one_thread

ORIGIN = "phalanx.sim/committee"


class CommitteeRound:
    def __init__(self, topology, chain, seed: int):
        self.t, self.chain = topology, chain
        n = topology.validators
        self.crashed = set(range(topology.crashed))
        self.byzantine = set(range(topology.crashed, topology.crashed + topology.byzantine))
        self.eligible = list(range(n))
        self.certificates: dict = {}
        self.evidence: list = []
        self.rotated_out: list[int] = []
        self.bind([SigningKey.derive(f"committee/{seed}", j) for j in range(n)], ORIGIN)

    def bind(self, keys: Sequence[SigningKey], origin: str,
             commitment: Callable[[int, int], bytes] | None = None) -> None:
        """Sign with ``keys`` (one per validator) under ``origin``, and name node ``s``'s update of
        round ``r`` by ``commitment(r, s)`` (default: a hash of the pair). Before the first round."""
        if len(keys) != self.t.validators:
            raise ValueError(f"committee: {len(keys)} keys for {self.t.validators} validators")
        if self.certificates:
            raise ValueError("committee: bind before the first round")
        self.keys, self.origin, self.commitment = list(keys), origin, commitment
        self.public = [k.public for k in self.keys]
        self.book = PromiseBook(self.public, origin)

    def _recompute(self, j: int, rc: Recomputer):
        if j in self.byzantine and self.t.behaviour == "wrong_hash":
            return lambda batch: hashlib.sha256(b"wrong" + b"".join(batch)).digest()
        return rc

    def certify(self, r: int, senders: torch.Tensor, updates: torch.Tensor, f: int,
                seed: int) -> tuple[torch.Tensor | None, dict, torch.Tensor]:
        """Certify round ``r``'s aggregate of ``updates`` (one row per sender), the chain's generator
        seeded with ``seed``: the aggregate (None without a certificate), the round's metrics, and
        which rows the certified batch included."""
        n = self.t.validators
        name = self.commitment or (lambda r, s: hashlib.sha256(f"round {r} node {s}".encode()).digest())
        ids = [name(r, int(s)) for s in senders]
        rc = Recomputer(dict(zip(ids, updates.detach().cpu())), self.chain, f, seed)
        down = self.crashed | (self.byzantine if self.t.behaviour == "silent" else set())
        vals = [Validator(j, self.keys[j], self.public, self.origin, r, self._recompute(j, rc), self.eligible)
                for j in range(n)]
        censored = 0
        cert, view = None, 0
        with one_thread():
            for view in range(len(self.eligible)):
                seq = sequencer(r, view, self.eligible)
                if seq not in down:
                    batch = ids
                    for u in ids:  # the sequencer promises every valid update it received
                        self.book.hold(promise(self.keys[seq], seq, self.origin, r, u, self.t.merge_delay))
                    if seq == self.t.censor and len(ids) > 1:
                        batch, censored = ids[1:], 1  # ... and drops the first
                    self._bus(vals, vals[seq].propose(batch), down)
                cert = next((v.certificate for v in vals if v.index not in down and v.certificate), None)
                if cert is not None:
                    break
                out = []
                for v in vals:
                    if v.index not in down:
                        out += v.timeout()
                self._bus(vals, out, down)
        info = {"committee_view": view, "committee_certified": cert is not None, "censored": censored,
                "committee_evidence": 0, "rotated_out": len(self.rotated_out)}
        if cert is None:
            return None, info, torch.zeros(len(ids), dtype=torch.bool)
        self.certificates[r] = cert
        self.book.certified(cert)
        found = [e for v in vals if v.index not in down for e in v.evidence] + self.book.missed()
        known = {(e.kind, e.culprit) for e in self.evidence}
        fresh = {}
        for e in found:  # several validators may hold the same offence: keep it once
            if (e.kind, e.culprit) not in known:
                fresh.setdefault((e.kind, e.culprit), e)
        self.evidence += list(fresh.values())
        for e in found:
            if e.kind == "missed_promise" and e.culprit in self.eligible and len(self.eligible) > 1:
                self.eligible.remove(e.culprit)
                self.rotated_out.append(e.culprit)
        info.update({"committee_evidence": len(fresh), "rotated_out": len(self.rotated_out)})
        included = torch.tensor([u in cert.batch for u in ids])
        return rc.results[cert.batch][None].to(updates.device, updates.dtype), info, included

    def _bus(self, vals, outgoing, down) -> None:
        queue = list(outgoing) + self._byzantine_noise(vals[0].round, outgoing)
        while queue:
            s = queue.pop(0)
            for v in vals:
                if v.index != s.signer and v.index not in down:
                    queue.extend(v.receive(s))

    def _byzantine_noise(self, r: int, outgoing) -> list:
        """What the active Byzantine validators add: a wrong echo and vote, or a second vote."""
        if self.t.behaviour == "silent" or not self.byzantine:
            return []
        wrong = hashlib.sha256(f"wrong value {r}".encode()).digest()
        out = []
        for j in sorted(self.byzantine):
            for view in {s.statement.view for s in outgoing}:
                out += [sign(Echo(r, view, wrong), self.keys[j], j, self.origin),
                        sign(Vote(r, view, wrong), self.keys[j], j, self.origin)]
        return out

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for e in self.evidence:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        return {"validators": self.t.validators, "quorum": quorum(self.t.validators),
                "certified_rounds": len(self.certificates), "evidence": kinds, "rotated_out": self.rotated_out}
