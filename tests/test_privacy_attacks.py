"""Privacy attacks: membership inference statistics, gradient inversion, and the range's leakage run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from phalanx.attacks.inversion import dlg, image_quality, infer_label, total_variation
from phalanx.attacks.membership import lira_scores, roc_metrics, scaled_confidence
from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.range.runner import run_study
from phalanx.range.scenario import deep_merge, load_study


def test_roc_metrics_worked_by_hand():
    # members 0.9, 0.8, 0.3; non-members 0.7, 0.2, 0.1: 8 of the 9 pairs ordered right
    m = roc_metrics(torch.tensor([0.9, 0.8, 0.3]), torch.tensor([0.7, 0.2, 0.1]))
    assert m["auc"] == pytest.approx(8 / 9)
    # no threshold has FPR <= 1% (1/3 is the smallest non-zero) except those above 0.7
    assert m["tpr_at_1pct_fpr"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one member"):
        roc_metrics(torch.tensor([]), torch.tensor([0.1]))


def test_scaled_confidence_is_the_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)[0, 0].double()
    phi = scaled_confidence(lambda x: logits, torch.zeros(1, 1), torch.tensor([0]))
    assert phi.item() == pytest.approx(math.log(p / (1 - p)))
    # stable where p is 1 in float32: a huge margin still gives a finite, huge log-odds
    huge = scaled_confidence(lambda x: torch.tensor([[200.0, 0.0]]), torch.zeros(1, 1), torch.tensor([0]))
    assert huge.item() == pytest.approx(200.0)


def test_lira_separates_candidates_whose_confidence_rises_when_they_are_in():
    # Arrange: 40 candidates, 16 shadows; a candidate's phi is 2 when it is in a model, 0 when
    # out, plus noise; the target holds the first 20
    g = torch.Generator().manual_seed(0)
    inside = torch.stack([torch.randperm(16, generator=g) < 8 for _ in range(40)], dim=1)
    shadow_phi = 2.0 * inside + 0.3 * torch.randn(16, 40, generator=g)
    target_in = torch.arange(40) < 20
    target_phi = 2.0 * target_in + 0.3 * torch.randn(40, generator=g)

    # Act
    scores = lira_scores(target_phi, shadow_phi, inside)

    # Assert: perfect separation here; and without IN shadows the offline score is used
    assert roc_metrics(scores[:20], scores[20:])["auc"] == 1.0
    offline = lira_scores(target_phi, shadow_phi, torch.zeros_like(inside))
    assert roc_metrics(offline[:20], offline[20:])["auc"] == 1.0
    with pytest.raises(ValueError, match="without it"):
        lira_scores(target_phi, shadow_phi, torch.ones_like(inside))


def test_dlg_rebuilds_one_sample_from_its_gradient_and_not_from_a_noised_one():
    # Arrange: the MLP at its initial weights, one sample's gradient
    shape = (1, 8, 8)
    factory = lambda: MODELS.build("mlp", shape, 10)  # noqa: E731
    fm = FlatModel(factory())
    w = initial_row(factory, 0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, *shape, generator=g), torch.tensor([7])
    leaf = w.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(fm.functional(leaf, x), y), leaf)[0]

    # Act
    assert infer_label(fm, grad) == 7
    rec = dlg(fm, w, grad, shape, torch.Generator().manual_seed(2), steps=100)
    # DP-SGD's release with the clip at the gradient's own norm and noise multiplier 1
    noisy = grad + torch.randn(grad.shape, generator=g) * grad.norm()
    rec_noisy = dlg(fm, w, noisy, shape, torch.Generator().manual_seed(2), steps=100)

    # Assert
    span = float(x.max() - x.min())
    assert image_quality(rec, x[0], span)["psnr_db"] > 30
    assert image_quality(rec_noisy, x[0], span)["psnr_db"] < 20


def test_image_quality_and_total_variation_by_hand():
    ref = torch.zeros(1, 8, 8)
    off = ref + 0.1  # MSE 0.01 over a range of 1: PSNR 20 dB
    assert image_quality(off, ref, 1.0)["psnr_db"] == pytest.approx(20.0)
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]  # steps of 1 across, none down
    assert total_variation(ramp).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="images"):
        image_quality(torch.zeros(5), torch.zeros(5), 1.0)


def test_a_run_with_leakage_reports_membership_and_inversion(tmp_path):
    # Arrange: digits, a small node overfits in 5 local epochs; one run without DP
    scenario = {"name": "leak", "rounds": 2, "model": "mlp",
                "data": {"dataset": "digits", "nodes": 8, "partition": {"name": "dirichlet", "alpha": 0.5}},
                "train": {"epochs": 5, "batch_size": 8, "lr": 0.1},
                "leakage": {"shadows": 4, "members": 40, "inversion_samples": 1, "inversion_steps": 40}}
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(scenario))

    # Act
    summary = run_study(*load_study(path), tmp_path / "out", progress=False)

    # Assert: every figure is there and in range, and the report shows them
    leak = summary["runs"][0]["leakage"]
    node = leak["target_node"]
    assert leak["shard_size"] == min(s for s in summary["runs"][0]["partition"]["sizes"] if s)
    for attack in ("loss_threshold", "lira"):
        m = leak["membership"]["node"][attack]
        assert 0 <= m["auc"] <= 1 and m["members"] == m["nonmembers"] > 0
    assert leak["membership"]["outsider"]["model"] == "global"
    inv = leak["inversion"]
    assert inv["attack"] == "dlg" and inv["samples"] == 1 and 0 <= inv["recovered"] <= 1
    assert inv["buckets"]["2"]["samples"] == 2 and inv["buckets"]["3"]["samples"] == 3  # originals scored
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Leakage" in html and ", ".join(map(str, leak["target_nodes"])) in html
    assert node == leak["target_nodes"][0] and len(leak["target_nodes"]) == 3


def test_a_leakage_target_out_of_range_is_refused(tmp_path):
    from phalanx.range.scenario import ScenarioError

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deep_merge({"data": {"dataset": "digits", "nodes": 4}},
                                              {"leakage": {"node": 9}})))
    with pytest.raises(ScenarioError, match="leakage.node: node ids must be below 4"):
        load_study(path)
