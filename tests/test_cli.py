"""The ``phalanx`` command, run for real in subprocesses (several at once: they are mostly start-up)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_STUDY, finish, start_cli
from typer.testing import CliRunner

from phalanx.range.scenario import ScenarioError, load_study

DIGITS = "data: {dataset: digits, nodes: 4, partition: iid, train_samples: 100, test_samples: 50}\n"

# name -> (file text or None for a missing file, extra arguments, substrings of the one line, marks)
BAD = {
    "unknown key": ("roundz: 3\n", [], ["roundz: unknown key", "allowed:"], ()),
    "wrong type": ("rounds: abc\n", [], ["rounds:", "'abc'"], ()),
    "out of range": ("train: {lr: -1}\n", [], ["train.lr:", "-1"], ()),
    "more malicious nodes than nodes": ("data: {nodes: 4}\nadversary: {malicious: 5}\n", [],
                                        ["adversary.malicious: more malicious nodes than nodes (4)",
                                         "(got 5)"], ()),
    "unknown plug-in": ("model: resnet\n", [], ["model.name: unknown model 'resnet'", "logistic"], ()),
    "bad plug-in param": ("data: {partition: {name: dirichlet, alpha: 0}}\n", [],
                          ["data.partition.alpha:", "(got 0)"], ()),
    "server fault in gossip": ("topology: {name: gossip}\nfaults: [{target: server, crash: 2}]\n", [],
                               ["faults.0.target: only a star has a server"], ()),
    "invalid yaml": ("rounds: [1\n", [], ["invalid YAML"], ()),
    "not a mapping": ("- 1\n", [], ["top level must be a mapping"], ()),
    "empty runs": ("runs: []\n", [], ["runs: expected a non-empty list"], ()),
    "duplicate runs": ("runs: [{name: a}, {name: a}]\n", [], ["two runs are named 'a'"], ()),
    "missing file": (None, [], ["no such file"], ()),
    "bad --set form": ("rounds: 2\n", ["--set", "rounds"], ["--set 'rounds': expected KEY=VALUE"], ()),
    "bad --set value": ("rounds: 2\n", ["--set", "train.lr=0"], ["train.lr:", "(got 0)"], ()),
    "impossible graph at build time": (
        DIGITS + "topology: {name: gossip, graph: {name: random_regular, degree: 4}}\n", [],
        ["topology.graph", "degree 4 needs more than 4 nodes"], ()),
    "label out of range for the data": (
        DIGITS + "adversary: {malicious: 1, data_attack: {name: label_flip, target: 12}}\n", [],
        ["adversary.data_attack", "label 12 out of range for 10 classes"], ()),
    "plugins not a list": ("plugins: 5\n", [], ["plugins"], ()),
}
#: Each distinct way the command can fail, run for real; every case also runs in-process below.
IN_SUBPROCESS = ["unknown key", "more malicious nodes than nodes", "missing file", "bad --set form", "impossible graph at build time",
                 "label out of range for the data", "plugins not a list"]


def params(names):
    return [pytest.param(name, marks=BAD[name][3], id=name) for name in names]


def write_case(root, name):
    text, extra, _, _ = BAD[name]
    path = root / f"{name.replace(' ', '_')}.yaml"
    if text is not None:
        path.write_text(text)
    return ["run", str(path), "--out", str(root / "out"), "--no-progress", *extra]


def check_one_error_line(name, code, stdout, stderr):
    expected = BAD[name][2]
    assert "Traceback" not in stderr + stdout
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert stdout == ""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Start the subprocess cases at once; return name -> CompletedProcess."""
    root = tmp_path_factory.mktemp("bad")
    procs = {name: start_cli(*write_case(root, name)) for name in IN_SUBPROCESS}
    return {name: finish(p) for name, p in procs.items()}


@pytest.mark.parametrize("name", params(IN_SUBPROCESS))
def test_bad_file_exits_2_with_one_error_line(bad_runs, name):
    result = bad_runs[name]
    check_one_error_line(name, result.returncode, result.stdout, result.stderr)


