"""The simulated round, checked against FedAvg and gossip averaging worked out in the test.

Most tests train full-batch (batch size above every shard), so each node's local model does not
depend on the shuffle and the expected result is computed here with a plain module and
``torch.optim.SGD``, independently of the engine's batch plan.
"""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from phalanx.aggregate import Mean
from phalanx.attacks import Gaussian, LabelFlip, SignFlip
from phalanx.engine import Fault, FaultSchedule, Simulation
from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.network import Gossip, Star
from phalanx.range.runner import _poison, build
from phalanx.range.scenario import Scenario
from phalanx.train import SGDConfig, Shards

SHAPE, CLASSES = (1, 2, 2), 3
FULL_BATCH = SGDConfig(epochs=2, batch_size=64, lr=0.5, momentum=0.5, weight_decay=0.01)
TOL = dict(rtol=0, atol=2e-6)
METRIC_KEYS = {"round", "availability", "alive", "participants", "accuracy", "loss",
               "accuracy_min", "accuracy_max", "consensus_distance", "wall_time_s", "elapsed_s",
               "rejected_rows"}


def logistic() -> nn.Module:
    return MODELS.build("logistic", SHAPE, CLASSES)


def make_sim(shards: Shards, topology, *, malicious=(), faults=(), sgd=FULL_BATCH, seed=0,
             aggregator=None, **kw) -> Simulation:
    n = shards.num_nodes
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(malicious)] = True
    g = torch.Generator().manual_seed(99)
    return Simulation(
        flat_model=FlatModel(logistic()), initial=initial_row(logistic, 0), shards=shards,
        test_x=torch.randn(20, *SHAPE, generator=g), test_y=torch.randint(0, CLASSES, (20,), generator=g),
        topology=topology, aggregator=aggregator or Mean(), malicious=bad, faults=FaultSchedule(list(faults), n),
        sgd=sgd, seed=seed, **kw)


def local(row: torch.Tensor, shards: Shards, node: int, sgd: SGDConfig = FULL_BATCH) -> torch.Tensor:
    """Node ``node`` alone, full batch, with torch.optim.SGD: the reference local update."""
    idx = shards.index[node, : int(shards.sizes[node])]
    module = logistic()
    nn.utils.vector_to_parameters(row.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=sgd.lr, momentum=sgd.momentum,
                          weight_decay=sgd.weight_decay)
    for _ in range(sgd.epochs if len(idx) else 0):
        opt.zero_grad()
        F.cross_entropy(module(shards.x[idx]), shards.y[idx]).backward()
        opt.step()
    return nn.utils.parameters_to_vector(module.parameters()).detach()


def gossip(n: int, graph: str, mixing: str = "uniform", **params) -> Gossip:
    return Gossip(n, 0, graph=graph, graph_params=params, mixing=mixing)


