"""The errors of secure aggregation: every abort says which phase failed and, where it can be
known, which party caused it.

A *culprit* is the id of the client whose message failed a check, or :data:`SERVER` when the
server's own messages are inconsistent. When a check cannot tell a lying client from a server
that tampered with the client's message in transit (a relayed ciphertext that fails to decrypt,
say), the error names the client the message claims to come from and says so.
"""

from __future__ import annotations

#: The culprit named when the server's messages are at fault.
SERVER = "server"


class SecAggError(Exception):
    """Base class: the protocol cannot go on."""


class ProtocolAbort(SecAggError):
    """A party aborts because a message failed a check (signature, decryption, share, set).

    ``phase`` is the phase in which the check ran, ``culprit`` the client id or :data:`SERVER`
    (``None`` when no single party can be named), ``party`` the one that aborted.
    """

    def __init__(self, phase: str, reason: str, *, culprit: int | str | None = None,
                 party: int | str | None = None):
        self.phase, self.reason, self.culprit, self.party = phase, reason, culprit, party
        who = f"{'client ' + str(party) if isinstance(party, int) else party} aborts" if party is not None \
            else "abort"
        blame = f" (culprit: {'client ' + str(culprit) if isinstance(culprit, int) else culprit})" \
            if culprit is not None else ""
        super().__init__(f"{who} in phase '{phase}': {reason}{blame}")


class TooFewSurvivors(SecAggError):
    """Fewer clients remain than the threshold needs: more than ``n - t`` dropped out."""

    def __init__(self, phase: str, remaining: int, needed: int, detail: str = ""):
        self.phase, self.remaining, self.needed = phase, remaining, needed
        extra = f" {detail}" if detail else ""
        super().__init__(f"phase '{phase}': only {remaining} clients remain, the threshold needs "
                         f"at least {needed}{extra}; too many dropped out to recover the sum")


class OutOfOrder(SecAggError):
    """A party was asked to run a phase twice or out of order, and refuses."""
