"""Governance: proposals and votes as ledger entries, what passes (more than two thirds of the
validators' weight), and what is in force: membership (admit, evict, quarantine), minimum
versions at an activation round with the fork ID they make (after EIP-2124), and rollbacks.
Imports only :mod:`phalanx.ledger` and :mod:`phalanx.core`.

- :mod:`.state`: :class:`Governance`, one log's governance state, fed its entries in order;
- :mod:`.versions`: version strings, :class:`Minimum`, :class:`ForkSchedule` (EIP-2124's checks).
"""

from phalanx.governance.state import ACTIONS, Decision, Governance, GovernanceError, check_proposal
from phalanx.governance.versions import (
    ForkError,
    ForkSchedule,
    Minimum,
    TooOld,
    Upgrade,
    VersionError,
    at_least,
    parse_version,
)

__all__ = [
    "ACTIONS", "Decision", "ForkError", "ForkSchedule", "Governance", "GovernanceError", "Minimum", "TooOld",
    "Upgrade", "VersionError", "at_least", "check_proposal", "parse_version",
]