def same_data_shards(n: int, size: int = 6) -> Shards:
    """Every node owns the same pool rows, so every honest update is the same vector."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(size, *SHAPE, generator=g), torch.randint(0, CLASSES, (size,), generator=g)
    return Shards.from_parts(x, y, [torch.arange(size)] * n)


def run_rounds(sim: Simulation, rounds: int, attr: str = "rows"):
    """Metrics records and a snapshot of ``sim.<attr>`` after each round."""
    records, snaps = [], []
    for rec in sim.run(rounds):
        records.append(rec)
        snaps.append(getattr(sim, attr).clone())
    return records, snaps


# ------------------------------------------------------------------------------------- star


def test_star_round_is_fedavg_weighted_by_shard_size(make_shards):
    shards = make_shards([2, 3, 5])
    sim = make_sim(shards, Star(3, 0))
    g0 = sim.global_row.clone()

    record = next(sim.run(1))

    trained = [local(g0, shards, i) for i in range(3)]
    expected = g0 + sum(n * (w - g0) for n, w in zip([2, 3, 5], trained)) / 10
    torch.testing.assert_close(sim.global_row, expected, **TOL)
    unweighted = g0 + sum(w - g0 for w in trained) / 3
    assert not torch.allclose(expected, unweighted, atol=1e-4)  # the weighting is visible
    assert record["participants"] == 3 and record["availability"] == 1.0


def test_star_uniform_weighting_is_the_plain_average(make_shards):
    shards = make_shards([2, 3, 5])
    sim = make_sim(shards, Star(3, 0), weighting="uniform")
    g0 = sim.global_row.clone()
    next(sim.run(1))
    expected = sum(local(g0, shards, i) for i in range(3)) / 3
    torch.testing.assert_close(sim.global_row, expected, **TOL)


def test_star_second_round_starts_every_node_from_the_new_global_model(make_shards):
    shards = make_shards([4, 2])
    sim = make_sim(shards, Star(2, 0))
    _, globals_ = run_rounds(sim, 2, "global_row")
    g1 = globals_[0]
    expected = g1 + (4 * (local(g1, shards, 0) - g1) + 2 * (local(g1, shards, 1) - g1)) / 6
    torch.testing.assert_close(globals_[1], expected, **TOL)


def test_star_crashed_node_neither_trains_nor_counts(make_shards):
    shards = make_shards([2, 3, 5])
    sim = make_sim(shards, Star(3, 0), faults=[Fault(nodes=(1,), crash=1, recover=3)])
    g0 = sim.global_row.clone()
    records, rows = run_rounds(sim, 3)

    assert [r["participants"] for r in records] == [2, 2, 3]
    assert [r["alive"] for r in records] == [2, 2, 3]
    assert [r["availability"] for r in records] == pytest.approx([2 / 3, 2 / 3, 1.0])
    # a star holds only the round's participants' models: node 1 is absent while down
    assert [len(x) for x in rows] == [2, 2, 3]
    torch.testing.assert_close(rows[0], torch.stack([local(g0, shards, 0), local(g0, shards, 2)]), **TOL)


def test_star_crashed_node_excluded_from_the_average(make_shards):
    shards = make_shards([2, 3, 5])
    sim = make_sim(shards, Star(3, 0), faults=[Fault(nodes=(1,), crash=1)])
    g0 = sim.global_row.clone()
    next(sim.run(1))
    expected = g0 + (2 * (local(g0, shards, 0) - g0) + 5 * (local(g0, shards, 2) - g0)) / 7
    torch.testing.assert_close(sim.global_row, expected, **TOL)


def test_star_server_crash_freezes_the_global_model_until_it_recovers(make_shards):
    shards = make_shards([2, 3, 5])
    sim = make_sim(shards, Star(3, 0), faults=[Fault(nodes=(), crash=2, recover=4, server=True)])
    records, globals_ = run_rounds(sim, 5, "global_row")

    assert torch.equal(globals_[1], globals_[0]) and torch.equal(globals_[2], globals_[0])
    assert not torch.equal(globals_[3], globals_[2])
    assert [r["availability"] for r in records] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert [r["participants"] for r in records] == [3, 0, 0, 3, 3]
    assert records[1]["accuracy"] == records[0]["accuracy"] == records[2]["accuracy"]
    # after recovery the round is FedAvg from the frozen model
    g = globals_[2]
    expected = g + sum(n * (local(g, shards, i) - g) for i, n in enumerate([2, 3, 5])) / 10
    torch.testing.assert_close(globals_[3], expected, **TOL)


def test_star_all_up_is_fully_available(make_shards):
    records, _ = run_rounds(make_sim(make_shards([2, 2, 2, 2]), Star(4, 0)), 3)
    assert [r["availability"] for r in records] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("p, alive, expected", [(0.3, 10, 3), (0.3, 9, 3), (0.05, 10, 1),
                                                (0.62, 10, 6), (1.0, 9, 9)])
def test_star_samples_exactly_round_p_times_live_nodes(make_shards, p, alive, expected):
    faults = [Fault(nodes=(9,), crash=1)] if alive == 9 else []
    sim = make_sim(make_shards([3] * 10), Star(10, 0), participation=p, faults=faults)
    records, parts = run_rounds(sim, 6, "participants")
    assert [r["participants"] for r in records] == [expected] * 6
    trained = set()
    for r, part in enumerate(parts):  # exactly the sampled nodes train, and the star holds their rows
        assert len(part) == expected == len(set(part.tolist()))
        assert not (alive == 9 and 9 in part.tolist())
        if r == 5:
            assert sim.rows.shape[0] == expected and not torch.equal(sim.rows[0], sim.initial)
        trained |= set(part.tolist())
    if expected < alive:
        assert len(trained) > expected  # a fresh sample each round


# ----------------------------------------------------------------------------------- gossip


def mixing_matrix(g: nx.Graph, n: int, mixing: str) -> torch.Tensor:
    """Worked out from the graph alone: uniform 1/(deg_i+1); metropolis 1/(1+max(deg_i,deg_j))."""
    w = torch.zeros(n, n)
    for i in range(n):
        nbrs = list(g.neighbors(i))
        for j in nbrs:
            w[i, j] = 1 / (len(nbrs) + 1) if mixing == "uniform" else 1 / (1 + max(g.degree(i), g.degree(j)))
        w[i, i] = 1 - w[i].sum()
    return w


def gossip_reference(rows: torch.Tensor, senders: list[int], w: torch.Tensor, receivers) -> dict:
    """Per receiver, a Python loop: the weighted mean of its own and its sending neighbours' rows."""
    out = {}
    for i in receivers:
        nb = [j for j in range(len(rows)) if w[i, j] > 0 and (j == i or j in senders)]
        total = sum(float(w[i, j]) for j in nb)
        out[i] = sum(float(w[i, j]) * rows[j] for j in nb) / total
    return out


