"""Privacy: secure aggregation today; differential privacy and its accounting come next (issue 5).

:mod:`phalanx.privacy.secagg` holds the secure-aggregation protocols of Bonawitz et al. (2017)
and Bell et al. (2020). This package imports only :mod:`phalanx.core` of Phalanx (and the
``cryptography`` package for every cryptographic primitive); what it needs from higher packages,
such as a node's identity key, is passed in by the engine.
"""
