"""The engine's side of the ledger (issue 6): writing a simulated run's ledger, the audit checks
that need more than the ledger (quarantine and governance state), replaying aggregation, and
rollback.

- :mod:`.recorder`: :class:`LedgerRecorder`, the observer that writes ``ledger.db`` as the run goes;
- :mod:`.identities`: every party's keys and salts, derived from the scenario seed;
- :mod:`.private`: the salts and kept bytes beside the log (``ledger-private/``);
- :mod:`.rollback`: the validators' vote and the restored model;
- :mod:`.checks`: the engine's checks for :func:`phalanx.ledger.audit`, and the reverted rounds;
- :mod:`.replay`: ``phalanx audit --replay``, every aggregate re-run from what was revealed.

Names are loaded on first use, so that :mod:`.checks` imports without torch.
"""

from __future__ import annotations

import importlib

__all__ = ["LEDGER_FILE", "POLICY_FILE", "PRIVATE_DIR", "LedgerRecorder", "RecorderConfig", "RollbackPlan"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("phalanx.engine.provenance.recorder"), name)
    raise AttributeError(f"module 'phalanx.engine.provenance' has no attribute {name!r}")
