"""One validator's state machine for one round: pure, deterministic, and transport-agnostic.

The protocol is PBFT's normal case and view change (Castro and Liskov, "Practical Byzantine
Fault Tolerance", OSDI 1999, sections 4.2 to 4.4), one instance per round, with a rotating
sequencer in place of PBFT's primary; ``spin/committee.pml`` is its model, checked by SPIN:

1. The sequencer of (round, view) signs a :class:`Proposal`: a batch of update commitments in
   order and the aggregate's digest. Above view 0 it carries q :class:`ViewChange` statements,
   and if any of them proves a prepared value, it must re-propose the one of the highest view.
2. A validator in that view recomputes the aggregate (:mod:`.recompute`); if its digest matches
   it signs an :class:`Echo` of the value (PBFT's prepare).
3. With q echoes for the value it echoed it is *prepared* and signs a :class:`Vote` (commit).
4. q votes on one value in one view are the round's :class:`~.certificate.Certificate`.
5. On a timeout (the daemon's clock; a stall) it moves to the next view, whose sequencer is
   the next eligible validator, and signs a :class:`ViewChange` with its prepared proof.

Safety needs no clock: an honest validator echoes and votes at most once per view, and a new
view's proposal must keep any value that may have been certified (q view changes meet the q
voters in an honest one). Hostile input is the normal case: a statement with a bad signature,
from a non-validator, or for another round is refused and counted in ``refused`` with its
reason; a second conflicting statement from one signer is kept as :class:`~.certificate.Evidence`.

The validator never does I/O: :meth:`receive`, :meth:`propose` and :meth:`timeout` return the
statements to broadcast to every validator (itself included), which is all a daemon's transport
or the simulator has to deliver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from phalanx.core.keys import SigningKey, VerifyKey
from phalanx.engine.committee.certificate import Certificate, Evidence
from phalanx.engine.committee.statements import (
    Echo,
    Proposal,
    Signed,
    StatementError,
    ViewChange,
    Vote,
    quorum,
    sequencer,
    sign,
    verify,
)

Recompute = Callable[[Sequence[bytes]], "bytes | None"]


@dataclass
class Tally:
    """Statements of one kind per (view, value), one per signer; the first per (view, signer)."""

    by_value: dict[tuple[int, bytes], dict[int, Signed]] = field(default_factory=dict)
    first: dict[tuple[int, int], Signed] = field(default_factory=dict)

    def add(self, s: Signed) -> Signed | None:
        """Record ``s``; return an earlier statement of its signer in its view on another value."""
        st = s.statement
        earlier = self.first.setdefault((st.view, s.signer), s)
        self.by_value.setdefault((st.view, st.value), {})[s.signer] = s
        return earlier if earlier.statement.value != st.value else None

    def count(self, view: int, value: bytes) -> int:
        return len(self.by_value.get((view, value), {}))

    def of(self, view: int, value: bytes) -> list[Signed]:
        return [s for _, s in sorted(self.by_value.get((view, value), {}).items())]


class Validator:
    """Validator ``index`` of ``keys`` in round ``round_``; ``eligible`` sequencers (default: all)."""

    def __init__(self, index: int, key: SigningKey, keys: Sequence[VerifyKey], origin: str, round_: int,
                 recompute: Recompute, eligible: Sequence[int] | None = None):
        if keys[index] != key.public:
            raise ValueError(f"validator {index}: the signing key is not the listed one")
        self.index, self.key, self.keys, self.origin, self.round = index, key, list(keys), origin, round_
        self.recompute = recompute
        self.n, self.q = len(keys), quorum(len(keys))
        self.eligible = list(range(self.n)) if eligible is None else sorted(eligible)
        self.view = 0
        self.echoed: bytes | None = None          # the value echoed in the current view
        self.voted = False
        self.prepared: tuple[Signed, ...] = ()    # proposal + q echoes of the highest prepared view
        self.proposals: dict[int, Signed] = {}    # the first valid proposal per view (the one echoed)
        self.known: dict[tuple[int, bytes], Signed] = {}  # every valid proposal, by (view, value)
        self.helped: set[int] = set()             # laggards sent the certificate
        self.echoes, self.votes = Tally(), Tally()
        self.view_changes: dict[int, dict[int, Signed]] = {}
        self.proposed: set[int] = set()
        self.certificate: Certificate | None = None
        self.evidence: list[Evidence] = []
        self.refused: list[str] = []

    # -------------------------------------------------------------- roles

    def sequencer_of(self, view: int) -> int:
        return sequencer(self.round, view, self.eligible)

    @property
    def is_sequencer(self) -> bool:
        return self.sequencer_of(self.view) == self.index

    # -------------------------------------------------------------- inputs

    def receive(self, signed: Signed) -> list[Signed]:
        """Handle one statement; return what to broadcast. Refusals are counted, never raised."""
        try:
            verify(signed, self.keys, self.origin)
            if signed.statement.round != self.round:
                raise StatementError(f"{signed.statement.KIND} for round {signed.statement.round}, "
                                     f"this is round {self.round}")
        except StatementError as e:
            self.refused.append(str(e))
            return []
        handler = {Proposal: self._proposal, Echo: self._echo, Vote: self._vote,
                   ViewChange: self._view_change}.get(type(signed.statement))
        if handler is None:
            self.refused.append(f"{signed.statement.KIND}: not a statement of the round protocol")
            return []
        return handler(signed)

    def propose(self, batch: Sequence[bytes]) -> list[Signed]:
        """As the sequencer of the current view, propose ``batch`` (in its order); above view 0, once
        q view changes are in, re-propose the highest prepared batch if there is one."""
        if not self.is_sequencer or self.view in self.proposed or self.certificate is not None:
            return []
        justification: tuple[Signed, ...] = ()
        if self.view > 0:
            changes = self.view_changes.get(self.view, {})
            if len(changes) < self.q:
                return []
            justification = tuple(s for _, s in sorted(changes.items())[: self.q])
            forced = _highest_prepared(justification)
            if forced is not None:
                batch = forced.statement.batch
        aggregate = self.recompute(batch)
        if aggregate is None:
            return []
        self.proposed.add(self.view)
        proposal = sign(Proposal(self.round, self.view, tuple(batch), aggregate, justification),
                        self.key, self.index, self.origin)
        return [proposal] + self._proposal(proposal)

    def timeout(self) -> list[Signed]:
        """The view stalled: move to the next one and say so, with the prepared proof."""
        if self.certificate is not None:
            return []
        self.view += 1
        self.echoed, self.voted = None, False
        change = sign(ViewChange(self.round, self.view, self.prepared), self.key, self.index, self.origin)
        return [change] + self._view_change(change) + self._try_echo()

    # -------------------------------------------------------------- handlers

    def _proposal(self, s: Signed) -> list[Signed]:
        p: Proposal = s.statement
        if s.signer != self.sequencer_of(p.view):
            self.refused.append(f"proposal for view {p.view} from validator {s.signer}, whose sequencer is "
                                f"{self.sequencer_of(p.view)}")
            return []
        if p.view > 0:
            why = _unjustified(p, self.keys, self.origin, self.q, self.sequencer_of)
            if why:
                self.refused.append(f"proposal for view {p.view}: {why}")
                return []
        self.known.setdefault((p.view, p.value), s)
        earlier = self.proposals.setdefault(p.view, s)
        if earlier.statement.value != p.value:
            # kept (a certificate on it may still complete here) but never echoed
            self._evidence(Evidence("equivocating_proposal", s.signer, self.round, (earlier, s)))
        return self._try_echo() + self._try_certify(p.view, p.value)

    def _echo(self, s: Signed) -> list[Signed]:
        earlier = self.echoes.add(s)
        if earlier is not None:
            self._evidence(Evidence("double_sign", s.signer, self.round, (earlier, s)))
        return self._try_vote()

    def _vote(self, s: Signed) -> list[Signed]:
        earlier = self.votes.add(s)
        if earlier is not None:
            self._evidence(Evidence("double_sign", s.signer, self.round, (earlier, s)))
        return self._try_certify(s.statement.view, s.statement.value)

    def _view_change(self, s: Signed) -> list[Signed]:
        vc: ViewChange = s.statement
        if vc.prepared:
            why = _bad_prepared(vc.prepared, self.keys, self.origin, self.q, self.sequencer_of)
            if why:
                self.refused.append(f"view change from validator {s.signer}: {why}")
                return []
        self.view_changes.setdefault(vc.view, {}).setdefault(s.signer, s)
        if self.certificate is not None and s.signer not in self.helped:
            # a laggard: hand it the certificate (the proposal and q votes), once
            self.helped.add(s.signer)
            return [self.certificate.proposal, *self.certificate.votes]
        return []

    # -------------------------------------------------------------- steps

    def _try_echo(self) -> list[Signed]:
        s = self.proposals.get(self.view)
        if s is None or self.echoed is not None or self.certificate is not None:
            return []
        p: Proposal = s.statement
        mine = self.recompute(p.batch)
        if mine is None:
            return []
        if mine != p.aggregate:
            self._evidence(Evidence("wrong_aggregate", s.signer, self.round, (s,)))
            return []
        self.echoed = p.value
        echo = sign(Echo(self.round, self.view, p.value), self.key, self.index, self.origin)
        return [echo] + self._echo(echo)

    def _try_vote(self) -> list[Signed]:
        if self.echoed is None or self.voted or self.echoes.count(self.view, self.echoed) < self.q:
            return []
        self.voted = True
        self.prepared = (self.proposals[self.view], *self.echoes.of(self.view, self.echoed)[: self.q])
        vote = sign(Vote(self.round, self.view, self.echoed), self.key, self.index, self.origin)
        return [vote] + self._vote(vote)

    def _try_certify(self, view: int, value: bytes) -> list[Signed]:
        proposal = self.known.get((view, value))
        if self.certificate is None and proposal is not None and self.votes.count(view, value) >= self.q:
            self.certificate = Certificate(proposal, tuple(self.votes.of(view, value)[: self.q]))
        return []

    def _evidence(self, e: Evidence) -> None:
        if all((x.kind, x.culprit) != (e.kind, e.culprit) for x in self.evidence):
            self.evidence.append(e)


# ------------------------------------------------------------------ justification

def _bad_prepared(prepared: Sequence[Signed], keys, origin, q, sequencer_of) -> str | None:
    """Why ``prepared`` (a proposal and q echoes of its value in its view) is not a proof, or None."""
    head, echoes = prepared[0], prepared[1:]
    p = head.statement
    if not isinstance(p, Proposal):
        return "its prepared proof does not start with a proposal"
    try:
        verify(head, keys, origin)
        if head.signer != sequencer_of(p.view):
            return f"its prepared proposal for view {p.view} is not signed by that view's sequencer"
        signers = set()
        for e in echoes:
            st = e.statement
            if not isinstance(st, Echo) or (st.round, st.view, st.value) != (p.round, p.view, p.value):
                return "its prepared proof holds a statement that is not an echo of the proposal"
            verify(e, keys, origin)
            signers.add(e.signer)
    except StatementError as e:
        return f"its prepared proof: {e}"
    if len(signers) < q:
        return f"its prepared proof has {len(signers)} distinct echoes, the quorum is {q}"
    return None


def _highest_prepared(changes: Sequence[Signed]) -> Signed | None:
    """The proposal of the highest view that any of these view changes proves prepared."""
    proofs = [c.statement.prepared[0] for c in changes if c.statement.prepared]
    return max(proofs, key=lambda s: s.statement.view, default=None)


def _unjustified(p: Proposal, keys, origin, q, sequencer_of) -> str | None:
    """Why a proposal above view 0 is not justified by its q view changes, or None."""
    signers = set()
    for c in p.justification:
        st = c.statement
        if not isinstance(st, ViewChange) or (st.round, st.view) != (p.round, p.view):
            return "its justification holds a statement that is not a view change to this view"
        try:
            verify(c, keys, origin)
        except StatementError as e:
            return f"its justification: {e}"
        if st.prepared:
            why = _bad_prepared(st.prepared, keys, origin, q, sequencer_of)
            if why:
                return f"view change from validator {c.signer}: {why}"
            if st.prepared[0].statement.view >= p.view:
                return f"view change from validator {c.signer} proves a view not below {p.view}"
        signers.add(c.signer)
    if len(signers) < q:
        return f"{len(signers)} distinct view changes justify it, the quorum is {q}"
    forced = _highest_prepared(p.justification)
    if forced is not None and (forced.statement.batch, forced.statement.aggregate) != (p.batch, p.aggregate):
        return (f"view {forced.statement.view}'s value was prepared and must be re-proposed, "
                "the proposal carries another")
    return None
