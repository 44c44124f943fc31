"""Inclusion promises: censorship made provable.

A sequencer that receives a valid update signs a :class:`~.statements.Promise`: the update will
be in a certified batch by round ``deadline`` = round + the maximum merge delay (after
Certificate Transparency's signed certificate timestamps and maximum merge delay, RFC 6962
section 3). The sender keeps it. Once every round up to the deadline has its certificate, a
promise whose update none of them includes is a missed promise: the signed promise beside the
certificates is evidence anyone can re-check, and the committee rotates the promiser out of the
sequencer schedule (:func:`~.statements.sequencer` over the eligible validators).
"""

from __future__ import annotations

from collections.abc import Sequence

from phalanx.core.keys import SigningKey, VerifyKey
from phalanx.engine.committee.certificate import Certificate, Evidence
from phalanx.engine.committee.statements import Promise, Signed, StatementError, sign, verify


def promise(key: SigningKey, index: int, origin: str, round_: int, update: bytes, delay: int) -> Signed:
    """Validator ``index`` (the round's sequencer) promises to include ``update`` within ``delay`` rounds."""
    if delay < 0:
        raise ValueError(f"the maximum merge delay is a number of rounds >= 0 (got {delay})")
    return sign(Promise(round_, bytes(update), round_ + delay), key, index, origin)


class PromiseBook:
    """The promises a node holds and the certificates it has seen; :meth:`missed` finds the broken ones."""

    def __init__(self, keys: Sequence[VerifyKey], origin: str):
        self.keys, self.origin = list(keys), origin
        self.promises: list[Signed] = []
        self.certificates: dict[int, Certificate] = {}

    def hold(self, signed: Signed) -> None:
        """Keep a promise (raises :class:`StatementError` if it is not a validator's signed promise)."""
        if not isinstance(signed.statement, Promise):
            raise StatementError(f"{signed.statement.KIND}: not an inclusion promise")
        verify(signed, self.keys, self.origin)
        self.promises.append(signed)

    def certified(self, certificate: Certificate) -> None:
        certificate.verify(self.keys, self.origin)
        self.certificates.setdefault(certificate.round, certificate)

    def missed(self) -> list[Evidence]:
        """Promises whose deadline has passed with every round certified and the update in none."""
        out = []
        for p in self.promises:
            st: Promise = p.statement
            rounds = range(st.round, st.deadline + 1)
            if any(r not in self.certificates for r in rounds):
                continue  # a round without a certificate: nothing is proven yet
            certs = [self.certificates[r] for r in rounds]
            if any(st.update in c.batch for c in certs):
                continue
            shown = tuple(s for c in certs for s in (c.proposal, *c.votes))
            out.append(Evidence("missed_promise", p.signer, st.round, (p, *shown)))
        return out
