"""The aggregate every validator recomputes, bit for bit, from what the protocol revealed.

A certificate is only worth its signatures if honest validators agree on the bytes they sign.
So the aggregate is a pure function of the batch: the revealed update rows stacked in the
batch's order (never arrival order), on the CPU, with one torch thread (a parallel reduction's
order depends on the thread count), through the scenario's :mod:`phalanx.aggregate` chain with
its declared f and a generator seeded from the round, as the ledger's replay does
(:mod:`phalanx.engine.provenance.replay`). The value signed is SHA-256 of the result's bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from phalanx.aggregate import Chain, Context


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def digest(t: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's bytes (CPU, contiguous)."""
    return hashlib.sha256(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes()).digest()


def aggregate_batch(rows: torch.Tensor, chain: Chain, f: int, round_: int) -> torch.Tensor:
    """The chain over ``rows`` (k, d) in their given order: CPU, one thread, seeded by the round."""
    rows = rows.detach().cpu()
    context = Context(f=torch.tensor([f]), generator=torch.Generator().manual_seed(round_))
    mask = torch.ones(1, len(rows), dtype=torch.bool)
    with one_thread():
        return chain.aggregate(rows[None], mask, None, context)[0]


class Recomputer:
    """A validator's view of a round: the updates revealed to it, by commitment hash.

    ``recomputer(batch)`` is the aggregate's digest, or None when an update of the batch was not
    revealed to this validator (it cannot check the proposal, so it does not echo it).
    """

    def __init__(self, revealed: Mapping[bytes, torch.Tensor], chain: Chain, f: int, round_: int):
        # round_ seeds the chain's generator (any randomised stage, e.g. bucketing): a public seed
        self.revealed, self.chain, self.f, self.round = revealed, chain, f, round_
        self.results: dict[tuple[bytes, ...], torch.Tensor] = {}

    def __call__(self, batch: Sequence[bytes]) -> bytes | None:
        batch = tuple(batch)
        if not batch or any(b not in self.revealed for b in batch):
            return None
        if batch not in self.results:
            rows = torch.stack([self.revealed[b] for b in batch])
            self.results[batch] = aggregate_batch(rows, self.chain, self.f, self.round)
        return digest(self.results[batch])
