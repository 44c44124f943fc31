"""One secure-aggregation instance: who takes part, the threshold, the vector shape, the graph,
and the adversary model, fixed before the first message and bound into every signature and key.

**Adversary models** (Bonawitz et al. 2017, Section 6; the thresholds as in Bell et al. 2020):

- ``"honest_but_curious"``: the server follows the protocol but tries to learn more from what it
  sees; up to ``t - 1`` clients may pool their views with it. Nothing beyond the sum of the
  survivors' inputs is learnt as long as fewer than ``t`` clients collude (``n_C < t``).
- ``"active"``: the server may deviate arbitrarily: drop, reorder, forge or replay messages, and
  tell different clients different things. Two defences are added: every advertisement is signed
  with the client's identity key, and the **consistency check** of Bonawitz §4 (Figure 4, round
  3): each survivor signs the survivor set ``U_3`` it was shown, and reveals shares only after
  seeing ``t`` valid signatures on that same set. Privacy holds when
  ``t > (h + n_C) / 2`` for every neighbourhood of ``h`` share holders, so that the server can
  never collect ``t`` signatures (and then ``t`` shares) under two different survivor sets; the
  configuration refuses ``2t <= h`` (the bound at ``n_C = 0``).

``threshold`` defaults to ``ceil(2h/3)`` (at least 2): ``h - t = floor(h/3)`` dropouts are
tolerated, a third of the clients, and in the active model privacy holds against
``n_C < 2t - h`` (about ``h/3``) clients colluding with the server.

The **session digest** (SHA-256 over every field) names the instance in every signature, key
derivation and authenticated-encryption header, so a message from another session, round or
bucket never verifies in this one.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from phalanx.privacy.secagg.encoding import vector_dtype
from phalanx.privacy.secagg.graph import complete_neighbours, harary_neighbours
from phalanx.privacy.secagg.shamir import PRIME

Adversary = Literal["honest_but_curious", "active"]

#: The phases, in order. A client that drops out "at" a phase sends nothing from that phase on.
PHASES = ("advertise", "share_keys", "masked_input", "consistency", "unmasking")


def default_threshold(holders: int) -> int:
    """``ceil(2h/3)`` of ``h`` share holders (at least 2): a third of them may drop out."""
    return max(-(-2 * holders // 3), 2)


@dataclass(frozen=True)
class SessionConfig:
    """The public parameters of one instance.

    ``clients``: the invited client ids (0 to ``2^19 - 3``), ``dim``: the vector length ``d``,
    ``bits``: ``k`` of ``Z_{2^k}``, ``degree``: ``None`` for SecAgg (the complete graph) or the
    even Harary degree of SecAgg+, ``threshold``: ``t`` per neighbourhood (default
    :func:`default_threshold` of the holders), ``session_id``: unique per instance (round,
    bucket); the engine derives it.
    """

    session_id: bytes
    clients: tuple[int, ...]
    dim: int
    bits: int = 32
    threshold: int | None = None
    degree: int | None = None
    adversary: Adversary = "active"
    _threshold: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        clients = tuple(sorted(int(c) for c in self.clients))
        object.__setattr__(self, "clients", clients)
        n = len(clients)
        if n < 2:
            raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
        if len(set(clients)) != n:
            raise ValueError("client ids must be distinct")
        if clients[0] < 0 or clients[-1] > PRIME - 2:
            raise ValueError(f"client ids must lie in 0..{PRIME - 2} (Shamir x-coordinate = id + 1)")
        if not 1 <= len(self.session_id) <= 64:
            raise ValueError(f"session_id must be 1 to 64 bytes, got {len(self.session_id)}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        vector_dtype(self.bits)
        if self.adversary not in ("honest_but_curious", "active"):
            raise ValueError(f"adversary must be 'honest_but_curious' or 'active', got {self.adversary!r}")
        holders = n if self.degree is None else self.degree + 1
        if self.degree is not None and (self.degree % 2 or not 2 <= self.degree <= n - 1):
            raise ValueError(f"SecAgg+ over {n} clients needs an even degree in 2..{n - 1}, "
                             f"got {self.degree}")
        t = default_threshold(holders) if self.threshold is None else self.threshold
        if not 2 <= t <= holders:
            raise ValueError(f"threshold must be in 2..{holders} (the share holders of a client), got {t}")
        if self.adversary == "active" and 2 * t <= holders:
            raise ValueError(f"the active model needs threshold > {holders}/2 (t > (h + n_C)/2), got {t}")
        object.__setattr__(self, "_threshold", t)

    @property
    def t(self) -> int:
        """The threshold in force (given or default)."""
        return self._threshold

    @property
    def n(self) -> int:
        return len(self.clients)

    @property
    def active(self) -> bool:
        return self.adversary == "active"

    @property
    def protocol(self) -> str:
        return "secagg" if self.degree is None else "secagg+"

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over a canonical encoding of every field."""
        h = hashlib.sha256(b"phalanx/secagg/v1/session")
        h.update(struct.pack(">H", len(self.session_id)) + self.session_id)
        h.update(struct.pack(">IIIIB", self.n, self.dim, self.bits, self.t, self.active))
        h.update(struct.pack(">I", self.degree or 0))
        h.update(struct.pack(f">{self.n}I", *self.clients))
        return h.digest()

    @cached_property
    def neighbours(self) -> dict[int, tuple[int, ...]]:
        """Each client's mask partners (everyone else in SecAgg; its Harary neighbours in SecAgg+)."""
        if self.degree is None:
            return complete_neighbours(self.clients)
        return harary_neighbours(self.clients, self.degree, self.digest)

    def holders(self, client: int) -> tuple[int, ...]:
        """Who holds shares of ``client``'s secrets: its neighbours and itself, sorted."""
        return tuple(sorted((*self.neighbours[client], client)))
