"""Defenses around the aggregation rule: validation, screens, reputation, quarantine, admission, provenance.

- ``validation``: rows that never reach a rule (non-finite, wrong size), capped claims;
- ``screen``: the sender-aware stage in front of the chain (:data:`SCREENS`): ``foolsgold``
  (Fung et al. 2020), ``flame`` (Nguyen et al. 2022), ``norm_bound`` (norm bounding with weak DP,
  Sun et al. 2019), ``reputation`` (beta reputation with forgetting, Jøsang and Ismail 2002);
- ``quarantine``: the validators' network-wide decisions (:class:`Decision`) and re-admission
  policies (:data:`READMISSION`);
- ``admission``: what an identity costs (:data:`ADMISSION`: ``open``, ``proof_of_work``,
  ``stake``, ``vouching``);
- ``provenance``: an auditor's check of a node's committed statistics.
"""

from phalanx.defenses.admission import ADMISSION, Admission, Purchase
from phalanx.defenses.flame import Flame
from phalanx.defenses.foolsgold import FoolsGold, foolsgold_weights
from phalanx.defenses.norm_bound import NormBound
from phalanx.defenses.provenance import AuditResult, StatsOpening, audit, commit_stats
from phalanx.defenses.quarantine import READMISSION, Decision, ValidatorVote
from phalanx.defenses.reputation import Reputation, beta_score
from phalanx.defenses.screen import SCREENS, Screen, Screening
from phalanx.defenses.validation import cap_claims, finite_rows, shape_ok

__all__ = [
    "ADMISSION", "READMISSION", "SCREENS", "Admission", "AuditResult", "Decision", "Flame", "FoolsGold",
    "NormBound", "Purchase", "Reputation", "Screen", "Screening", "StatsOpening", "ValidatorVote", "audit",
    "beta_score", "cap_claims", "commit_stats", "finite_rows", "foolsgold_weights", "shape_ok",
]
