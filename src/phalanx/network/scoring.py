"""Peer scores after gossipsub v1.1 (libp2p specs, pubsub/gossipsub/gossipsub-v1.1.md, "Peer Scoring").

The score of a peer is a weighted sum of counters the node keeps about it::

    score = w2 * first_deliveries - w4 * invalid^2 + w6 * max(0, colocated - t6)^2
            + w7 * max(0, behaviour - t7)^2          (w4 > 0; w6, w7 < 0)

- P2, first message deliveries (capped), rewards useful peers;
- P4, invalid messages (bad signatures, malformed or refused payloads), squared so a few cost a lot;
- P6, the IP colocation factor: how many scored peers share this peer's address (here: its /24
  prefix), above a threshold, squared; it is what makes many addresses in few prefixes expensive;
- P7, behaviour penalties (broken promises, spam), above a threshold, squared.

Every counter decays by its factor each interval and snaps to zero below ``decay_to_zero``, as the
spec's decay parameters do. The time-in-mesh and mesh-delivery terms (P1, P3) belong to a mesh,
which sampling (:mod:`.sampling`) does not keep, and are left out. Peers below
``graylist`` are ignored by the samplers. One numpy array per counter, over all known peers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScoreParams:
    first_delivery_weight: float = 1.0
    first_delivery_cap: float = 20.0
    invalid_weight: float = 10.0
    colocation_weight: float = -5.0
    colocation_threshold: int = 2
    behaviour_weight: float = -10.0
    behaviour_threshold: float = 1.0
    decay: float = 0.9
    decay_to_zero: float = 0.01
    graylist: float = -50.0
    prefix_bits: int = 24


@dataclass
class PeerScores:
    """Scores for peers with IPv4 ``addresses`` (uint32 array; index = peer)."""

    addresses: np.ndarray
    params: ScoreParams = field(default_factory=ScoreParams)

    def __post_init__(self) -> None:
        n = len(self.addresses)
        self.first = np.zeros(n)
        self.invalid = np.zeros(n)
        self.behaviour = np.zeros(n)

    def deliver(self, peers) -> None:
        np.add.at(self.first, np.asarray(peers), 1.0)
        np.minimum(self.first, self.params.first_delivery_cap, out=self.first)

    def invalid_message(self, peers) -> None:
        np.add.at(self.invalid, np.asarray(peers), 1.0)

    def penalise(self, peers, amount: float = 1.0) -> None:
        np.add.at(self.behaviour, np.asarray(peers), amount)

    def colocation(self) -> np.ndarray:
        """How many known peers share each peer's prefix."""
        prefix = self.addresses.astype(np.uint64) >> (32 - self.params.prefix_bits)
        _, inverse, counts = np.unique(prefix, return_inverse=True, return_counts=True)
        return counts[inverse]

    def score(self) -> np.ndarray:
        p = self.params
        over_ip = np.maximum(0, self.colocation() - p.colocation_threshold).astype(float)
        over_b = np.maximum(0.0, self.behaviour - p.behaviour_threshold)
        return (p.first_delivery_weight * self.first - p.invalid_weight * self.invalid ** 2
                + p.colocation_weight * over_ip ** 2 + p.behaviour_weight * over_b ** 2)

    def decay(self) -> None:
        for counter in (self.first, self.invalid, self.behaviour):
            counter *= self.params.decay
            counter[counter < self.params.decay_to_zero] = 0.0

    def acceptable(self) -> np.ndarray:
        return self.score() >= self.params.graylist
