"""Every run of the range writes its ledger; ``phalanx audit --replay`` and ``phalanx trace`` read
it; the scenario's ledger section; grids leave it off unless asked."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
from conftest import TINY_STUDY, run_cli
from test_grid import BASE
from typer.testing import CliRunner

from phalanx.cli import app
from phalanx.range.grid import config_key, load_grid, run_grid
from phalanx.range.scenario import Scenario, ScenarioError, load_study

ROLLBACK_STUDY = TINY_STUDY.replace("rounds: 3", "rounds: 5") + \
    "ledger: {rollback: {at: 4, to_round: 2, reason: round 3 was poisoned}}\n"


class _Result:
    def __init__(self, result):
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


def cli(*args: str) -> _Result:
    """The ``phalanx`` command in this process (the real subprocess is tested once, by the study)."""
    return _Result(CliRunner().invoke(app, [str(a) for a in args]))


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger_study")
    (root / "tiny.yaml").write_text(ROLLBACK_STUDY)
    result = run_cli("run", str(root / "tiny.yaml"), "--out", str(root / "out"), "--no-progress")
    assert result.returncode == 0, result.stderr
    return root / "out"


def test_a_run_writes_its_ledger_beside_its_metrics_and_reports_it(study_out):
    summary = json.loads((study_out / "summary.json").read_text())
    for run in ("star", "gossip"):
        folder = study_out / run
        assert {"ledger.db", "policy.txt", "ledger-private", "metrics.jsonl"} <= {p.name for p in folder.iterdir()}
        ledger = next(r for r in summary["runs"] if r["name"] == run)["ledger"]
        assert ledger["keep_updates"] and ledger["rollbacks"][0]["reverted"] == [3]
        assert len(ledger["trace"]["grid"]) == 5 and ledger["trace"]["reverted"][0]["rounds"] == [3]
        assert set(ledger["trace"]["grid"][2]) == {0}  # round 3 is not in the final model's provenance
    html = (study_out / "report.html").read_text()
    assert 'id="ledger"' in html and "phalanx audit star/ledger.db --policy star/policy.txt --replay" in html
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="provenance of star', html)
    assert "<code>equivocations</code>" in html  # gossip's per-round count, under Other metrics


def test_phalanx_audit_replays_the_runs_and_shows_the_reverted_rounds(study_out):
    for run in ("star", "gossip"):
        folder = study_out / run
        result = cli("audit", str(folder / "ledger.db"), "--policy", str(folder / "policy.txt"), "--replay")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("ok: ") and "checkpoints, every signature, hash and proof verified" in lines[0]
        assert lines[1].startswith("reverted: round 3, by rollback entry") and lines[1].endswith("round 3 was poisoned")
        assert lines[2].startswith("replay: ") and "every result hash matches" in lines[2]


def test_phalanx_trace_prints_a_models_provenance(study_out):
    summary = json.loads((study_out / "summary.json").read_text())
    model = next(r for r in summary["runs"] if r["name"] == "star")["ledger"]["model"]
    result = cli("trace", str(study_out / "star" / "ledger.db"), model[:12])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"model {model[:16]}: the result of round 5's aggregate by server")
    assert "round 4\n" in out and "round 3\n" not in out and "round 0\n  initial model" in out
    assert out.count("    used     node") == 6 * 4  # rounds 5, 4, 2, 1: six nodes each
    assert "reverted: round 3, not in any later model's provenance" in out
    short = cli("trace", str(study_out / "star" / "ledger.db"), model, "--summary", "--rounds", "1")
    assert "used     node" not in short.stdout and "... 4 earlier rounds" in short.stdout


@pytest.mark.parametrize("args,code,message", [
    (["trace", "{db}", "zz"], 2, "error: model 'zz': give its SHA-256 in hex"),
    (["trace", "{db}", "00000000"], 1, "error: no model in this log matches 00000000"),
    (["trace", "{dir}/nothing.db", "00000000"], 2, "error: "),
    (["audit", "{db}", "--replay", "--private", "{dir}/none"], 2, "error: {dir}/none: no such folder"),
])
def test_bad_input_to_trace_and_replay_is_one_line(study_out, args, code, message):
    folder = study_out / "star"
    result = cli(*[a.format(db=folder / "ledger.db", dir=folder) for a in args])
    assert result.returncode == code and result.stderr.startswith(message.format(dir=folder)), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_damaged_private_material_fails_the_replay_in_one_line(study_out, tmp_path):
    import shutil

    shutil.copytree(study_out / "gossip", tmp_path / "gossip")
    blobs = sorted((tmp_path / "gossip" / "ledger-private" / "blobs").rglob("*"))
    blob = next(p for p in blobs if p.is_file())
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x40
    blob.write_bytes(bytes(data))
    result = cli("audit", str(tmp_path / "gossip" / "ledger.db"), "--replay")
    assert result.returncode == 1 and result.stderr.startswith("replay failed: ") and "Traceback" not in result.stderr
    assert result.stdout.startswith("ok: ")  # the log itself is intact: only the kept bytes changed
    (tmp_path / "gossip" / "ledger-private" / "openings.jsonl").write_text("{not json\n")
    result = cli("audit", str(tmp_path / "gossip" / "ledger.db"), "--replay")
    assert result.returncode == 1 and "line 1 is not an opening" in result.stderr


# ------------------------------------------------------------------------------ the scenario
@pytest.mark.parametrize("ledger,message", [
    ({"rollback": {"at": 9, "to_round": 1}}, "ledger.rollback.at: after the last round (5)"),
    ({"rollback": {"at": 4, "to_round": 3}}, "to_round (3) must be at most at - 2 (2)"),
    ({"enabled": False, "rollback": {"at": 4, "to_round": 1}}, "a rollback is logged: it needs ledger.enabled"),
    ({"rollback": {"at": 4, "to_round": 1, "reason": "a\x07b"}}, "control characters are not allowed"),
    ({"validators": 0}, "ledger.validators: input should be greater than or equal to 1"),
])
def test_the_ledger_section_is_validated(tmp_path, ledger, message):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"rounds": 5, "ledger": ledger}))
    with pytest.raises(ScenarioError, match=re.escape(message)):
        load_study(path)


def test_a_run_with_the_ledger_off_writes_none(tmp_path):
    (tmp_path / "s.yaml").write_text(TINY_STUDY + "ledger: {enabled: false}\n")
    (tmp_path / "out" / "star").mkdir(parents=True)
    (tmp_path / "out" / "star" / "ledger.db").write_text("an earlier run's")
    result = cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out" / "star" / "ledger.db").exists()
    assert "ledger" not in json.loads((tmp_path / "out" / "summary.json").read_text())["runs"][0]


# ------------------------------------------------------------------------------ grids
GRID = BASE + """\
grid: small
topologies: [star, {label: ring, topology: {name: gossip, graph: ring}}]
defenses: [mean]
attacks: [none]
seeds: [0]
"""


def test_a_grid_writes_no_ledger_and_keeps_its_cache_keys(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    grid = load_grid(path)
    cell = grid.cells[0]
    assert not cell.scenario.ledger.enabled
    without = cell.scenario.model_dump(mode="json")
    del without["ledger"]  # a cache written before the ledger section existed
    assert config_key(without) == cell.key
    run_grid(grid, tmp_path / "out", jobs=1, progress=False)
    assert not list((tmp_path / "out" / "cells").rglob("ledger.db"))


def test_a_grid_may_keep_hashes_only_ledgers(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("base:\n", "base:\n  ledger: {keep_updates: false}\n"))
    grid = load_grid(path)
    summary = run_grid(grid, tmp_path / "out", jobs=1, progress=False)
    assert summary["counts"]["failed"] == 0
    for cell in grid.cells:
        folder = tmp_path / "out" / "cells" / cell.key
        assert (folder / "ledger.db").exists() and not (folder / "ledger-private").exists()
        result = cli("audit", str(folder / "ledger.db"), "--policy", str(folder / "policy.txt"))
        assert result.returncode == 0, result.stderr


def test_the_default_study_and_grid_parse_with_their_ledger_settings():
    _, _, runs = load_study(None)
    assert all(r.ledger.enabled and r.ledger.keep_updates for r in runs)
    assert Scenario.model_validate(textwrap.dedent("") or {}).ledger.validators == 4


QUARANTINE_SCENARIO = """\
name: quarantine ledger
rounds: 7
data: {dataset: mnist5k, partition: {name: dirichlet, alpha: 0.5}, nodes: 12}
model: logistic
train: {epochs: 1, batch_size: 20, lr: 0.05}
topology: {name: star}
screens: [{name: norm_bound, bound: 5.0}, reputation]
quarantine: {rounds: 2}
aggregator: mean
adversary:
  data_attack: {name: label_flip, source: 1, target: 7}
  update_attack: {name: sybil, mode: identical}
  sybils: {count: 3, arrival: 2, data: {classes: [1], samples: 100}}
