"""Who talks to whom: the star and the gossip graphs.

- ``star``: every node sends its update to one server, which aggregates and broadcasts. It is
  the centralized baseline and its server is a single point of failure.
- ``gossip``: every node averages (or robustly aggregates) its neighbours' models and its own,
  over an undirected graph (decentralized SGD; Lian et al. 2017, "Can decentralized algorithms
  outperform centralized algorithms?").

Graphs come from networkx and are registered by name (``GRAPHS``): ``complete``, ``ring``,
``random_regular`` (Steger and Wormald 1999, networkx's generator), ``erdos_renyi`` (G(n, p)) and
``small_world`` (Watts and Strogatz 1998). A disconnected random draw is redrawn with the next
seed, up to a bound, since gossip over a disconnected graph cannot reach consensus.

The engine never loops over receivers: :meth:`Gossip.table` gives every node's neighbour slots as
an ``(n, k)`` index tensor (slot 0 is the node itself) with a mask, so aggregation runs batched
as ``(m, k, d)`` rows.

Mixing weights for the mean: ``uniform`` (1 / (deg + 1) per slot: row-stochastic; doubly
stochastic on regular graphs) or ``metropolis`` (Xiao and Boyd 2004, "Fast linear iterations for
distributed averaging": ``w_ij = 1 / (1 + max(deg_i, deg_j))``, symmetric and doubly stochastic
on any graph, so the average of the models is preserved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import networkx as nx
import torch
from pydantic import Field

from phalanx.core import Registry

GRAPHS: Registry = Registry("graph")
TOPOLOGIES: Registry = Registry("topology")

_REDRAWS = 100


def _connected(build, seed: int) -> nx.Graph:
    for attempt in range(_REDRAWS):
        g = build(seed + attempt)
        if g.number_of_nodes() <= 1 or nx.is_connected(g):
            return g
    raise ValueError(f"no connected graph in {_REDRAWS} draws; raise the degree or edge probability")


@GRAPHS.register("complete")
def complete(n: int, seed: int) -> nx.Graph:
    """Every pair of nodes is connected."""
    return nx.complete_graph(n)


@GRAPHS.register("ring")
def ring(n: int, seed: int) -> nx.Graph:
    """Each node is connected to its two neighbours on a cycle."""
    return nx.cycle_graph(n)


@GRAPHS.register("random_regular")
def random_regular(n: int, seed: int, *, degree: Annotated[int, Field(ge=1, le=1000)] = 8) -> nx.Graph:
    """A uniformly random graph in which every node has ``degree`` neighbours."""
    if degree >= n:
        raise ValueError(f"random_regular: degree {degree} needs more than {degree} nodes, got {n}")
    if (n * degree) % 2:
        raise ValueError(f"random_regular: n * degree must be even, got {n} * {degree}")
    return _connected(lambda s: nx.random_regular_graph(degree, n, seed=s), seed)


@GRAPHS.register("erdos_renyi")
def erdos_renyi(n: int, seed: int, *, p: Annotated[float, Field(gt=0, le=1)] = 0.2) -> nx.Graph:
    """Each pair of nodes is connected independently with probability ``p`` (G(n, p))."""
    return _connected(lambda s: nx.gnp_random_graph(n, p, seed=s), seed)


@GRAPHS.register("small_world")
def small_world(
    n: int,
    seed: int,
    *,
    k: Annotated[int, Field(ge=2, le=1000)] = 4,
    p: Annotated[float, Field(ge=0, le=1)] = 0.1,
) -> nx.Graph:
    """Watts-Strogatz: a ring lattice of ``k`` nearest neighbours, each edge rewired with ``p``."""
    if k >= n:
        raise ValueError(f"small_world: k {k} must be below the number of nodes {n}")
    if k % 2:
        raise ValueError(f"small_world: k must be even (k/2 neighbours on each side), got {k}")
    return _connected(lambda s: nx.connected_watts_strogatz_graph(n, k, p, tries=100, seed=s), seed)


@dataclass(frozen=True)
class NeighbourTable:
    """Slot ``j`` of node ``i`` holds node ``index[i, j]`` where ``mask[i, j]``; slot 0 is ``i``."""

    index: torch.Tensor  # (n, k) int64, padding points at the node itself
    mask: torch.Tensor  # (n, k) bool
    weight: torch.Tensor  # (n, k) float32 mixing weights, 0 on padding


@TOPOLOGIES.register("star")
class Star:
    """A central server aggregates every participant's update and broadcasts the result."""

    kind = "star"

    def __init__(self, num_nodes: int, seed: int):
        self.num_nodes = num_nodes

    def edges(self) -> list[tuple[int, int]]:
        return []


