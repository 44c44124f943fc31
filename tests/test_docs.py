"""The README stays true: its scenario reference is the schema's, and its examples run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import yaml

from phalanx.range.scenario import Scenario, check_plugins

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_reference_matches_schema():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from sync_readme import synced
    finally:
        sys.path.pop(0)
    assert synced(README) == README, "README reference is stale: run python scripts/sync_readme.py"


def test_readme_worked_example_is_a_valid_scenario():
    (example,) = [b for b in _blocks("yaml") if "ring-under-attack" in b]
    scenario = Scenario.model_validate(yaml.safe_load(example))
    check_plugins(scenario)
    assert scenario.topology.name == "gossip" and scenario.adversary.malicious == 3


def test_readme_plugin_example_registers_and_aggregates(tmp_path, monkeypatch):
    (code,) = [b for b in _blocks("python") if "damped_mean" in b]
    (tmp_path / "readme_rules.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    import readme_rules  # noqa: F401  registers damped_mean
    from phalanx.aggregate import get

    rule = get("damped_mean", factor=0.5)
    out = rule(torch.tensor([[0.0, 0.0], [2.0, 4.0]]), torch.tensor([1.0, 3.0]))
    assert torch.allclose(out, torch.tensor([0.75, 1.5]))  # 0.5 * weighted mean (1.5, 3.0)