"""


def test_the_validators_quarantine_decisions_are_passed_proposals_citing_evidence(tmp_path):
    from phalanx.ledger import Ledger

    (tmp_path / "q.yaml").write_text(QUARANTINE_SCENARIO)
    result = cli("run", tmp_path / "q.yaml", "--out", tmp_path / "out", "--no-progress")
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"][0]
    decisions = [d for d in run["guard"]["decisions"] if d["action"] == "quarantine"]
    assert decisions, "the scenario's Sybils were not quarantined"
    folder = tmp_path / "out" / "quarantine-ledger"
    with Ledger.open(folder / "ledger.db", readonly=True) as ledger:
        log = list(ledger.entries())
    logged = [(i, e.body) for i, e in log if e.type == "quarantine"]
    assert len(logged) == len(decisions)
    by_index = dict(log)
    for (i, body), d in zip(logged, decisions):
        assert body.action == "quarantine" and body.round == d["round"] + 1 and "the server" in body.reason
        activation, commitment = (by_index[j] for j in body.evidence)
        assert activation.type == "governance_activation" and len(activation.body.votes) == 4
        proposal = by_index[activation.body.proposal]
        assert proposal.type == "governance_proposal" and proposal.body.action == "quarantine"
        assert proposal.body.params["node"] == body.node.hex() and proposal.body.params["round"] == body.round
        assert commitment.type == "update_commitment" and commitment.body.round == d["round"]
    # no update commitment from a quarantined node after its quarantine: the audit's own check agrees
    result = cli("audit", folder / "ledger.db", "--policy", folder / "policy.txt", "--replay")
    assert result.returncode == 0, result.stdout + result.stderr
