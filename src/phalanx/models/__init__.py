"""The model zoo and flat-parameter helpers."""

from phalanx.models.flat import FlatModel, ParamSlot, initial_row
from phalanx.models.zoo import MODELS

__all__ = ["MODELS", "FlatModel", "ParamSlot", "initial_row"]
