"""Who signs what in a simulated run, and their secrets, all derived from the scenario seed.

A simulated network has these parties, each with an Ed25519 key:

- **nodes** ``0 .. n-1`` (role ``trainer``): register, commit to their datasets and updates;
- **the server** (role ``aggregator``, star only): signs the round's aggregate record;
- **validators** ``0 .. v-1`` (roles ``validator`` and ``witness``): cosign checkpoints with a
  second key of their own (a C2SP ``cosignature/v1`` key), vote on governance proposals, and
  sign the starting model (round 0) and any rollback; they are separate parties, not trainers,
  so a node crash never takes the log's quorum with it;
- **the log** (its origin is the run's name): signs checkpoints.

Every key and salt is ``SHA-256`` of a domain, the run's secret and labels
(:meth:`phalanx.core.keys.SigningKey.derive`), where the secret is the scenario seed and the
log's origin. So the same scenario writes the same ledger, byte for byte, which makes a run's
ledger reproducible like its metrics. The price is that anyone who knows the seed can sign as
any party: a simulation's keys prove nothing outside it (a deployed node generates its own).
Salts are never logged; the run keeps them beside the ledger for its auditors
(:mod:`.private`). DP noise seeds are derived elsewhere (:mod:`phalanx.core.seeding`) and are
never written anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from phalanx.core.keys import SigningKey
from phalanx.ledger.note import SIG_COSIGNATURE, Signer
from phalanx.ledger.witness import Witness

SALT_DOMAIN = b"phalanx.sim/salt/v1"
#: Cosignature timestamps are simulated time: this epoch plus the round, so ledgers reproduce.
SIM_EPOCH = 1_700_000_000


def _secret(seed: int, origin: str) -> str:
    return f"phalanx.sim/{int(seed)}/{origin}"


@dataclass
class Identities:
    """The run's parties and secrets. ``clock_round`` moves the witnesses' simulated clock."""

    seed: int
    origin: str
    nodes: int
    validators: int
    server: bool
    clock_round: int = 0
    _keys: dict[tuple, SigningKey] = field(default_factory=dict, repr=False)

    def key(self, *labels: object) -> SigningKey:
        if labels not in self._keys:
            self._keys[labels] = SigningKey.derive(_secret(self.seed, self.origin), *labels)
        return self._keys[labels]

    def node(self, i: int) -> SigningKey:
        return self.key("node", int(i))

    def server_key(self) -> SigningKey:
        return self.key("server")

    def validator(self, j: int) -> SigningKey:
        return self.key("validator", int(j))

    def salt(self, *labels: object) -> bytes:
        """A 32-byte secret salt for ``labels`` (e.g. ``("update", node, round)``)."""
        h = hashlib.sha256(SALT_DOMAIN)
        for part in (_secret(self.seed, self.origin), *labels):
            b = part if isinstance(part, bytes) else str(part).encode()
            h.update(len(b).to_bytes(8, "big") + b)
        return h.digest()

    def log_signer(self) -> Signer:
        return Signer(self.origin, self.key("log"))

    def witnesses(self, log: Signer) -> list[Witness]:
        """The validators' witnesses: each cosigns only consistent extensions of the log."""
        return [Witness(Signer(f"{self.origin}/validator{j}", self.key("validator", j, "cosign"),
                               SIG_COSIGNATURE), [log.vkey], clock=lambda: SIM_EPOCH + self.clock_round)
                for j in range(self.validators)]
