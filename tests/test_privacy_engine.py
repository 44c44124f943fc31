"""Differential privacy through the real engine and scenario files: DP-SGD, local and central
DP-FedAvg, adaptive clipping, per-node budgets, and the errors a bad privacy section gets."""

from __future__ import annotations

import pytest
import torch
import yaml
from test_engine import FULL_BATCH, make_sim

from phalanx.network import Star
from phalanx.privacy import epsilon
from phalanx.privacy.client import AdaptiveClipping, clip_updates
from phalanx.privacy.plan import PrivacyPlan
from phalanx.range.runner import build
from phalanx.range.scenario import Scenario, ScenarioError, deep_merge, load_study


def plan(mechanism, sizes, *, rounds=3, **kw) -> PrivacyPlan:
    return PrivacyPlan.build(mechanism, sizes=torch.tensor(sizes), epochs=FULL_BATCH.epochs,
                             batch_size=FULL_BATCH.batch_size, rounds=rounds, delta=1e-5, **kw)


def test_central_dp_is_the_mean_of_clipped_updates_plus_the_calibrated_noise(make_shards):
    # Arrange: runs that differ only in the noise, over 30 seeds (the model has 15 coordinates)
    shards = make_shards([6, 6, 6, 6])
    noises = []
    for seed in range(30):
        quiet = make_sim(shards, Star(4, 0), weighting="uniform", seed=seed,
                         privacy=plan("central", [6] * 4, clip=0.05, noise_multiplier=1e-6))
        noisy = make_sim(shards, Star(4, 0), weighting="uniform", seed=seed,
                         privacy=plan("central", [6] * 4, clip=0.05, noise_multiplier=2.0))
        next(quiet.run(1)), next(noisy.run(1))
        noises.append(noisy.global_row - quiet.global_row)
    plain = make_sim(shards, Star(4, 0), weighting="uniform")
    next(plain.run(1))

    # Assert: without noise, the mean of the updates clipped to 0.05 (a step of at most 0.05);
    # the noise has std sigma * C / m = 2 * 0.05 / 4 per coordinate
    start = plain.initial
    want, _ = clip_updates(plain.rows - start, 0.05)  # plain.rows: each node's unclipped model
    torch.testing.assert_close(quiet.global_row - start, want.mean(0), rtol=0, atol=1e-6)
    assert (quiet.global_row - start).norm() <= 0.05 + 1e-6
    assert torch.stack(noises).std().item() == pytest.approx(2.0 * 0.05 / 4, rel=0.1)


def test_local_dp_noises_each_honest_update_and_not_the_malicious_ones(make_shards):
    # Arrange: node 3 is malicious (it sends its own update without noise: it does not care)
    shards = make_shards([6, 6, 6, 6])
    diffs = []
    for seed in range(30):
        sim = make_sim(shards, Star(4, 0), weighting="uniform", malicious=[3], seed=seed,
                       privacy=plan("local", [6] * 4, clip=10.0, noise_multiplier=1.0))
        plain = make_sim(shards, Star(4, 0), weighting="uniform", malicious=[3], seed=seed)
        next(sim.run(1)), next(plain.run(1))
        diffs.append(sim.global_row - plain.global_row)

    # Assert: the mean moved by the three honest nodes' noise: std sqrt(3) * 1 * 10 / 4
    assert torch.stack(diffs).std().item() == pytest.approx(3 ** 0.5 * 10 / 4, rel=0.1)
    assert sim.privacy.ledger.epsilon(3) > 0  # it took part; its spend is recorded all the same


def test_each_node_spends_one_step_per_round_it_took_part_in(make_shards):
    shards = make_shards([6, 6, 6, 6, 6, 6])
    sim = make_sim(shards, Star(6, 0), weighting="uniform", participation=0.5,
                   privacy=plan("local", [6] * 6, clip=1.0, noise_multiplier=1.5, rounds=6))
    taken = torch.zeros(6, dtype=torch.int64)
    for r in range(1, 7):
        part = sim._sample(r, torch.ones(6, dtype=torch.bool))
        taken[part] += 1
    list(sim.run(6))
    for node in range(6):
        assert sim.privacy.ledger.epsilon(node) == pytest.approx(epsilon(1.5, 1.0, int(taken[node]), 1e-5))
    assert len(set(taken.tolist())) > 1  # the nodes really took part in different numbers of rounds


def test_dpsgd_target_epsilon_is_met_by_every_node_after_all_rounds(make_shards):
    # Arrange: shards of different sizes get different sample rates, so different noise
    sizes = [40, 17, 9, 0]
    shards = make_shards(sizes)
    sim = make_sim(shards, Star(4, 0), sgd=FULL_BATCH.__class__(epochs=1, batch_size=8, lr=0.1),
                   privacy=PrivacyPlan.build("dp_sgd", sizes=torch.tensor(sizes), epochs=1,
                                             batch_size=8, rounds=3, delta=1e-5, clip=1.0,
                                             target_epsilon=2.0))

    records = list(sim.run(3))

    eps = [sim.privacy.ledger.epsilon(i) for i in range(4)]
    assert all(1.6 < e <= 2.0 for e in eps[:3]), eps  # calibrated to the target, not far below it
    assert eps[3] == 0.0  # an empty shard trained on nothing
    assert len(set(sim.privacy.noise_multiplier[:3].tolist())) == 3  # one per sample rate
    spent = [r["epsilon"] for r in records]
    assert spent == sorted(spent) and spent[-1] == pytest.approx(max(eps))