@TOPOLOGIES.register("gossip")
class Gossip:
    """Each node aggregates its own model with its neighbours' over a graph."""

    kind = "gossip"

    def __init__(
        self,
        num_nodes: int,
        seed: int,
        *,
        graph: str = "random_regular",
        graph_params: dict = {},  # noqa: B006 - validated by GRAPHS, never mutated
        mixing: Literal["uniform", "metropolis"] = "uniform",
    ):
        self.num_nodes = num_nodes
        self.graph = GRAPHS.build(graph, num_nodes, seed, **graph_params)
        self.mixing = mixing

    def edges(self) -> list[tuple[int, int]]:
        return sorted((min(u, v), max(u, v)) for u, v in self.graph.edges())

    def table(self) -> NeighbourTable:
        n = self.num_nodes
        adj = [sorted(self.graph.neighbors(i)) for i in range(n)]
        k = 1 + max((len(a) for a in adj), default=0)
        index = torch.arange(n).repeat_interleave(k).view(n, k).clone()
        mask = torch.zeros(n, k, dtype=torch.bool)
        for i, neighbours in enumerate(adj):
            index[i, 1 : 1 + len(neighbours)] = torch.tensor(neighbours, dtype=torch.int64)
            mask[i, : 1 + len(neighbours)] = True
        degree = mask.sum(1) - 1
        if self.mixing == "uniform":
            weight = mask.float() / (degree + 1).float()[:, None]
        else:
            w = 1.0 / (1 + torch.maximum(degree[:, None], degree[index])).float()
            w = w * mask
            w[:, 0] = 0
            w[:, 0] = 1 - w.sum(1)
            weight = w
        return NeighbourTable(index=index, mask=mask, weight=weight)


@TOPOLOGIES.register("committee")
class Committee:
    """Nodes send their updates to the round's sequencer; n validators recompute the aggregate and
    certify it with q = floor(2n/3) + 1 signatures (:mod:`phalanx.engine.committee`).

    Scenario knobs: ``crashed`` validators never answer; ``byzantine`` ones behave as
    ``behaviour`` says (``silent``; ``wrong_hash``: they echo and vote a wrong value and, as
    sequencers, propose a wrong aggregate; ``double_sign``: they vote for the right value and a
    wrong one); ``censor``: validator ``censor`` drops one update whenever it is the sequencer,
    after signing its inclusion promise (``merge_delay`` rounds to honour it). Faulty validators
    are the first indices (crashed, then Byzantine), so the early rounds' sequencers are faulty.
    """

    kind = "committee"

    def __init__(self, num_nodes: int, seed: int, *, validators: int = 4, crashed: int = 0, byzantine: int = 0,
                 behaviour: Literal["silent", "wrong_hash", "double_sign"] = "wrong_hash",
                 censor: int | None = None, merge_delay: int = 1):
        if validators < 1 or crashed < 0 or byzantine < 0 or crashed + byzantine > validators:
            raise ValueError(f"committee: {crashed} crashed and {byzantine} Byzantine validators do not fit "
                             f"in {validators}")
        if censor is not None and not 0 <= censor < validators:
            raise ValueError(f"committee: the censoring sequencer {censor} is not a validator (0..{validators - 1})")
        self.num_nodes, self.validators, self.crashed, self.byzantine = num_nodes, validators, crashed, byzantine
        self.behaviour, self.censor, self.merge_delay = behaviour, censor, merge_delay

    def edges(self) -> list[tuple[int, int]]:
        return []
