"""Privacy: differential privacy with honest accounting, and secure aggregation.

- :mod:`~phalanx.privacy.accounting`: :func:`epsilon` and :func:`noise_multiplier_for` for the
  (Poisson-subsampled) Gaussian mechanism through ``dp-accounting``; per-node composition in
  :class:`PrivacyLedger`; client-level adjacency (zero-out or replace-one).
- :mod:`~phalanx.privacy.dpsgd`, :mod:`~phalanx.privacy.ghost`: sample-level DP-SGD;
  :mod:`~phalanx.privacy.client`: client-level DP-FedAvg; :mod:`~phalanx.privacy.plan`: a run's plan.
- :mod:`~phalanx.privacy.secagg`: the secure-aggregation protocols of Bonawitz et al. (2017) and
  Bell et al. (2020).

This package imports only :mod:`phalanx.core` of Phalanx (and ``cryptography`` for every
cryptographic primitive); what it needs from higher packages, such as a node's identity key, is
passed in by the engine.
"""

from phalanx.privacy.accounting import (ACCOUNTANTS, PrivacyLedger, epsilon, noise_multiplier_for,
                                        sensitivity_factor)

__all__ = ["ACCOUNTANTS", "PrivacyLedger", "epsilon", "noise_multiplier_for", "sensitivity_factor"]
