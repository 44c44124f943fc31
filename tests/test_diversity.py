"""Model diversity: FGSM and PGD by hand, groups of architectures with an ensemble, transfer."""

from __future__ import annotations

import pydantic
import pytest
import torch

from phalanx.attacks.adversarial import fgsm, pgd, success_rate
from phalanx.range.runner import run_study
from phalanx.range.scenario import Scenario, check_plugins, deep_merge, with_plugin_defaults


def linear(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w


def test_fgsm_moves_each_input_by_epsilon_along_the_gradient_sign():
    # logits (x1 - x2, 0): the loss of label 0 falls as x1 - x2 grows, so FGSM lowers x1, raises x2
    w = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[0.5, 0.5]])
    adv = fgsm(linear(w), x, torch.tensor([0]), 0.1, low=-1.0, high=1.0)
    assert torch.allclose(adv, torch.tensor([[0.4, 0.6]]))
    clipped = fgsm(linear(w), torch.tensor([[0.95, -0.95]]), torch.tensor([1]), 0.1, low=-1.0, high=1.0)
    assert torch.allclose(clipped, torch.tensor([[1.0, -1.0]]))  # pushed out, clipped to the pixel range


def test_pgd_stays_in_the_ball_and_the_range_and_beats_fgsm_or_ties():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=g)
    x = torch.rand(64, 6, generator=g) * 2 - 1
    y = (x @ w).argmax(1)
    adv = pgd(linear(w), x, y, 0.2, -1.0, 1.0, steps=20, generator=torch.Generator().manual_seed(1))
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6 and float(adv.min()) >= -1 and float(adv.max()) <= 1
    p_rate, _ = success_rate(linear(w), x, adv, y)
    f_rate, count = success_rate(linear(w), x, fgsm(linear(w), x, y, 0.2, -1.0, 1.0), y)
    assert count == 64 and p_rate >= f_rate > 0


def test_success_rate_counts_only_inputs_the_target_got_right():
    model = lambda x: x  # noqa: E731  (the input is its own logits)
    clean = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    adv = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    rate, right = success_rate(model, clean, adv, torch.tensor([0, 0, 0]))
    assert right == 2 and rate == 0.5


def diverse(**over) -> Scenario:
    base = {"name": "div", "seed": 0, "rounds": 2, "data": {"dataset": "digits", "nodes": 6, "partition": "iid"},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.1, "strategy": "loop"},
            "diversity": {"groups": [{"name": "lr", "model": "logistic", "nodes": 3},
                                     {"name": "mlp", "model": {"name": "mlp", "hidden": 16}, "nodes": 3}],
                          "samples": 60, "pgd_steps": 3}}
    s = Scenario.model_validate(deep_merge(base, over))
    check_plugins(s)
    return with_plugin_defaults(s)


def test_a_diverse_run_reports_each_group_the_ensemble_and_the_transfer_table(tmp_path):
    s = diverse(adversary={"malicious": 2, "data_attack": {"name": "badnets", "target": 0, "size": 2}},
                diversity={"target_group": "mlp"}, ledger={"enabled": False})  # FedAvg's weights: no log
    summary = run_study("div", "", [s], tmp_path, progress=False)
    run = summary["runs"][0]
    assert "ledger" not in run and not list(tmp_path.glob("*/*/ledger.db"))
    assert set(run["malicious"]) <= {3, 4, 5}  # the poisoning is aimed at the mlp group
    assert run["model_parameters"] == {"lr": 650, "mlp": 16 * 64 + 16 + 16 * 10 + 10}
    final = run["final"]
    for key in ("accuracy", "accuracy_lr", "accuracy_mlp", "attack_success", "attack_success_lr",
                "attack_success_mlp"):
        assert 0 <= final[key] <= 1
    table = run["diversity"]
    for attack in ("fgsm", "pgd"):
        assert set(table[attack]) == {"lr", "mlp", "ensemble"}
        assert set(table[attack]["lr"]) == {"lr", "mlp", "ensemble"}
    # white-box examples fool their own model at least as often as they fool the other one, here
    assert table["pgd"]["lr"]["lr"] >= table["pgd"]["lr"]["mlp"]
    html = (tmp_path / "report.html").read_text()
    assert "Model diversity" in html and "crafted against" in html


@pytest.mark.parametrize("over,message", [
    ({"diversity": {"groups": [{"name": "a", "model": "logistic", "nodes": 2},
                               {"name": "b", "model": "mlp", "nodes": 2}]}}, "add up to 4"),
    ({"topology": {"name": "gossip"}}, "each group is a star"),
    ({"diversity": {"target_group": "cnn"}}, "no such group"),
    ({"adversary": {"malicious": 4}, "diversity": {"target_group": "lr"}}, "more than the 3 nodes"),
    ({"screens": ["reputation"]}, "not available with diversity"),
])
def test_diversity_scenarios_that_cannot_run_are_refused_in_one_line(over, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        diverse(**over)


def test_each_group_of_a_diverse_run_writes_its_own_ledger_and_each_passes_the_audit(tmp_path):
    from conftest import run_cli

    from phalanx.ledger import Ledger

    s = diverse(adversary={"malicious": 1, "data_attack": {"name": "label_flip", "source": 1, "target": 7}},
                diversity={"target_group": "mlp"})
    assert s.ledger.enabled and s.weighting() == "uniform"
    summary = run_study("div", "", [s], tmp_path, progress=False)
    groups = summary["runs"][0]["ledger"]["groups"]
    assert [(g["group"], g["nodes"]) for g in groups] == [("lr", [0, 1, 2]), ("mlp", [3, 4, 5])]
    origins, models = set(), set()
    for g in groups:
        folder = tmp_path / g["folder"]
        with Ledger.open(folder / "ledger.db", readonly=True) as ledger:
            entries = [e for _, e in ledger.entries()]
            origins.add(ledger.origin)
        assert sum(e.type == "aggregate_record" for e in entries) == 1 + s.rounds  # the start, then each round
        assert sum(e.type == "update_commitment" for e in entries) == 3 * s.rounds  # the group's own nodes
        models.add(g["trace"]["model"])
        audit = run_cli("audit", folder / "ledger.db", "--policy", folder / "policy.txt", "--replay")
        assert audit.returncode == 0, audit.stdout + audit.stderr
    assert len(origins) == 2 and len(models) == 2  # two logs, two models
    html = (tmp_path / "report.html").read_text()
    assert "div / lr" in html and "div / mlp" in html  # a row per group's ledger
