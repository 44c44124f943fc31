"""Topologies: the gossip graphs, the neighbour table and its mixing weights."""

from __future__ import annotations

import networkx as nx
import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.network import GRAPHS, TOPOLOGIES, Gossip, Star

N = 12
GRAPH_CASES = [
    ("complete", {}, N - 1),
    ("ring", {}, 2),
    ("random_regular", {"degree": 3}, 3),
    ("random_regular", {"degree": 8}, 8),
    ("erdos_renyi", {"p": 0.4}, None),
    ("small_world", {"k": 4, "p": 0.0}, 4),  # no rewiring: the ring lattice, degree k
    ("small_world", {"k": 4, "p": 0.3}, None),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p, _ in GRAPH_CASES]
RANDOM = [c for c in GRAPH_CASES if c[0] in ("random_regular", "erdos_renyi") or c[1].get("p")]


def edges(g: nx.Graph) -> list[tuple[int, int]]:
    return sorted((min(u, v), max(u, v)) for u, v in g.edges())


@pytest.mark.parametrize("name, params, degree", GRAPH_CASES, ids=IDS)
def test_graph_has_n_nodes_is_connected_and_has_its_degree(name, params, degree):
    g = GRAPHS.build(name, N, 5, **params)
    assert sorted(g.nodes()) == list(range(N))
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    if degree is not None:
        assert {d for _, d in g.degree()} == {degree}


@pytest.mark.parametrize("name, params, degree", GRAPH_CASES, ids=IDS)
def test_graph_is_deterministic_per_seed(name, params, degree):
    assert edges(GRAPHS.build(name, N, 5, **params)) == edges(GRAPHS.build(name, N, 5, **params))


@pytest.mark.parametrize("name, params, degree", RANDOM, ids=[f"{c[0]}-{c[1]}" for c in RANDOM])
def test_random_graph_changes_with_the_seed(name, params, degree):
    drawn = {tuple(edges(GRAPHS.build(name, N, seed, **params))) for seed in range(4)}
    assert len(drawn) > 1


def test_erdos_renyi_with_p_one_is_complete():
    assert edges(GRAPHS.build("erdos_renyi", 6, 0, p=1.0)) == edges(nx.complete_graph(6))