def test_a_node_stops_before_passing_its_budget_and_training_stops_when_all_have(make_shards):
    # Arrange: one round at sigma = 2 costs epsilon(2, 1, 1); the budget allows two rounds
    one, two, three = (epsilon(2.0, 1.0, k, 1e-5) for k in (1, 2, 3))
    shards = make_shards([6, 6, 6])
    sim = make_sim(shards, Star(3, 0), weighting="uniform",
                   privacy=plan("local", [6] * 3, clip=1.0, noise_multiplier=2.0,
                                budget=(two + three) / 2, rounds=5))

    records = list(sim.run(5))

    assert [r["participants"] for r in records] == [3, 3, 0]
    assert records[-1]["epsilon"] == pytest.approx(two) and one < two
    kinds = [e["text"] for e in sim.events if e["kind"] == "privacy"]
    assert any("stop: one more round would pass" in t for t in kinds)
    assert any("training stops" in t for t in kinds)


def test_adaptive_clipping_follows_the_quantile():
    rule = AdaptiveClipping(quantile=0.5, lr=0.2, count_noise=1e-9)
    g = torch.Generator().manual_seed(0)
    # every norm above the clip: nothing left unclipped, the clip grows by exp(0.2 * 0.5)
    assert rule.next_clip(1.0, torch.full((10,), 5.0), g) == pytest.approx(torch.e ** 0.1)
    # every norm below: the clip shrinks by exp(-0.2 * 0.5)
    assert rule.next_clip(1.0, torch.full((10,), 0.1), g) == pytest.approx(torch.e ** -0.1)
    # repeated, it settles between the norms 1 and 3 when half are each
    norms, clip = torch.tensor([1.0] * 5 + [3.0] * 5), 10.0
    for _ in range(200):
        clip = rule.next_clip(clip, norms, g)
    assert 1.0 <= clip <= 3.0 + 1e-6


# -- scenario files ---------------------------------------------------------------------------
DIGITS = {"data": {"dataset": "digits", "nodes": 6, "partition": "iid"}, "rounds": 2,
          "model": "logistic", "train": {"batch_size": 16}}


def scenario(tmp_path, **fields) -> Scenario:
    """The scenario a file of DIGITS with ``fields`` merged over it loads as."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(deep_merge(DIGITS, fields)))
    return load_study(path)[2][0]


@pytest.mark.parametrize("fields, message", [
    ({"privacy": {"mechanism": "dp_sgd"}}, "exactly one of noise_multiplier and target_epsilon"),
    ({"privacy": {"mechanism": "local", "noise_multiplier": 1.0, "target_epsilon": 3.0}},
     "exactly one of"),
    ({"privacy": {"mechanism": "central", "noise_multiplier": 1.0}, "topology": {"name": "gossip"}},
     "privacy.mechanism: central DP needs a star"),
    ({"privacy": {"mechanism": "central", "noise_multiplier": 1.0}, "aggregator": "median"},
     "privacy.mechanism: central DP noises the mean"),
    ({"privacy": {"mechanism": "local", "noise_multiplier": 1.0, "adaptive_clip": {}}},
     "adaptive_clip applies to mechanism central only"),
    ({"privacy": {"mechanism": "local", "noise_multiplier": -1.0}}, "privacy.noise_multiplier"),
    ({"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0, "delta": 1.5}}, "privacy.delta"),
])
def test_bad_privacy_sections_name_the_problem(tmp_path, fields, message):
    with pytest.raises(ScenarioError, match=message):
        scenario(tmp_path, **fields)


def test_adaptive_clipping_refuses_a_count_noise_that_cannot_fit(tmp_path):
    s = scenario(tmp_path, privacy={"mechanism": "central", "noise_multiplier": 4.0,
                          "adaptive_clip": {"count_noise": 1.0}})
    with pytest.raises(ScenarioError, match="privacy: adaptive clipping: the count's noise"):
        build(s)


def test_a_dp_run_reports_epsilon_each_round(tmp_path):
    built = build(scenario(tmp_path, privacy={"mechanism": "dp_sgd", "target_epsilon": 1.0}))
    records = list(built.simulation.run(2))
    assert [r["epsilon"] <= 1.0 for r in records] == [True, True]
    assert 0 < records[0]["epsilon"] < records[1]["epsilon"]
    assert records[1]["epsilon_mean"] <= records[1]["epsilon"]
