"""Attacks, looked up by name: update attacks (after training) and data attacks (before it)."""

from phalanx.attacks.base import AttackView, DataAttack, Knowledge, UpdateAttack
from phalanx.attacks.simple import Gaussian, LabelFlip, SignFlip
from phalanx.core import Registry

UPDATE_ATTACKS: Registry = Registry("update attack")
DATA_ATTACKS: Registry = Registry("data attack")

UPDATE_ATTACKS.register("sign_flip", SignFlip)
UPDATE_ATTACKS.register("gaussian", Gaussian)
DATA_ATTACKS.register("label_flip", LabelFlip)

__all__ = [
    "DATA_ATTACKS", "UPDATE_ATTACKS", "AttackView", "DataAttack", "Knowledge", "UpdateAttack",
]
