"""The weight a star logs beside each update is a public constant or a DP-noised count, never the
exact claim (phalanx.privacy.counts): the scenario's rule, the one-time release and its charge,
what a simulated run's log shows, and what a deployed server logs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from test_network_processes import network  # noqa: F401  (a fixture)

from phalanx.ledger import Ledger
from phalanx.privacy.accounting import PrivacyLedger
from phalanx.privacy.counts import CountRelease, noised_count, release_epsilon
from phalanx.range.scenario import ScenarioError, load_study

RUN = """\
name: weights
seed: 3
rounds: 3
data: {dataset: digits, nodes: 6, partition: {name: dirichlet, alpha: 0.5}, train_samples: 600, test_samples: 100}
model: logistic
train: {epochs: 1, batch_size: 16, lr: 0.1, strategy: loop}
aggregator: mean
topology: {name: star}
"""


def scenario(tmp_path, text=RUN, **overrides):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_study(path, overrides)[2][0]


def test_unset_weighting_is_samples_without_a_ledger_and_uniform_with_one(tmp_path):
    assert scenario(tmp_path).weighting() == "uniform"
    assert scenario(tmp_path, ledger={"enabled": False}).weighting() == "samples"
    assert scenario(tmp_path, ledger={"enabled": False}).weighting(logged=True) == "uniform"  # a deployed node


@pytest.mark.parametrize("overrides, message", [
    ({"topology": {"weighting": "samples"}}, "exact claimed counts would be public"),
    ({"topology": {"weighting": "noised"}}, "weighting noised needs count_noise"),
    ({"topology": {"weighting": "uniform", "count_noise": 2.0}}, "weighting noised needs count_noise"),
    ({"topology": {"weighting": "noised", "count_noise": 0}}, "count_noise"),
    ({"topology": {"weighting": "noised", "count_noise": 2.0},
      "privacy": {"mechanism": "central", "noise_multiplier": 1.0}}, "a count's sensitivity is the whole count"),
    ({"topology": {"weighting": "noised", "count_noise": 2.0},
      "privacy": {"mechanism": "dp_sgd", "target_epsilon": 5.0}}, "give noise_multiplier"),
])
def test_exact_counts_on_a_log_and_bad_noise_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ScenarioError, match=message) as e:
        scenario(tmp_path, **overrides)
    assert "topology." in str(e.value)  # the error names the field


def test_a_count_is_released_once_charged_once_and_reused(tmp_path):
    account = PrivacyLedger(1e-5)
    release = CountRelease(3.0, 5, seed=0, account=account)
    claims = torch.tensor([10.0, 20.0, 30.0, 1e6, 40.0])
    honest = torch.tensor([True, True, True, False, True])
    first = release.weights(torch.arange(5), claims, honest)
    again = release.weights(torch.tensor([1, 3, 4]), claims[[1, 3, 4]], honest[[1, 3, 4]])
    assert torch.equal(again, first[[1, 3, 4]])  # the same release, every round
    assert first[3] == 1e6  # a malicious node's "release" is its claim (the cap deals with it)
    assert not torch.equal(first[honest], claims[honest])  # the honest counts carry noise
    once = release_epsilon(3.0, 1e-5)
    assert account.epsilons(range(5)) == pytest.approx([once] * 5)  # one step each, whatever the rounds
    assert 0 < once < release_epsilon(1.0, 1e-5)  # more noise, less spent
    with pytest.raises(ValueError, match="count noise must be > 0"):
        noised_count(10, 0.0)


def ledger_weights(folder):
    with Ledger.open(folder / "ledger.db", readonly=True) as ledger:
        entries = list(ledger.entries())
    by_index = dict(entries)
    out = []
    for _, e in entries:
        if e.type == "aggregate_record" and e.body.inputs:
            out.append([(by_index[i.entry].body.weight, i.weight) for i in e.body.inputs])
    return out


@pytest.mark.parametrize("weighting", ["noised", "uniform"])
def test_a_logged_run_shows_released_counts_or_a_constant_never_the_claims(tmp_path, weighting):
    topology = {"name": "star", "weighting": weighting, **({"count_noise": 2.0} if weighting == "noised" else {})}
    (tmp_path / "s.yaml").write_text(RUN.replace("topology: {name: star}", f"topology: {json.dumps(topology)}"))
    result = run_cli("run", tmp_path / "s.yaml", "--out", tmp_path / "out", "--no-progress")
    assert result.returncode == 0, result.stderr
    s = scenario(tmp_path, RUN, ledger={"enabled": False})
    from phalanx.range.runner import build

    sizes = build(s).simulation.shards.sizes.double()
    assert len(set(sizes.tolist())) > 1  # unequal shards: weights would show the counts
    rounds = ledger_weights(tmp_path / "out" / "weights")
    assert len(rounds) == 3 and all(len(r) == 6 for r in rounds)
    logged = [w for r in rounds for commit, used in r for w in (commit, used)]
    if weighting == "uniform":
        assert set(logged) == {1.0}
    else:
        released = (sizes + 2.0 * CountRelease(2.0, 6, 3, PrivacyLedger(1e-5)).draws).clamp(min=1.0)
        capped = torch.minimum(released, 3.0 * released.median())
        assert sorted(w for w, _ in rounds[0]) == pytest.approx(sorted(capped.tolist()), rel=1e-5)
        assert not set(logged) & set(sizes.tolist())  # no exact count anywhere on the log
        metrics = [json.loads(line) for line in (tmp_path / "out" / "weights" / "metrics.jsonl").open()]
        assert metrics[-1]["epsilon"] == pytest.approx(release_epsilon(2.0, 1e-5))  # charged once
    audit = run_cli("audit", tmp_path / "out" / "weights" / "ledger.db", "--policy",
                    tmp_path / "out" / "weights" / "policy.txt", "--replay")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_under_dp_sgd_the_counts_release_composes_into_each_nodes_account(tmp_path):
    def epsilon(weighting):
        dp = "privacy: {mechanism: dp_sgd, noise_multiplier: 1.5, clip: 1.0}\n"
        topology = {"name": "star", "weighting": weighting, **({"count_noise": 4.0} if weighting == "noised" else {})}
        text = RUN.replace("topology: {name: star}", f"topology: {json.dumps(topology)}\nledger: {{enabled: false}}\n" + dp)
        (tmp_path / weighting).mkdir()
        (tmp_path / weighting / "s.yaml").write_text(text)
        result = run_cli("run", tmp_path / weighting / "s.yaml", "--out", tmp_path / weighting / "out", "--no-progress")
        assert result.returncode == 0, result.stderr
        lines = (tmp_path / weighting / "out" / "weights" / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["epsilon"]

    plain, noised = epsilon("uniform"), epsilon("noised")
    assert plain < noised < plain + release_epsilon(4.0, 1e-5)  # composed (RDP), not added


def test_a_deployed_star_logs_the_counts_its_nodes_released(network, tmp_path):  # noqa: F811
    net = network(nodes=4, rounds=2, mode="star", timeout=6.0, aggregator="mean",
                  topology={"weighting": "noised", "count_noise": 5.0})
    net.start()
    trainers = [p.name for p in net.planned if p.role == "trainer"]
    net.wait(lambda: net.all_done(trainers + ["server"]), 240, "two star rounds")
    released = sorted(json.loads((net.by_name(n).folder / "released_count.json").read_text())["released"]
                      for n in trainers)
    assert all(r != 100 for r in released)  # iid digits: 100 samples each, released with noise
    rounds = ledger_weights(net.by_name("server").folder)
    assert len(rounds) == 2
    for r in rounds:
        assert sorted(used for _, used in r) == pytest.approx(released, rel=1e-6)
