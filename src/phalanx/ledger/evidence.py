"""Re-checking equivocation evidence from the log alone: a sender's signed envelope that
contradicts its logged update commitment.

In a round, each node logs one hiding commitment to its update (:class:`UpdateCommitment`) and
signs an envelope (:func:`~phalanx.ledger.entries.envelope_message`) over the commitment of what
it actually sends each receiver. A receiver that gets an envelope over another commitment logs
an :class:`UpdateEquivocation`. The audit holds it to three things, each from signed bytes:

1. the commitment it names was signed by the node it accuses;
2. the envelope verifies under that node's key (the key that signed the commitment), for this
   log, this round and the receiver that logged the evidence;
3. the envelope's commitment differs from the logged one.

Then the accused node signed two different updates for one round, which no honest node does;
a receiver cannot forge this, since only the sender's key makes the envelope. This is the
update-level counterpart of checkpoint equivocation (:mod:`.equivocation`), after the
"proofs of misbehaviour" of accountable systems (Haeberlen et al. 2007, PeerReview).
"""

from __future__ import annotations

from phalanx.core.keys import KeyFormatError, SignatureError, VerifyKey
from phalanx.ledger.entries import Entry, envelope_message
from phalanx.ledger.state import LedgerState


def evidence_check(origin: str):
    """An audit check (``EntryCheck``) that re-verifies every ``update_equivocation`` entry."""
    commitments: dict[int, tuple[bytes, bytes, bytes]] = {}  # index -> (node, key, update)

    def update_equivocation(index: int, entry: Entry, state: LedgerState) -> str | None:
        body = entry.body
        if entry.type == "update_commitment":
            commitments[index] = (state.node_of(entry.key), entry.key, body.update)
            return None
        if entry.type != "update_equivocation":
            return None
        logged = commitments.get(body.commitment)
        if logged is None:
            return f"entry {body.commitment} is not an update commitment"
        node, key, update = logged
        if node != body.node:
            return f"commitment entry {body.commitment} is node {node.hex()[:16]}...'s, not the accused one's"
        if body.received == update:
            return "the envelope names the logged commitment itself: no contradiction"
        receiver = state.node_of(entry.key)
        try:
            message = envelope_message(origin, body.round, receiver, body.received)
            VerifyKey(key).verify(body.envelope, message)
        except (SignatureError, KeyFormatError):
            return ("the sender's envelope signature does not verify (not signed by the accused node, "
                    "or not to this receiver)")
        return None

    return update_equivocation