@pytest.mark.parametrize("mixing", ["uniform", "metropolis"])
def test_gossip_round_is_the_mixing_of_post_training_models(make_shards, mixing):
    sizes = [2, 3, 4, 1, 5, 3]
    shards = make_shards(sizes)
    topo = gossip(6, "erdos_renyi", mixing, p=0.5)
    assert len({d for _, d in topo.graph.degree()}) > 1  # irregular: the weights differ per node
    sim = make_sim(shards, topo)

    record = next(sim.run(1))

    trained = torch.stack([local(sim.initial, shards, i) for i in range(6)])
    expected = gossip_reference(trained, list(range(6)), mixing_matrix(topo.graph, 6, mixing), range(6))
    for i in range(6):
        torch.testing.assert_close(sim.rows[i], expected[i], **TOL, msg=f"node {i}")
    assert record["participants"] == 6 and record["availability"] == 1.0


def test_gossip_on_a_ring_by_hand(make_shards):
    shards = make_shards([2, 3, 4, 1])
    sim = make_sim(shards, gossip(4, "ring"))
    next(sim.run(1))
    w = [local(sim.initial, shards, i) for i in range(4)]
    torch.testing.assert_close(sim.rows[0], (w[3] + w[0] + w[1]) / 3, **TOL)
    torch.testing.assert_close(sim.rows[2], (w[1] + w[2] + w[3]) / 3, **TOL)


@pytest.mark.parametrize("mixing", ["uniform", "metropolis"])
def test_gossip_receiver_chunking_does_not_change_the_result(make_shards, mixing):
    shards = make_shards([2, 3, 4, 1, 5, 3, 2])
    whole = make_sim(shards, gossip(7, "erdos_renyi", mixing, p=0.5))
    chunked = make_sim(shards, gossip(7, "erdos_renyi", mixing, p=0.5), memory_budget_bytes=1)
    _, a = run_rounds(whole, 3)
    _, b = run_rounds(chunked, 3)
    for ra, rb in zip(a, b):
        assert torch.equal(ra, rb)


