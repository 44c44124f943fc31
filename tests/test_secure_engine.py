"""Bucketed secure aggregation in the star's round: the sums SecAgg reveals, the bucket seed,
exposure, and what a scenario may ask for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from test_engine import make_sim

from phalanx.aggregate import Mean
from phalanx.aggregate.chain import Chain
from phalanx.engine.secure import SecureAggregation, exposed_honest
from phalanx.network import Star
from phalanx.range.scenario import ScenarioError, deep_merge, load_study


def test_exposure_counts_honest_nodes_alone_among_attackers():
    buckets = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6, 7, 8])]
    malicious = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 1], dtype=torch.bool)
    # 1 is alone with attacker 0; 2 with attacker 3; bucket {4, 5} has no honest node; 6 and 7
    # share their bucket with an attacker but not alone: each still hides in a sum of two
    assert exposed_honest(buckets, malicious) == 2


def test_the_bucket_seed_binds_every_update_and_the_round():
    sec = SecureAggregation(bucket_size=2, clip=1.0, seed=7)
    senders = torch.arange(4)
    updates = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    base = sec.bucket_seed(3, sec.commitments(3, senders, updates))
    assert sec.bucket_seed(3, sec.commitments(3, senders, updates)) == base  # deterministic
    changed = updates.clone()
    changed[2, 5] += 1e-6
    assert sec.bucket_seed(3, sec.commitments(3, senders, changed)) != base
    assert sec.bucket_seed(4, sec.commitments(4, senders, updates)) != base
    other_validators = SecureAggregation(bucket_size=2, clip=1.0, seed=8)
    assert other_validators.bucket_seed(3, other_validators.commitments(3, senders, updates)) != base


def test_one_bucket_is_plain_secagg_the_mean_to_fixed_point_precision(make_shards):
    # Arrange: the same star with and without SecAgg (one bucket of all four nodes, the mean)
    shards = make_shards([6, 6, 6, 6])
    plain = make_sim(shards, Star(4, 0), weighting="uniform")
    secure = make_sim(shards, Star(4, 0), weighting="uniform",
                      secure=SecureAggregation(bucket_size=None, clip=10.0, seed=1))

    # Act
    next(plain.run(1)), (record := next(secure.run(1)))

    # Assert: equal up to the encoding's quantum (2^-frac_bits per input, 4 inputs)
    assert record["buckets"] == 1 and record["exposed"] == 0
    torch.testing.assert_close(secure.global_row, plain.global_row, rtol=0, atol=1e-6)


def test_bucketed_rule_runs_over_the_bucket_means(make_shards):
    # Arrange: six nodes in three buckets of two, the mean over bucket means (equal buckets:
    # the same as the mean of all), then a rule that picks the first bucket's mean
    shards = make_shards([5, 6, 7, 5, 6, 7])

    class FirstRow(Mean):
        label = "first_row"

        def aggregate(self, rows, mask, weights=None, context=None):
            return rows[:, 0]

    sec = SecureAggregation(bucket_size=2, clip=10.0, seed=3)
    sim = make_sim(shards, Star(6, 0), weighting="uniform", secure=sec, aggregator=Chain([], FirstRow()))
    plain = make_sim(shards, Star(6, 0), weighting="uniform")
    next(plain.run(1))
    updates = plain.rows - plain.initial  # each node's own update (plain.rows: trained models)

    # Act
    record = next(sim.run(1))

    # Assert: the global step is the mean of the first bucket the seed drew
    seed = sec.bucket_seed(1, sec.commitments(1, torch.arange(6), updates))
    first = sec.buckets(6, seed)[0]
    assert record["buckets"] == 3
    torch.testing.assert_close(sim.global_row - sim.initial, updates[torch.as_tensor(first)].mean(0),
                               rtol=0, atol=1e-6)


DIGITS = {"data": {"dataset": "digits", "nodes": 12, "partition": "iid"}, "rounds": 3,
          "model": "logistic", "train": {"batch_size": 16, "lr": 0.1}}


def _load(tmp_path, **fields):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(deep_merge(DIGITS, fields)))
    return load_study(path)[2][0]


@pytest.mark.parametrize("fields, message", [
    ({"secure_aggregation": {}, "topology": {"name": "gossip"}}, "secure aggregation needs a star"),
    ({"secure_aggregation": {}, "privacy": {"mechanism": "central", "noise_multiplier": 1.0}},
     "under secure aggregation the server never sees the sum"),
    ({"privacy": {"mechanism": "distributed", "noise_multiplier": 1.0}},
     "distributed noise is added under secure aggregation"),
    ({"secure_aggregation": {}, "privacy": {"mechanism": "distributed", "noise_multiplier": 1.0,
                                            "accountant": "pld"}}, "accounted in RDP only"),
    ({"secure_aggregation": {"bucket_size": 1}}, "secure_aggregation.bucket_size"),
    ({"secure_aggregation": {"bits": 4}}, "secure_aggregation.bits"),
])
def test_bad_secure_aggregation_sections_name_the_problem(tmp_path, fields, message):
    with pytest.raises(ScenarioError, match=message):
        _load(tmp_path, **fields)


def test_bucketed_robust_rule_survives_what_breaks_the_secagg_mean(tmp_path):
    # IPM with epsilon 10 from 2 of 24 nodes reverses the mean; 8 buckets of 3, at most 2 of
    # them holding an attacker, and a trimmed mean hold
    from phalanx.range.runner import run_study

    attack = {"adversary": {"malicious": 2, "update_attack": {"name": "ipm", "epsilon": 10}}}
    base = deep_merge(DIGITS, {**attack, "rounds": 6, "data": {"nodes": 24}})
    runs = [{"name": "secagg-mean", "secure_aggregation": {"bucket_size": None}},
            {"name": "bucketed", "aggregator": "trimmed_mean", "secure_aggregation": {"bucket_size": 3}}]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**base, "runs": runs}))
    summary = run_study(*load_study(path), tmp_path / "out", progress=False)
    acc = {r["name"]: r["final"]["accuracy"] for r in summary["runs"]}
    assert acc["secagg-mean"] < 0.3 < 0.6 < acc["bucketed"]


# -- distributed DP: Skellam shares under SecAgg ----------------------------------------------------
def test_skellam_rdp_by_hand_and_shares_add_up():
    from phalanx.privacy.skellam import skellam_noise, skellam_rdp

    # alpha 2, D2 = 3, D1 = 9, mu = 100: 2*9/200 + min((3*9 + 54)/40000, 27/200) = 0.09 + 0.002025
    assert skellam_rdp([2], 9.0, 3.0, 100.0)[0] == pytest.approx(0.09 + 81 / 40000)
    rng = np.random.default_rng(0)
    shares = sum(skellam_noise(200_000, 50.0 / 4, rng) for _ in range(4))
    assert shares.dtype == np.int64 and shares.var() == pytest.approx(50.0, rel=0.02)


def test_distributed_calibration_meets_the_target_and_no_less_noise_does():
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    from phalanx.privacy.accounting import INTEGER_ORDERS
    from phalanx.privacy.plan import DistributedNoise

    kw = {"clip": 1.0, "bucket": 4, "dim": 1000, "bits": 32}
    z = DistributedNoise.calibrate(2.0, 10, 1e-5, **kw)

    def eps(zz):
        return compute_epsilon(INTEGER_ORDERS, 10 * DistributedNoise(noise_multiplier=zz, **kw).rdp(INTEGER_ORDERS), 1e-5)[0]

    assert eps(z) <= 2.0 < eps(0.99 * z)


def test_distributed_noise_reaches_the_revealed_sums_and_is_accounted_per_bucket(make_shards):
    # Arrange: 6 nodes in 3 buckets of 2 (mean over bucket means), node 5 malicious (it adds no
    # noise share); runs with noise and with almost none, over several seeds
    from phalanx.privacy.plan import PrivacyPlan

    shards = make_shards([6] * 6)

    def sim(z, seed):
        plan = PrivacyPlan.build("distributed", sizes=torch.tensor([6] * 6), epochs=2, batch_size=64,
                                 rounds=1, clip=0.5, delta=1e-5, noise_multiplier=z, bucket_size=2,
                                 dim=15)
        return make_sim(shards, Star(6, 0), weighting="uniform", seed=seed, malicious=[5], privacy=plan,
                        secure=SecureAggregation(bucket_size=2, clip=0.5, seed=seed))

    diffs, noisy = [], None
    for seed in range(40):
        quiet, noisy = sim(1e-3, seed), sim(2.0, seed)
        next(quiet.run(1)), next(noisy.run(1))
        diffs.append(noisy.global_row - quiet.global_row)

    # Assert: a full bucket's sum has noise 2 * 0.5; its mean half that; the mean of 3 bucket
    # means 1/sqrt(3) of it; the bucket holding node 5 carries half its noise: variance
    # (1 + 1 + 1/2) / 9 * (2 * 0.5 / 2)^2 in the global step
    want = (2.5 / 9) ** 0.5 * 0.5
    assert torch.stack(diffs).std().item() == pytest.approx(want, rel=0.1)
    ledger = noisy.privacy.ledger
    eps = {n: ledger.epsilon(n) for n in range(5)}
    partner = [n for n in range(5) if ledger.history[n].get(("defined", "skellam", 2, 1))]
    assert len(partner) == 1 and 5 not in ledger.history  # the attacker's own spend is not tracked
    assert eps[partner[0]] > max(e for n, e in eps.items() if n != partner[0])


def test_skellam_approaches_the_gaussian_as_the_quantisation_gets_finer():
    # Agarwal et al. 2021, Section 3 (and their Figure 1): at a fine scale the Skellam mechanism's
    # RDP tends to the Gaussian's alpha / (2 z^2); at a coarse one the rounding costs privacy
    from phalanx.privacy.skellam import sensitivities, skellam_rdp

    z, clip, dim, orders = 1.5, 1.0, 10_000, [2, 8, 32]
    gaussian = [a / (2 * z * z) for a in orders]
    for frac_bits, rel in ((20, 1e-3), (6, 0.5)):
        l1, l2 = sensitivities(clip, frac_bits, dim)
        got = skellam_rdp(orders, l1, l2, (z * clip * 2.0**frac_bits) ** 2)
        close = all(abs(g / w - 1) <= rel for g, w in zip(got, gaussian))
        assert close == (frac_bits == 20), (frac_bits, got, gaussian)
        assert all(g >= w for g, w in zip(got, gaussian))  # never better than the Gaussian


def test_the_ledger_replays_what_secure_aggregation_revealed(tmp_path):
    # a bucketed run's aggregate records hold the revealed bucket means, not the updates the
    # server never saw; the replay re-runs the chain over them and matches every result hash
    from phalanx.engine.provenance.replay import replay
    from phalanx.range.runner import run_study

    runs = [{"name": "bucketed", "aggregator": "trimmed_mean", "secure_aggregation": {"bucket_size": 3}},
            {"name": "distributed", "aggregator": "trimmed_mean", "secure_aggregation": {"bucket_size": 3},
             "privacy": {"mechanism": "distributed", "noise_multiplier": 1.0}}]
    study = deep_merge(DIGITS, {"data": {"nodes": 24}, "rounds": 2,
                                "adversary": {"malicious": 2, "update_attack": "sign_flip"}})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study, "runs": runs}))
    run_study(*load_study(path), tmp_path / "out", progress=False)
    for name in ("bucketed", "distributed"):
        report = replay(tmp_path / "out" / name / "ledger.db", tmp_path / "out" / name / "ledger-private")
        assert report.ok and report.records == 2, report.summary()
