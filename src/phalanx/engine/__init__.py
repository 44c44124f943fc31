"""The round: simulated here (all nodes in one process); the deployed node's driver comes later."""

from phalanx.engine.faults import Fault, FaultSchedule
from phalanx.engine.simulation import Simulation

__all__ = ["Fault", "FaultSchedule", "Simulation"]
