"""The README's claims about poisoning defenses, re-measured on one seed of the shipped grids.

Each test runs cells of a grid file under ``src/phalanx/range/grids/`` exactly as shipped (one seed)
and checks the claim the README's table makes. They take about a minute together, so they run only
with ``PHALANX_SLOW_TESTS=1`` (``.ci/run`` sets it); the FLAME wiring test below always runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from phalanx.defenses import flame as flame_module
from phalanx.range.grid import load_grid
from phalanx.range.runner import build

GRIDS = Path(__file__).resolve().parents[1] / "src" / "phalanx" / "range" / "grids"
slow = pytest.mark.skipif(not os.environ.get("PHALANX_SLOW_TESTS"), reason="set PHALANX_SLOW_TESTS=1 (.ci/run does)")


def cell(grid: str, defense: str, attack: str, seed: int = 0):
    g = load_grid(GRIDS / f"{grid}.yaml", {}, {})
    return next(c for c in g.cells if c.defense == defense and c.attack == attack and c.seed == seed)


def run(grid: str, defense: str, attack: str):
    c = cell(grid, defense, attack)
    b = build(c.scenario)
    return b, list(b.simulation.run(c.scenario.rounds))


def test_flame_clusters_the_senders_models_not_their_updates(monkeypatch):
    seen = []
    monkeypatch.setattr(flame_module, "majority_cluster", lambda d: seen.append(d) or np.ones(len(d), dtype=bool))
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    base = torch.tensor([[10.0, 10.0]])
    flame_module.Flame().screen(rows, torch.ones(1, 3, dtype=torch.bool), {}, base=base)
    models = (rows + base[:, None])[0]
    unit = models / models.norm(dim=1, keepdim=True)
    expected = (1 - unit @ unit.T).clamp(min=0).numpy()
    np.fill_diagonal(expected, 0)
    assert np.allclose(seen[0], expected, atol=1e-6)


@slow
def test_foolsgold_setting_two_sybils_beat_the_mean_and_not_foolsgold_or_reputation():
    for defense, low in (("mean", False), ("median", False), ("krum", False), ("foolsgold", True),
                         ("reputation", True)):
        _, records = run("foolsgold", defense, "k=2")
        rate = records[-1]["attack_success"]
        assert (rate < 0.05) if low else (rate > 0.9), (defense, rate)


@slow
def test_camouflaged_sybils_are_detected_within_five_rounds_by_the_named_chain():
    b, records = run("sybil", "reputation+quarantine", "calibrated")
    by_round = {r["round"]: r for r in records}
    assert max(by_round[r]["detect_f1"] for r in range(5, 10)) >= 0.9  # arrival at round 5
    assert records[-1]["attack_success"] < 0.05 and records[-1]["honest_quarantined"] == 0


@slow
def test_flame_holds_badnets_to_the_clean_rate():
    _, clean = run("backdoor", "flame", "clean, square")
    _, hit = run("backdoor", "flame", "badnets")
    assert hit[-1]["attack_success"] - clean[-1]["attack_success"] < 0.05
