"""Aggregation rules: pure functions of update tensors, looked up by name.

``phalanx.aggregate.get(name, **params)`` returns a configured rule. The contract every rule
follows is in :mod:`phalanx.aggregate.base`.
"""

from typing import Any

from phalanx.aggregate.base import Aggregator, InsufficientRows
from phalanx.aggregate.mean import Mean
from phalanx.core import Registry

AGGREGATORS: Registry = Registry("aggregator")
AGGREGATORS.register("mean", Mean)


def get(name: str, **params: Any) -> Aggregator:
    """The rule registered as ``name``, constructed with validated ``params``."""
    return AGGREGATORS.build(name, **params)


__all__ = ["AGGREGATORS", "Aggregator", "InsufficientRows", "Mean", "get"]
