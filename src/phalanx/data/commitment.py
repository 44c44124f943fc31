"""Dataset commitments: a hiding Merkle root over a node's samples, and its hidden statistics.

A node commits to its data before it trains, so that every later update can be traced to one
fixed dataset, without revealing the data, how much of it there is, or its labels:

- **samples.** Sample ``i`` (its input bytes, then its label as 8 big-endian bytes) becomes the
  leaf entry ``SHA-256(s_i || bytes)``, with its own salt ``s_i = SHA-256(salt || i)`` derived
  from the node's secret dataset salt. The root is the RFC 9162 Merkle tree hash over these
  entries (:mod:`phalanx.core.merkle`: leaves ``SHA-256(0x00 || entry)``). One sample can later
  be shown to be in the set (its salt and an inclusion proof) without opening any other:
  per-leaf salts are what make this hiding, since an unsalted leaf of a guessed sample could be
  recomputed and tested.
- **statistics.** The sample count and the label histogram are committed under a separate salt,
  ``SHA-256(salt' || CBOR {count, histogram})`` (:mod:`phalanx.core.commitment`). A public count
  would undo the hidden claimed count of every update (weight inflation is checked against it).

This is the salted-leaf construction of Certificate Transparency's privacy discussions and of
Merkle-tree commitments in general (Merkle 1987); the ledger stores only ``root`` and ``stats``
(:class:`~phalanx.ledger.entries.DatasetCommitment`), the salts stay with the node and its
auditors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from phalanx.core.commitment import hiding_commitment
from phalanx.core.encoding import encode
from phalanx.core.merkle import leaf_hashes, root_of


@dataclass(frozen=True)
class DatasetOpening:
    """A dataset commitment with what opens it (kept by the node and its auditors)."""

    root: bytes  # the Merkle root over the salted samples
    stats: bytes  # hiding commitment to count and histogram
    count: int
    histogram: tuple[int, ...]
    salt: bytes  # the samples' salt (each sample's salt derives from it)
    stats_salt: bytes

    def stats_bytes(self) -> bytes:
        return stats_encoding(self.count, self.histogram)


def stats_encoding(count: int, histogram: tuple[int, ...] | list[int]) -> bytes:
    """The bytes the statistics commitment is taken over: CBOR ``{count, histogram}``."""
    return encode({"count": int(count), "histogram": [int(c) for c in histogram]})


def sample_salt(salt: bytes, i: int) -> bytes:
    """Sample ``i``'s own salt, ``SHA-256(salt || i as 8 big-endian bytes)``."""
    return hashlib.sha256(bytes(salt) + int(i).to_bytes(8, "big")).digest()


def sample_leaves(x: torch.Tensor, y: torch.Tensor, salt: bytes) -> list[bytes]:
    """The tree's entries: ``SHA-256(s_i || x_i bytes || y_i as 8 bytes)`` for each sample, in order."""
    xs = np.ascontiguousarray(x.detach().cpu().numpy())
    ys = y.detach().cpu().to(torch.int64).numpy().astype(">i8")
    width = xs[0].nbytes if len(xs) else 0
    flat = memoryview(xs.reshape(-1).view(np.uint8)) if len(xs) else memoryview(b"")
    labels = ys.tobytes()
    return [hashlib.sha256(sample_salt(salt, i) + flat[i * width:(i + 1) * width]
                           + labels[8 * i:8 * i + 8]).digest() for i in range(len(xs))]


def commit_dataset(x: torch.Tensor, y: torch.Tensor, num_classes: int, salt: bytes,
                   stats_salt: bytes) -> DatasetOpening:
    """The commitment to samples ``x`` (any shape, one row per sample) with labels ``y``."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    root = root_of(leaf_hashes(sample_leaves(x, y, salt)))
    histogram = tuple(torch.bincount(y.detach().cpu().to(torch.int64), minlength=num_classes).tolist())
    stats = hiding_commitment(stats_salt, stats_encoding(len(y), histogram))
    return DatasetOpening(root, stats, len(y), histogram, bytes(salt), bytes(stats_salt))