def test_gossip_crashed_node_is_frozen_and_excluded_then_resumes(make_shards):
    shards = make_shards([2, 3, 4, 1, 5])
    sim = make_sim(shards, gossip(5, "ring"), faults=[Fault(nodes=(2,), crash=1, recover=3)])
    records, rows = run_rounds(sim, 3)

    w = [local(sim.initial, shards, i) for i in range(5)]
    assert torch.equal(rows[0][2], sim.initial) and torch.equal(rows[1][2], sim.initial)
    torch.testing.assert_close(rows[0][1], (w[0] + w[1]) / 2, **TOL)  # node 2's slot dropped
    torch.testing.assert_close(rows[0][3], (w[3] + w[4]) / 2, **TOL)
    torch.testing.assert_close(rows[0][0], (w[4] + w[0] + w[1]) / 3, **TOL)
    assert [r["participants"] for r in records] == [4, 4, 5]
    assert [r["alive"] for r in records] == [4, 4, 5]
    assert not torch.equal(rows[2][2], sim.initial)  # recovered: trains and mixes again


@pytest.mark.parametrize("crashed, malicious, expected", [
    ((0, 3), (), 4 / 6),  # survivors 1, 2, 4, 5 each keep a live neighbour
    ((0, 2), (), 3 / 6),  # node 1 is cut off: up, but not available
    ((0, 3), (5,), 3 / 5),  # only honest nodes count: 1, 2, 4 of 5 honest
    ((), (), 1.0),
])
def test_gossip_availability(make_shards, crashed, malicious, expected):
    faults = [Fault(nodes=crashed, crash=1)] if crashed else []
    sim = make_sim(make_shards([2] * 6), gossip(6, "ring"), faults=faults, malicious=malicious)
    records, _ = run_rounds(sim, 2)
    assert [r["availability"] for r in records] == pytest.approx([expected, expected])
    assert records[0]["alive"] == 6 - len(crashed)


def test_gossip_participation_samples_about_p(make_shards):
    n, rounds, p = 40, 20, 0.5
    sim = make_sim(make_shards([2] * n), gossip(n, "ring"), participation=p)
    records, rows = run_rounds(sim, rounds)
    counts = [r["participants"] for r in records]
    assert 0.4 * n < sum(counts) / rounds < 0.6 * n
    assert len(set(counts)) > 1  # independent draws, not a fixed share
    changed = (rows[0] != sim.initial).any(1)
    assert int(changed.sum()) == counts[0]  # exactly the participants train and mix


def test_gossip_idle_live_nodes_with_a_live_neighbour_count_as_available(make_shards):
    n = 10
    sim = make_sim(make_shards([2] * n), gossip(n, "ring"), participation=0.3)
    records, _ = run_rounds(sim, 6)
    for r in records:  # every node that sat out is up with live neighbours on the ring
        assert r["availability"] >= (n - r["participants"]) / n


def test_gossip_partial_participation_without_faults_is_fully_available(make_shards):
    sim = make_sim(make_shards([2] * 8), gossip(8, "ring"), participation=0.3)
    records, _ = run_rounds(sim, 10)
    assert [r["availability"] for r in records] == [1.0] * 10


def test_complete_graph_uniform_mixing_reaches_consensus_in_one_round(make_shards):
    sim = make_sim(make_shards([2, 3, 4, 1]), gossip(4, "complete"))
    record = next(sim.run(1))
    assert record["consensus_distance"] == pytest.approx(0.0, abs=1e-6)
    assert record["accuracy_min"] == record["accuracy_max"] == record["accuracy"]


def test_ring_mixing_leaves_a_consensus_distance(make_shards):
    record = next(make_sim(make_shards([2, 3, 4, 1, 5, 2]), gossip(6, "ring")).run(1))
    assert record["consensus_distance"] > 1e-3


# ----------------------------------------------------------------------------------- attacks


