"""Seeded randomness: every random choice in a run derives from the scenario seed and a label.

A run never draws from torch's global generator. Each consumer asks for its own
``torch.Generator`` derived from ``(seed, *labels)`` through SHA-256, so adding a new random
consumer does not shift the numbers every other consumer sees, and a round's shuffles do not
depend on how many rounds ran before (resuming gives the same numbers).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed from ``seed`` and any labels (strings, ints), stable across runs and hosts."""
    text = "/".join([str(int(seed)), *map(str, labels)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") & (2**63 - 1)


def generator(seed: int, *labels: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`derive_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *labels))
    return g
