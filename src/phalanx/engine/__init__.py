"""The round: simulated here (all nodes in one process); the deployed node's driver comes later.

Names are loaded on first use (PEP 562), so that ``phalanx audit`` can import the engine's ledger
checks (:mod:`phalanx.engine.provenance.checks`) without loading torch.
"""

from __future__ import annotations

import importlib

__all__ = ["Fault", "FaultSchedule", "Simulation"]
_WHERE = {"Fault": "phalanx.engine.faults", "FaultSchedule": "phalanx.engine.faults",
          "Simulation": "phalanx.engine.simulation"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'phalanx.engine' has no attribute {name!r}")
