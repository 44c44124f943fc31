"""A certificate or a piece of evidence as a ledger entry, and the certificate's re-check.

The ledger stays ignorant of the committee (it imports only :mod:`phalanx.core`): its typed
bodies :class:`~phalanx.ledger.RoundCertificate` and :class:`~phalanx.ledger.CommitteeEvidence`
hold bytes and hashes, and this module, on the engine side, turns certificates into them and
re-derives each vote's signed message to check one, the way ``phalanx audit``'s engine checks do.
"""

from __future__ import annotations

from collections.abc import Sequence

from phalanx.core.keys import SignatureError, VerifyKey
from phalanx.engine.committee.certificate import Certificate, Evidence
from phalanx.engine.committee.statements import Vote, quorum, value_of
from phalanx.ledger import CommitteeEvidence, RoundCertificate


def committee_origin(log_origin: str) -> str:
    """The name a committee signs its statements for: the logs' common prefix and ``committee``
    (``phalanx.net/<network>/<node>`` -> ``phalanx.net/<network>/committee``; a simulation's
    ``phalanx.sim/<run>`` -> ``phalanx.sim/committee``), so an auditor derives it from the log."""
    return log_origin.rsplit("/", 1)[0] + "/committee"


def certificate_entry(cert: Certificate, keys: Sequence[VerifyKey]) -> RoundCertificate:
    votes = sorted(cert.votes, key=lambda v: v.signer)
    return RoundCertificate(round=cert.round, view=cert.view, batch=list(cert.batch), aggregate=cert.aggregate,
                            value=cert.value, signers=[keys[v.signer].node_id for v in votes],
                            votes=[v.signature for v in votes])


def evidence_entry(e: Evidence, keys: Sequence[VerifyKey]) -> CommitteeEvidence:
    return CommitteeEvidence(kind=e.kind, round=e.round,
                             node=None if e.culprit is None else keys[e.culprit].node_id,
                             statements=[s.encode() for s in e.statements])


def check_certificate_entry(body: RoundCertificate, keys: Sequence[VerifyKey], origin: str) -> None:
    """Raise ValueError naming what fails: the value, an unknown signer, a vote, the quorum."""
    if value_of(body.round, body.batch, body.aggregate) != body.value:
        raise ValueError(f"round_certificate round {body.round}: the value is not the hash of its batch and aggregate")
    by_id = {k.node_id: k for k in keys}
    message = Vote(body.round, body.view, body.value).message(origin)
    for node, sig in zip(body.signers, body.votes):
        if node not in by_id:
            raise ValueError(f"round_certificate round {body.round}: signer {node.hex()[:16]}... is not a validator")
        try:
            by_id[node].verify(sig, message)
        except SignatureError:
            raise ValueError(f"round_certificate round {body.round}: the vote of {node.hex()[:16]}... "
                             "does not verify") from None
    if len(set(body.signers)) < quorum(len(keys)):
        raise ValueError(f"round_certificate round {body.round}: {len(set(body.signers))} votes, "
                         f"the quorum is {quorum(len(keys))}")