@pytest.mark.parametrize("name", params(BAD))
def test_bad_file_exits_2_with_one_error_line_in_process(tmp_path, name):
    """Every case through the same typer app, without paying a Python start-up per case."""
    from phalanx.cli import app

    result = CliRunner().invoke(app, write_case(tmp_path, name))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    check_one_error_line(name, result.exit_code, result.stdout, result.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_without_cuda_exits_1_with_one_line(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("device: cuda\nrounds: 1\n" + DIGITS)
    result = finish(start_cli("run", str(study), "--out", str(tmp_path / "o"), "--no-progress"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: device: cuda was asked for but torch sees no CUDA device"]


# ---------------------------------------------------------------------------- help and lists


@pytest.fixture(scope="module")
def info_runs():
    procs = {"help": start_cli("--help"), "run_help": start_cli("run", "--help"),
             "plugins": start_cli("plugins"), "schema": start_cli("schema")}
    return {k: finish(p) for k, p in procs.items()}


def test_help_lists_the_commands(info_runs):
    result = info_runs["help"]
    assert result.returncode == 0
    for command in ("run", "plugins", "schema"):
        assert command in result.stdout


def test_run_help_describes_the_options(info_runs):
    result = info_runs["run_help"]
    assert result.returncode == 0
    for option in ("--set", "--seed", "--out", "file", "default study", "--no-progress"):
        assert option in result.stdout


def test_plugins_lists_every_family(info_runs):
    result = info_runs["plugins"]
    assert result.returncode == 0
    out = result.stdout
    for header in ("data.dataset (dataset):", "model (model):", "aggregator (aggregator):",
                   "topology.graph (graph):", "adversary.update_attack (update attack):"):
        assert header in out
    for name in ("fashion_mnist", "digits", "dirichlet", "mlp", "cnn", "mean", "random_regular",
                 "sign_flip", "gaussian", "label_flip"):
        assert f"  {name} " in out
    assert "Weighted arithmetic mean of the rows (FedAvg)." in out


def test_schema_prints_the_reference_tables(info_runs):
    result = info_runs["schema"]
    assert result.returncode == 0
    out = result.stdout
    assert "| field | type | default | bounds | meaning |" in out
    assert "| `rounds` | int | `30` | >= 1, <= 100000 | Number of rounds. |" in out
    assert "| `train.lr` |" in out and "| `faults[].crash` |" in out
    assert "| `data.partition` | `dirichlet` | `alpha`=0.5 (> 0)" in out
    assert "| `model` | `mlp` | `hidden`=200 (>= 1, <= 65536)" in out


# -------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """The tiny two-run study, three times: twice with its own seed, once with --seed 1."""
    root = tmp_path_factory.mktemp("real")
    study = root / "tiny.yaml"
    study.write_text(TINY_STUDY)
    procs = {
        "first": start_cli("run", str(study), "--out", str(root / "first"), "--no-progress"),
        "again": start_cli("run", str(study), "--out", str(root / "again"), "--no-progress"),
        "seed1": start_cli("run", str(study), "--out", str(root / "seed1"), "--no-progress",
                           "--seed", "1"),
    }
    results = {k: finish(p, timeout=300) for k, p in procs.items()}
    return study, root, results


def accuracies(out_dir) -> dict[str, list]:
    return {run: [json.loads(line)["accuracy"] for line in (out_dir / run / "metrics.jsonl").open()]
            for run in ("star", "gossip")}


def test_tiny_study_runs_and_writes_its_outputs(real_runs):
    study, root, results = real_runs
    result = results["first"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = root / "first"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "tiny" and summary["description"] == "two tiny runs on the digits"
    manifest = summary["manifest"]
    assert {"phalanx", "torch", "commit", "config_sha256", "seeds"} <= set(manifest)
    assert manifest["torch"] == torch.__version__
    assert manifest["seeds"] == [0]
    _, _, runs = load_study(study)
    assert manifest["config_sha256"] == {r.name: r.sha256() for r in runs}
    assert [(r["name"], r["topology"]) for r in summary["runs"]] == [("star", "star"), ("gossip", "gossip")]
    for run in ("star", "gossip"):
        records = [json.loads(line) for line in (out / run / "metrics.jsonl").open()]
        assert [r["round"] for r in records] == [1, 2, 3]
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)
    assert summary["runs"][1]["graph"]["edges"]  # the gossip graph is recorded
    html = (out / "report.html").read_text()
    assert "<html" in html and "gossip" in html
    assert f"report: {out / 'report.html'}" in result.stderr


def test_tiny_study_learns(real_runs):
    _, root, _ = real_runs
    acc = accuracies(root / "first")
    assert acc["star"][-1] > 0.3 and acc["gossip"][-1] > 0.3  # 10 classes: chance is 0.1


def test_same_seed_same_accuracies_and_seed_option_changes_them(real_runs):
    _, root, results = real_runs
    assert all(r.returncode == 0 for r in results.values()), [r.stderr for r in results.values()]
    assert accuracies(root / "first") == accuracies(root / "again")
    assert accuracies(root / "seed1") != accuracies(root / "first")
    assert json.loads((root / "seed1" / "summary.json").read_text())["manifest"]["seeds"] == [1]


def test_runs_whose_names_slug_alike_are_refused_before_anything_is_written(write_yaml, tmp_path):
    study = write_yaml("rounds: 1\nmodel: logistic\ntrain: {strategy: loop}\n" + DIGITS + "runs: [{name: a b}, {name: a-b}]\n")
    with pytest.raises(ScenarioError, match=r"runs 'a b' and 'a-b' would share the output folder 'a-b'"):
        load_study(study)


def test_build_time_error_names_the_run(write_yaml, tmp_path):
    from phalanx.cli import app

    study = write_yaml(DIGITS + "runs:\n  - name: a\n  - name: b\n"
                       "    topology: {name: gossip, graph: {name: random_regular, degree: 4}}\n")
    result = CliRunner().invoke(app, ["run", str(study), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2
    assert "run 'b'" in result.stderr
