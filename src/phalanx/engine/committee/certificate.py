"""Round certificates and the evidence a committee keeps.

A :class:`Certificate` is the proposal and q votes from distinct validators on its value in
one view: anyone holding the validators' keys re-checks it (:meth:`Certificate.verify`). Two
certificates of one round on different values cannot both exist while at most f validators
are Byzantine (quorum intersection, :mod:`.statements`); if they do, the pair is
:func:`conflicting` evidence, kept like every other :class:`Evidence`:

- ``double_sign``: one validator's two echoes or two votes for different values in one view;
- ``equivocating_proposal``: a sequencer's two proposals for one (round, view);
- ``wrong_aggregate``: a proposal whose aggregate digest the recomputation contradicts (it
  convinces only whoever recomputes, so it rotates views but proves nothing to third parties);
- ``missed_promise``: a signed inclusion promise whose update no certificate up to its
  deadline includes (:mod:`.promises`);
- ``conflicting_certificates``: the pair above.

Each names its culprit and carries the signed statements that show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from phalanx.core.keys import VerifyKey
from phalanx.engine.committee.statements import Proposal, Signed, StatementError, Vote, quorum, verify

EVIDENCE_KINDS = ("double_sign", "equivocating_proposal", "wrong_aggregate", "missed_promise",
                  "conflicting_certificates")


@dataclass(frozen=True)
class Evidence:
    kind: str
    culprit: int | None   # a validator's index (None: the committee as a whole, over f faults)
    round: int
    statements: tuple[Signed, ...]

    def __post_init__(self) -> None:
        if self.kind not in EVIDENCE_KINDS:
            raise ValueError(f"evidence kind {self.kind!r} is not one of {', '.join(EVIDENCE_KINDS)}")


@dataclass(frozen=True)
class Certificate:
    proposal: Signed
    votes: tuple[Signed, ...]

    @property
    def round(self) -> int:
        return self.proposal.statement.round

    @property
    def view(self) -> int:
        return self.proposal.statement.view

    @property
    def value(self) -> bytes:
        return self.proposal.statement.value

    @property
    def batch(self) -> tuple[bytes, ...]:
        return self.proposal.statement.batch

    @property
    def aggregate(self) -> bytes:
        return self.proposal.statement.aggregate

    @property
    def signers(self) -> list[int]:
        return sorted(v.signer for v in self.votes)

    def verify(self, keys: Sequence[VerifyKey], origin: str) -> None:
        """Raise :class:`StatementError` unless q distinct validators' votes sign this value."""
        p = self.proposal.statement
        if not isinstance(p, Proposal):
            raise StatementError("certificate: its first statement is not a proposal")
        verify(self.proposal, keys, origin)
        signers = set()
        for v in self.votes:
            s = v.statement
            if not isinstance(s, Vote) or (s.round, s.view, s.value) != (p.round, p.view, p.value):
                raise StatementError(f"certificate: validator {v.signer}'s statement is not a vote for "
                                     f"round {p.round} view {p.view} on the proposal's value")
            verify(v, keys, origin)
            signers.add(v.signer)
        if len(signers) < quorum(len(keys)):
            raise StatementError(f"certificate: {len(signers)} distinct votes, the quorum is {quorum(len(keys))}")


def conflicting(a: Certificate, b: Certificate) -> Evidence | None:
    """Two certificates of one round on different values: evidence against the whole committee."""
    if a.round != b.round or a.value == b.value:
        return None
    return Evidence("conflicting_certificates", None, a.round, (a.proposal, *a.votes, b.proposal, *b.votes))
