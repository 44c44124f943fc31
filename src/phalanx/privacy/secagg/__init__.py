"""Secure aggregation: the server learns the sum of the clients' vectors and nothing else, and
the sum survives clients dropping out at any phase.

Two protocols, one implementation:

- **SecAgg** (Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth 2017,
  "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS, Figure 4 and
  Section 4): every pair of clients masks with a PRG seeded by an X25519 agreement; each client
  adds a self-mask from its own seed ``b_u``; ``b_u`` and the mask key ``s_u^SK`` are
  Shamir-shared ``t`` of ``n``, so the server can remove the masks of any client that drops out,
  learning for each client one of the two secrets, never both.
- **SecAgg+** (Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, CCS): the same, but each client
  masks with and shares among only its ``k = O(log n)`` neighbours in a random Harary graph
  (:mod:`~phalanx.privacy.secagg.graph`), with the threshold taken per neighbourhood.

Modules, one concept each: :mod:`.config` (session parameters, adversary models, thresholds),
:mod:`.graph` (who masks with whom), :mod:`.encoding` (``Z_{2^k}``, fixed point, packing),
:mod:`.shamir` (secret sharing), :mod:`.crypto` (X25519, HKDF, AES-GCM, AES-CTR PRG),
:mod:`.identity` (injected identity signatures), :mod:`.messages` (typed messages, bytes),
:mod:`.client` and :mod:`.server` (the state machines), :mod:`.driver` (the in-process run with
its cost record, and bucketed sums), :mod:`.errors`.
"""

from phalanx.privacy.secagg.client import Client
from phalanx.privacy.secagg.config import PHASES, SessionConfig, default_threshold
from phalanx.privacy.secagg.driver import Cost, SecureSum, bucket_sums, random_buckets, secure_sum
from phalanx.privacy.secagg.encoding import FixedPoint
from phalanx.privacy.secagg.errors import SERVER, OutOfOrder, ProtocolAbort, SecAggError, TooFewSurvivors
from phalanx.privacy.secagg.graph import harary_parameters
from phalanx.privacy.secagg.identity import ed25519_signer, ed25519_verifier
from phalanx.privacy.secagg.messages import decode, encode
from phalanx.privacy.secagg.server import Rejection, Server

__all__ = [
    "PHASES", "SERVER", "Client", "Cost", "FixedPoint", "OutOfOrder", "ProtocolAbort", "Rejection",
    "SecAggError", "SecureSum", "Server", "SessionConfig", "TooFewSurvivors", "bucket_sums", "decode",
    "default_threshold", "ed25519_signer", "ed25519_verifier", "encode", "harary_parameters",
    "random_buckets", "secure_sum",
]
