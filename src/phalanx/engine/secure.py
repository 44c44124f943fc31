"""Robust aggregation under secure aggregation: bucketed SecAgg in the star's round.

Plain secure aggregation hands the server one sum, so a robust rule on top has nothing to be
robust over. Bucketing (Velicheti, Xia, Koyejo 2021, "Secure Byzantine-robust distributed
learning via clustering", Algorithm 1) trades some privacy for robustness: the round's
participants are split into random buckets of ``s``, each bucket's sum is revealed by its own
SecAgg instance (:func:`phalanx.privacy.secagg.bucket_sums`), and the robust rule runs over the
bucket means. ``s`` equal to the number of participants is plain SecAgg with the mean.

**The bucket seed.** Whoever picks the buckets can put the attackers where they do most harm,
so the seed is fixed only after every update is committed, and no single party can steer it:
each of the round's validators signs, with its Ed25519 key, the message
``phalanx/buckets/v1 || round || root``, ``root`` the SHA-256 over the participants' hiding
commitments in participant order; the seed is the SHA-256 of the first ``q`` signatures in
validator order (``q = floor(2v/3) + 1`` of ``v`` validators). Ed25519 signatures are
deterministic (RFC 8032, Section 5.1.6), so a validator cannot re-sign to grind the seed, and
without its key nobody can predict its signature, so the last submitter cannot grind it by
choosing its update either. What remains: a validator that withholds its signature changes
which ``q`` signatures count, so ``w`` colluding validators can choose among at most ``2^w``
seeds (up to ``C(v, q)`` orders); with ``v = 4`` and one Byzantine validator, a choice between
two bucketings. The simulation has every validator sign.

**Norm bounds before unmasking.** The server cannot look at a masked update. What the protocol
enforces here is the fixed-point encoding's range: every coordinate is clipped to
``[-clip, clip]`` before masking, so no single node can move a bucket sum by more than
``clip`` per coordinate. An L2 norm bound checked before unmasking needs a zero-knowledge proof
of the bound from each client (e.g. Bell et al. 2022, ACORN), which is not built.

**Exposure.** A bucket whose other members are all malicious shows its one honest member's
update to them exactly (the sum minus what they sent). :func:`exposed_honest` counts those
honest nodes each round; with ``s = 2`` it is every honest node paired with an attacker.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from phalanx.core.commitment import hiding_commitment
from phalanx.core.keys import SigningKey
from phalanx.core.seeding import derive_seed
from phalanx.privacy.secagg import bucket_sums, harary_parameters, random_buckets
from phalanx.privacy.secagg.encoding import FixedPoint, vector_dtype
from phalanx.privacy.skellam import skellam_noise

Protocol = Literal["secagg", "secagg_plus"]


@dataclass
class SecureAggregation:
    """Bucketed SecAgg for a star: bucket size, protocol, encoding, validators, and its costs."""

    bucket_size: int | None  # None: one bucket of every participant (plain SecAgg, the mean)
    clip: float  # each coordinate's bound in the fixed-point encoding
    seed: int
    protocol: Protocol = "secagg"
    bits: int = 32
    adversary: Literal["active", "honest_but_curious"] = "active"
    validators: int = 4
    costs: list[dict] = field(default_factory=list)  # per round: bytes and seconds

    def __post_init__(self) -> None:
        if self.validators < 1:
            raise ValueError("secure aggregation needs at least one validator to seed the buckets")
        self.validator_keys = [SigningKey.derive(str(self.seed), "validator", v)
                               for v in range(self.validators)]

    # -- the bucket seed ---------------------------------------------------------------------
    def commitments(self, r: int, participants: torch.Tensor, updates: torch.Tensor) -> list[bytes]:
        """Each participant's hiding commitment to its update (SHA-256 over a secret salt and the
        float32 bytes; the salt is derived per node and round, for the simulation)."""
        out = []
        for node, row in zip(participants.tolist(), updates):
            salt = hashlib.sha256(f"phalanx/update-salt/{self.seed}/{r}/{node}".encode()).digest()
            out.append(hiding_commitment(salt, row.detach().cpu().to(torch.float32).numpy().tobytes()))
        return out

    def bucket_seed(self, r: int, commitments: list[bytes]) -> bytes:
        """SHA-256 of the first ``floor(2v/3) + 1`` validators' signatures over the round's root."""
        root = hashlib.sha256(b"".join(commitments)).digest()
        message = b"phalanx/buckets/v1" + r.to_bytes(8, "big") + root
        quorum = (2 * self.validators) // 3 + 1
        signatures = [key.sign(message) for key in self.validator_keys[:quorum]]
        return hashlib.sha256(b"".join(signatures)).digest()

    # -- one round ---------------------------------------------------------------------------
    def buckets(self, count: int, seed: bytes) -> list[np.ndarray]:
        size = count if self.bucket_size is None else min(self.bucket_size, count)
        if size < 2:
            return [np.arange(count)]
        return random_buckets(count, size, seed)

    def reveal(self, r: int, updates: torch.Tensor, buckets: list[np.ndarray], *,
               noise_variance: float | None = None, frac_bits: int | None = None,
               clip: float | None = None,
               adds_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each bucket's mean, from its sum revealed by SecAgg: ``(b, d)`` means and ``(b,)`` sizes.

        Runs the real protocol (keys, masks, Shamir shares, byte messages) once per bucket, with
        randomness derived from the scenario seed so that the run reproduces. With
        ``noise_variance`` (distributed DP, :mod:`phalanx.privacy.skellam`), the updates are
        quantised at ``frac_bits`` and every node marked in ``adds_noise`` adds Skellam noise of
        ``noise_variance / bucket size`` to its own before masking, so each revealed sum carries
        ``noise_variance`` from its honest members' shares; ``clip`` then bounds every coordinate
        (the clip the quantisation's headroom was sized for).
        """
        largest = max(len(b) for b in buckets)
        if frac_bits is None:
            codec = FixedPoint.for_sum(largest, self.clip, self.bits)
        else:
            codec = FixedPoint(bits=self.bits, frac_bits=frac_bits, clip=clip or self.clip)
        session = hashlib.sha256(f"phalanx/secagg-session/{self.seed}/{r}".encode()).digest()[:16]
        options = {}
        if self.protocol == "secagg_plus":  # a sparse graph, where one below the complete one fits
            sparse = harary_parameters(min(len(b) for b in buckets), active=self.adversary == "active")
            if sparse is not None:
                options = {"degree": sparse[0], "threshold": sparse[1]}
        seed = derive_seed(self.seed, "secagg", r)
        if noise_variance is None:
            results = bucket_sums(updates.detach().cpu().to(torch.float64), buckets, session_id=session,
                                  codec=codec, adversary=self.adversary, seed=seed, **options)
            values = [res.value for res in results]
        else:
            ring = codec.encode(updates.detach().cpu().to(torch.float64)).astype(np.uint64)
            rng = np.random.default_rng(derive_seed(self.seed, "skellam", r))
            adding = adds_noise.cpu().numpy()
            mask = np.uint64((1 << self.bits) - 1) if self.bits < 64 else np.uint64(2**64 - 1)
            for bucket in buckets:
                for i in bucket.tolist():
                    if adding[i]:
                        share = skellam_noise(ring.shape[1], noise_variance / len(bucket), rng)
                        ring[i] = (ring[i] + share.astype(np.uint64)) & mask  # mod 2^k, two's complement
            results = bucket_sums(ring.astype(vector_dtype(self.bits)), buckets, session_id=session,
                                  bits=self.bits, adversary=self.adversary, seed=seed, **options)
            values = [codec.decode(res.sum) for res in results]
        sums = torch.tensor(np.stack(values), dtype=updates.dtype, device=updates.device)
        sizes = torch.tensor([len(res.survivors) for res in results], dtype=updates.dtype,
                             device=updates.device)
        summaries = [res.cost.summary() for res in results]
        self.costs.append({"round": r, "buckets": len(buckets), "per_bucket": summaries})
        return sums / sizes[:, None], sizes


def exposed_honest(buckets: list[np.ndarray], malicious: torch.Tensor) -> int:
    """Honest participants whose bucket's other members are all malicious (``malicious``: per
    participant, bool), so their update is revealed to the attackers exactly."""
    bad = malicious.cpu().numpy()
    count = 0
    for bucket in buckets:
        honest = [i for i in bucket.tolist() if not bad[i]]
        if len(honest) == 1 and len(bucket) > 1:
            count += 1
    return count
