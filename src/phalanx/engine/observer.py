"""What a :class:`~phalanx.engine.simulation.Simulation` tells an observer, and when.

The simulation calls one optional observer at a few fixed points of a round, handing it the
tensors it already has; the observer may read them and the simulation's state, and must not
change what the round computes (the one exception, :meth:`RoundObserver.round_started`, may
restore an earlier state: a governance-approved rollback). The ledger writer
(:mod:`phalanx.engine.provenance.recorder`) is the observer the range attaches; the hooks keep
the round's own code free of ledger logic.

Order within a round::

    round_started(sim, r)
      star:   rejected(...)*, star_sent(...), rejected(...)*, star_revealed(...)?, star_aggregated(...)?
      gossip: rejected(...)*, gossip_sent(...), per receiver chunk: rejected(...)*, gossip_chunk(...)
    round_finished(sim, r, info) -> extra metrics

Every tensor is the simulation's own (no copy): an observer that keeps one clones it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from phalanx.aggregate import Context
    from phalanx.engine.simulation import Simulation


class RoundObserver:
    """No-op hooks; subclass and override what you need."""

    def round_started(self, sim: Simulation, r: int) -> None:
        """Before round ``r`` samples anyone."""

    def rejected(self, sim: Simulation, r: int, senders: torch.Tensor, why: str,
                 receivers: torch.Tensor | None = None) -> None:
        """Rows from ``senders`` were dropped for ``why`` (``receivers``: gossip, one per row;
        ``None``: the star's server, or every receiver of a sender that sent nothing usable)."""

    def star_sent(self, sim: Simulation, r: int, part: torch.Tensor, updates: torch.Tensor,
                  claims: torch.Tensor) -> None:
        """Star: what each participant sent (``updates`` (len(part), d), after any attack and local
        DP, before validation) and the sample count it claimed; the base is ``sim.global_row``."""

    def star_revealed(self, sim: Simulation, r: int, used: torch.Tensor, buckets: list,
                      revealed: torch.Tensor, f: int) -> None:
        """Star under secure aggregation: what SecAgg revealed, each bucket's mean ``revealed``
        (b, d) of the rows of ``used`` its bucket holds (``buckets``: index arrays into ``used``),
        over which the chain runs with declared ``f``; the server never saw the rows themselves."""

    def star_aggregated(self, sim: Simulation, r: int, used: torch.Tensor, updates: torch.Tensor,
                        weights: torch.Tensor | None, context: Context, out: torch.Tensor) -> None:
        """Star: the server aggregated the rows of ``used`` into ``out`` (1, d), to be added to
        ``sim.global_row`` (the released aggregate under central DP)."""

    def gossip_sent(self, sim: Simulation, r: int, part: torch.Tensor, sent: torch.Tensor,
                    before: torch.Tensor, crafted: torch.Tensor | None) -> None:
        """Gossip: ``sent[j]`` is what participant j sends every neighbour unless it is malicious
        and ``crafted`` (n_bad, 1 or len(part), d) holds its per-receiver updates over its base
        ``before`` (len(part), d: each participant's model before training)."""

    def gossip_chunk(self, sim: Simulation, r: int, start: int, recv: torch.Tensor, idx: torch.Tensor,
                     mask: torch.Tensor, msgs: torch.Tensor, ref: torch.Tensor, ok: torch.Tensor,
                     f: torch.Tensor, generator: torch.Generator) -> None:
        """Gossip: receivers ``part[start:start + len(recv)]`` are about to aggregate ``msgs``
        (c, k, d), the absolute models in their slots ``idx`` (c, k), where ``mask``; relative to
        ``ref`` (c, d); only those with ``ok`` aggregate (the others keep their model); ``f`` is each
        one's declared f; ``generator`` is the round's, shared by its chunks in order. Called
        before the rows are shifted and before the previous state changes."""

    def round_finished(self, sim: Simulation, r: int, info: dict[str, Any]) -> dict[str, Any]:
        """After round ``r`` (before evaluation); returns extra per-round metrics."""
        return {}
