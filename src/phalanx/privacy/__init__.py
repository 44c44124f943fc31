"""Privacy: differential privacy with honest accounting (and, next, secure aggregation).

- :mod:`~phalanx.privacy.accounting`: :func:`epsilon` and :func:`noise_multiplier_for` for the
  (Poisson-subsampled) Gaussian mechanism through ``dp-accounting``; per-node composition in
  :class:`PrivacyLedger`; client-level adjacency (zero-out or replace-one).
"""

from phalanx.privacy.accounting import (ACCOUNTANTS, PrivacyLedger, epsilon, noise_multiplier_for,
                                        sensitivity_factor)

__all__ = ["ACCOUNTANTS", "PrivacyLedger", "epsilon", "noise_multiplier_for", "sensitivity_factor"]
