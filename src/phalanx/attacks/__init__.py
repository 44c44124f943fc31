"""Attacks, looked up by name: update attacks (after training) and data attacks (before it).

Update attacks, by what they need to know (``knowledge``):

- own data: ``sign_flip``, ``scaling`` (model replacement), ``weight_inflation`` (lies about its
  sample count); none: ``gaussian``, ``free_rider`` (sends without training), ``malformed``
  (NaN, infinite or wrongly sized rows: the bad-input case);
- the honest updates: ``alie``, ``ipm``, ``min_max``, ``min_sum``, ``mimic``, ``sybil``
  (colluding identities, disguised as honest pairs);
- the defense too: ``fang``, ``alie_opt``, ``ipm_opt``;
- a wrapper: ``on_off`` (behave, attack with any of the above, behave again).

Data attacks: ``label_flip`` (all-to-one, one-to-one, random), and the backdoors ``badnets`` and
``dba`` (:mod:`phalanx.attacks.backdoor`), whose success is measured on triggered test inputs.
"""

from phalanx.attacks.adaptive import AlieOpt, IpmOpt
from phalanx.attacks.alie import Alie
from phalanx.attacks.backdoor import DBA, BadNets
from phalanx.attacks.base import AttackView, DataAttack, DataSite, Knowledge, SuccessSet, UpdateAttack
from phalanx.attacks.fang import Fang
from phalanx.attacks.ipm import Ipm
from phalanx.attacks.free_rider import FreeRider
from phalanx.attacks.mimic import Mimic
from phalanx.attacks.min_max import MinMax, MinSum
from phalanx.attacks.on_off import OnOff
from phalanx.attacks.scaling import Scaling
from phalanx.attacks.simple import Gaussian, LabelFlip, Malformed, SignFlip
from phalanx.attacks.sybil import Sybil
from phalanx.attacks.weight_inflation import WeightInflation
from phalanx.core import Registry

UPDATE_ATTACKS: Registry = Registry("update attack")
DATA_ATTACKS: Registry = Registry("data attack")

_UPDATE = {
    "sign_flip": SignFlip, "gaussian": Gaussian, "scaling": Scaling, "alie": Alie, "ipm": Ipm,
    "min_max": MinMax, "min_sum": MinSum, "fang": Fang, "mimic": Mimic, "alie_opt": AlieOpt,
    "ipm_opt": IpmOpt, "weight_inflation": WeightInflation, "sybil": Sybil, "free_rider": FreeRider,
    "on_off": OnOff, "malformed": Malformed,
}
for _name, _attack in _UPDATE.items():
    UPDATE_ATTACKS.register(_name, _attack)
for _name, _attack in {"label_flip": LabelFlip, "badnets": BadNets, "dba": DBA}.items():
    DATA_ATTACKS.register(_name, _attack)

__all__ = [
    "DATA_ATTACKS", "UPDATE_ATTACKS", "AttackView", "DataAttack", "DataSite", "Knowledge", "SuccessSet",
    "UpdateAttack",
]