def test_ring_is_the_cycle():
    assert edges(GRAPHS.build("ring", 5, 0)) == [(0, 1), (0, 4), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize(
    "name, n, params, message",
    [
        ("random_regular", 8, {"degree": 8}, r"random_regular: degree 8 needs more than 8 nodes, got 8"),
        ("random_regular", 5, {"degree": 3}, r"random_regular: n \* degree must be even, got 5 \* 3"),
        ("small_world", 4, {"k": 4}, r"small_world: k 4 must be below the number of nodes 4"),
        ("random_regular", 6, {"degree": 1}, r"no connected graph in 100 draws; raise the degree"),
        ("erdos_renyi", 30, {"p": 0.001}, r"no connected graph in 100 draws; raise the degree or edge"),
    ],
)
def test_impossible_graphs_raise_value_error_saying_why(name, n, params, message):
    with pytest.raises(ValueError, match=message):
        GRAPHS.build(name, n, 0, **params)


@pytest.mark.parametrize(
    "name, params, field",
    [("random_regular", {"degree": 0}, "degree"), ("erdos_renyi", {"p": 0}, "p"),
     ("erdos_renyi", {"p": 1.5}, "p"), ("small_world", {"k": 1}, "k"),
     ("small_world", {"p": -0.1}, "p"), ("ring", {"degree": 2}, "degree")],
)
def test_out_of_range_graph_hyper_parameters_are_rejected(name, params, field):
    with pytest.raises(pydantic.ValidationError) as info:
        GRAPHS.validate(name, params)
    assert info.value.errors()[0]["loc"] == (field,)


# ------------------------------------------------------------------------ neighbour table


@pytest.fixture
def path_graph(monkeypatch):
    """Register a 'path' graph 0-1-2-3 (degrees 1, 2, 2, 1) in a registry restored afterwards."""
    monkeypatch.setattr(GRAPHS, "_entries", dict(GRAPHS._entries))
    monkeypatch.setattr(GRAPHS, "_models", dict(GRAPHS._models))
    GRAPHS.register("path", lambda n, seed: nx.path_graph(n))
    return "path"


def test_table_of_a_ring_by_hand():
    table = Gossip(4, 0, graph="ring").table()
    assert table.index.tolist() == [[0, 1, 3], [1, 0, 2], [2, 1, 3], [3, 0, 2]]
    assert table.mask.all()
    torch.testing.assert_close(table.weight, torch.full((4, 3), 1 / 3))


def test_uniform_table_of_an_irregular_graph_by_hand(path_graph):
    table = Gossip(4, 0, graph=path_graph, mixing="uniform").table()
    # k = 1 + max degree = 3; padding slots point at the node itself and are masked out
    assert table.index.tolist() == [[0, 1, 0], [1, 0, 2], [2, 1, 3], [3, 2, 3]]
    assert table.mask.tolist() == [[True, True, False], [True, True, True],
                                   [True, True, True], [True, True, False]]
    half, third = 1 / 2, 1 / 3
    torch.testing.assert_close(table.weight, torch.tensor(
        [[half, half, 0], [third, third, third], [third, third, third], [half, half, 0]]))


def test_metropolis_table_of_an_irregular_graph_by_hand(path_graph):
    table = Gossip(4, 0, graph=path_graph, mixing="metropolis").table()
    # w_ij = 1 / (1 + max(deg_i, deg_j)): every edge touches a degree-2 node -> 1/3;
    # w_ii = 1 - sum_j w_ij: ends 2/3, middles 1/3
    t = 1 / 3
    torch.testing.assert_close(table.weight, torch.tensor(
        [[2 * t, t, 0], [t, t, t], [t, t, t], [2 * t, t, 0]]))


def dense(table, n: int) -> torch.Tensor:
    """The n x n mixing matrix the table describes."""
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(table.index.shape[1]):
            if table.mask[i, j]:
                w[i, table.index[i, j]] += float(table.weight[i, j])
    return w


graphs = st.one_of(
    st.tuples(st.just("erdos_renyi"), st.integers(2, 14),
              st.fixed_dictionaries({"p": st.floats(0.45, 1.0)})),
    st.tuples(st.just("small_world"), st.integers(5, 14),
              st.fixed_dictionaries({"k": st.sampled_from([2, 4]), "p": st.floats(0, 1)})),
    st.tuples(st.just("ring"), st.integers(3, 14), st.just({})),
)


@settings(max_examples=60, deadline=None)
@given(spec=graphs, seed=st.integers(0, 10_000), mixing=st.sampled_from(["uniform", "metropolis"]))
def test_table_invariants(spec, seed, mixing):
    name, n, params = spec
    gossip = Gossip(n, seed, graph=name, graph_params=params, mixing=mixing)
    table = gossip.table()
    g = gossip.graph

    assert table.index[:, 0].tolist() == list(range(n))  # slot 0 is the node itself
    for i in range(n):
        got = table.index[i][table.mask[i]].tolist()
        assert got[0] == i and sorted(got[1:]) == sorted(g.neighbors(i))
    assert (table.weight[~table.mask] == 0).all()
    assert (table.weight[table.mask] > 0).all()
    w = dense(table, n)
    torch.testing.assert_close(w.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)
    if mixing == "metropolis":  # symmetric, hence doubly stochastic, on any graph
        torch.testing.assert_close(w, w.T, rtol=0, atol=1e-7)
        torch.testing.assert_close(w.sum(0), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)
    else:
        deg = torch.tensor([g.degree(i) for i in range(n)], dtype=torch.float64)
        torch.testing.assert_close(w.diagonal(), 1 / (deg + 1), rtol=0, atol=1e-7)


def test_uniform_weights_are_not_symmetric_on_an_irregular_graph(path_graph):
    """Why metropolis exists: uniform mixing on a path gives w_01 = 1/2 but w_10 = 1/3."""
    w = dense(Gossip(4, 0, graph=path_graph).table(), 4)
    assert w[0, 1] == pytest.approx(1 / 2) and w[1, 0] == pytest.approx(1 / 3)


def test_gossip_edges_are_sorted_pairs():
    assert Gossip(4, 0, graph="ring").edges() == [(0, 1), (0, 3), (1, 2), (2, 3)]


def test_topologies_by_name():
    star = TOPOLOGIES.build("star", 5, 0)
    assert isinstance(star, Star) and star.kind == "star" and star.edges() == []
    gossip = TOPOLOGIES.build("gossip", 6, 0, graph="random_regular", graph_params={"degree": 2})
    assert gossip.kind == "gossip" and {d for _, d in gossip.graph.degree()} == {2}


def test_gossip_validates_graph_params_against_the_graph():
    with pytest.raises(pydantic.ValidationError):
        Gossip(6, 0, graph="random_regular", graph_params={"degree": 2, "p": 0.3})