def test_star_sign_flip_moves_the_mean_against_the_honest_direction():
    shards = same_data_shards(4)
    sim = make_sim(shards, Star(4, 0), malicious=(3,), update_attack=SignFlip(scale=5.0))
    g0 = sim.global_row.clone()
    next(sim.run(1))
    u = local(g0, shards, 0) - g0  # every honest node sends this same update
    # (3 u + (-5 u)) / 4 = -u / 2
    torch.testing.assert_close(sim.global_row - g0, -0.5 * u, **TOL)
    assert float((sim.global_row - g0) @ u) < 0


def test_gossip_sign_flip_forges_base_minus_update():
    shards = same_data_shards(3)
    sim = make_sim(shards, gossip(3, "complete"), malicious=(2,), update_attack=SignFlip(scale=1.0))
    next(sim.run(1))
    u = local(sim.initial, shards, 0) - sim.initial
    # node 0 averages itself (g0 + u), node 1 (g0 + u) and node 2's forgery (g0 - u)
    torch.testing.assert_close(sim.rows[0], sim.initial + u / 3, **TOL)
    torch.testing.assert_close(sim.rows[1], sim.initial + u / 3, **TOL)


def test_star_gaussian_attack_is_seeded():
    def final(seed):
        sim = make_sim(same_data_shards(4), Star(4, 0), malicious=(3,),
                       update_attack=Gaussian(std=100.0), seed=seed)
        next(sim.run(1))
        return sim.global_row.clone()

    a, b, c = final(1), final(1), final(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g0 = initial_row(logistic, 0)
    u = local(g0, same_data_shards(1), 0) - g0
    noise = 4 * (a - g0) - 3 * u  # what the malicious node sent
    assert 10 < float(noise.std()) < 1000  # noise of std 100, not an honest update


def test_gossip_gaussian_attack_does_not_depend_on_receiver_chunking():
    def final(budget):
        sim = make_sim(same_data_shards(4), gossip(4, "complete"), malicious=(3,),
                       update_attack=Gaussian(std=10.0), memory_budget_bytes=budget)
        next(sim.run(1))
        return sim.rows.clone()

    torch.testing.assert_close(final(256 << 20), final(1), rtol=0, atol=1e-6)


def test_label_flip_rewrites_only_malicious_nodes_copies():
    x = torch.arange(6.0).view(6, 1)
    y = torch.tensor([0, 1, 1, 2, 1, 0])
    # node 0 (honest) shares pool row 2 with node 1 (malicious)
    parts = [torch.tensor([0, 2]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    px, py, pparts = _poison(LabelFlip(mode="one_to_one", source=1, target=2), x, y, parts,
                             [1], num_classes=3, seed=0)

    assert torch.equal(py[:6], y) and torch.equal(px[:6], x)  # the pool is untouched
    assert pparts[1].tolist() == [6, 7]  # the malicious node got its own rewritten copy
    assert py[pparts[1]].tolist() == [2, 2]  # 1 -> 2; 2 stays
    assert torch.equal(px[pparts[1]], x[[2, 3]])  # the images are the same
    assert pparts[0].tolist() == [0, 2] and pparts[2].tolist() == [4, 5]
    assert py[pparts[0]].tolist() == [0, 1]  # the honest node still sees label 1 on row 2


@pytest.mark.parametrize("mode", ["all_to_one", "random"])
def test_label_flip_modes(mode):
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    _, new = LabelFlip(mode=mode, target=3).poison(torch.zeros(6, 1), y, 4, torch.Generator().manual_seed(0))
    if mode == "all_to_one":
        assert new.tolist() == [3] * 6
    else:
        assert (new != y).all() and new.min() >= 0 and new.max() < 4


def test_label_flip_label_beyond_the_classes_is_refused():
    with pytest.raises(ValueError, match="label 7 out of range for 3 classes"):
        LabelFlip(target=7).poison(torch.zeros(2, 1), torch.tensor([0, 1]), 3, torch.Generator())


# ------------------------------------------------------------------------------- metrics


def test_metrics_record_keys(make_shards):
    for topo in (Star(3, 0), gossip(3, "complete")):
        record = next(make_sim(make_shards([2, 2, 2]), topo).run(1))
        assert set(record) == METRIC_KEYS
        assert record["round"] == 1


def test_star_evaluation_by_hand():
    sim = make_sim(same_data_shards(2), Star(2, 0))
    sim.test_x = torch.zeros(4, *SHAPE)
    sim.test_y = torch.tensor([0, 1, 1, 2])
    sim.global_row = torch.zeros_like(sim.global_row)
    sim.global_row[-3:] = torch.tensor([0.0, 5.0, 0.0])  # bias only: always class 1
    out = sim.evaluate()
    assert out["accuracy"] == 0.5
    # CE with logits (0, 5, 0): label 1 costs log(1 + 2e^-5), labels 0 and 2 cost log(e^5 + 2)
    expected = (2 * math.log(1 + 2 * math.exp(-5)) + 2 * math.log(math.exp(5) + 2)) / 4
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert out["consensus_distance"] is None


def test_gossip_consensus_distance_by_hand_over_honest_live_nodes():
    sim = make_sim(same_data_shards(4), gossip(4, "complete"), malicious=(2,),
                   faults=[Fault(nodes=(3,), crash=1)])
    base = torch.zeros(sim.rows.shape[1])
    sim.rows = torch.stack([base, base.clone(), base + 1000, base - 1000])
    sim.rows[1, 0] = 2.0  # nodes 0 and 1 differ by 2 in one coordinate: each is 1 from the mean
    out = sim.evaluate(sim.faults.alive(1))
    assert out["consensus_distance"] == pytest.approx(1.0)  # node 2 malicious, node 3 down


def test_eval_every_skips_rounds_but_always_evaluates_the_last(make_shards):
    records, _ = run_rounds(make_sim(make_shards([2, 2]), Star(2, 0), eval_every=2), 5)
    assert [r["accuracy"] is not None for r in records] == [False, True, False, True, True]
    skipped = records[0]
    assert all(skipped[k] is None for k in ("accuracy", "loss", "accuracy_min", "accuracy_max",
                                            "consensus_distance"))
    assert skipped["availability"] == 1.0  # the round itself still ran


# ------------------------------------------------------------------ scenario-built runs


def digits_scenario(topology: str, seed: int = 0, **extra) -> Scenario:
    return Scenario.model_validate({
        "seed": seed, "rounds": 2, "device": "cpu",
        "data": {"dataset": "digits", "nodes": 6, "partition": "iid", "train_samples": 240,
                 "test_samples": 60},
        "model": "logistic", "train": {"batch_size": 16, "lr": 0.1, "strategy": "loop"},
        "topology": {"name": topology, "graph": {"name": "ring"}}, **extra})


def metrics(scenario: Scenario) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "elapsed_s")}
            for r in build(scenario).simulation.run(scenario.rounds)]


@pytest.mark.parametrize("topology", ["star", "gossip"])
def test_same_scenario_and_seed_give_identical_metrics(topology):
    first = metrics(digits_scenario(topology))
    assert first == metrics(digits_scenario(topology))
    assert first != metrics(digits_scenario(topology, seed=1))


def test_built_run_poisons_only_the_malicious_nodes():
    s = digits_scenario("star", adversary={"malicious": 2,
                                           "data_attack": {"name": "label_flip", "mode": "all_to_one", "target": 3}})
    run = build(s)
    shards = run.simulation.shards
    assert run.malicious == sorted(run.malicious) and len(run.malicious) == 2
    for node in range(6):
        labels = shards.y[shards.index[node, : int(shards.sizes[node])]]
        if node in run.malicious:
            assert (labels == 3).all()
        else:
            assert not (labels == 3).all()


def test_building_a_run_leaves_the_global_rng_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build(digits_scenario("star"))
    assert torch.equal(torch.rand(3), expected)
