"""``phalanx grid``: expansion, overrides, validation, the cell cache, parallel runs, the summary."""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest
from typer.testing import CliRunner

from phalanx.range import grid as grid_mod
from phalanx.range.grid import (
    Criteria, GridInterrupted, Layout, config_key, load_grid, read_cached, run_grid, summarise,
)
from phalanx.range.grid_report import markdown, render_grid_report
from phalanx.range.scenario import ScenarioError, parse_set

BASE = """\
base:
  rounds: 2
  data: {dataset: digits, nodes: 4, partition: iid, train_samples: 120, test_samples: 60}
  model: logistic
  train: {epochs: 1, batch_size: 16, lr: 0.1, strategy: loop}
  adversary: {malicious: 1}
"""

#: 2 topologies x 2 defenses x 4 attacks x 2 seeds = 32 cells, expanded but never run.
WIDE = BASE + """\
grid: wide
topologies:
  - star
  - {label: ring, topology: {name: gossip, graph: ring}}
defenses:
  - mean
  - {label: uniform, aggregator: mean, topology: {weighting: uniform}}
attacks:
  - none
  - sign_flip
  - {label: noise, update_attack: {name: gaussian, std: 5}}
  - label_flip
seeds: [0, 1]
chosen: uniform
"""

#: 1 x 1 x 2 x 2 = 4 cells that really run (about 30 ms each).
SMALL = BASE + """\
grid: small
topologies: [star]
defenses: [mean]
attacks: [none, {label: "noise <b>$x$</b>", update_attack: {name: gaussian, std: 5}}]
seeds: [0, 1]
chosen: mean
"""


def write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def numbers(out_dir):
    """key -> per-round records without the wall times, from the cell cache files."""
    drop = ("wall_time_s", "elapsed_s")
    return {p.stem: [{k: v for k, v in r.items() if k not in drop}
                     for r in json.loads(p.read_text())["records"]]
            for p in (out_dir / "cells").glob("*.json")}


# ------------------------------------------------------------------------- expansion and labels


def test_expansion_labels_order_and_merge(tmp_path):
    g = load_grid(write(tmp_path, WIDE))

    assert g.name == "wide"
    assert g.layout.topologies == ["star", "ring"]
    assert g.layout.defenses == ["mean", "uniform"]
    assert g.layout.attacks == ["none", "sign_flip", "noise", "label_flip"]
    assert g.layout.clean == ["none"]
    assert len(g.cells) == 2 * 2 * 4 * 2
    assert [c.label for c in g.cells[:3]] == [
        "star / mean / none / seed 0", "star / mean / none / seed 1", "star / mean / sign_flip / seed 0"]
    assert len({c.key for c in g.cells}) == 32  # every cell is a different configuration
    by = {c.label: c.scenario for c in g.cells}
    clean = by["ring / uniform / none / seed 1"]
    assert clean.adversary.malicious == 0 and clean.adversary.update_attack is None
    assert (clean.topology.name, clean.topology.graph.name, clean.topology.weighting, clean.seed) == (
        "gossip", "ring", "uniform", 1)
    flip = by["star / mean / sign_flip / seed 0"]
    assert flip.adversary.malicious == 1 and flip.adversary.update_attack.name == "sign_flip"
    assert flip.topology.weighting is None and flip.weighting() == "samples"  # a grid logs nothing
    noise = by["star / mean / noise / seed 0"].adversary.update_attack
    assert (noise.name, noise.params) == ("gaussian", {"std": 5.0})
    data = by["star / mean / label_flip / seed 0"].adversary  # a data attack's name as shorthand
    assert data.data_attack.name == "label_flip" and data.update_attack is None


def test_key_ignores_name_and_description_but_not_settings(tmp_path):
    cell = load_grid(write(tmp_path, WIDE)).cells[0].scenario
    renamed = cell.model_copy(update={"name": "other", "description": "text"})
    assert config_key(renamed) == config_key(cell)
    assert config_key(cell.model_copy(update={"rounds": 3})) != config_key(cell)


def test_set_overrides_base_axes_entries_seeds_and_criteria(tmp_path):
    overrides = parse_set([
        "base.rounds=5", "seeds=[3]", "chosen=mean", "criteria.collapse_at=0.1",
        "defenses.uniform.topology.weighting=samples",  # an entry by its label
        "attacks.2.update_attack.std=7",  # an entry by its index
        "attacks.sign_flip.malicious=2",
        "topologies.star=gossip",  # a whole entry, as a shorthand
    ])
    g = load_grid(write(tmp_path, WIDE), overrides)

    assert g.layout.seeds == [3] and g.layout.chosen == "mean"
    assert g.layout.criteria.collapse_at == 0.1 and g.layout.criteria.worst_case_within == 0.05
    assert g.layout.topologies == ["gossip", "ring"]
    by = {c.label: c.scenario for c in g.cells}
    assert by["gossip / mean / none / seed 3"].rounds == 5
    assert by["ring / uniform / none / seed 3"].topology.weighting == "samples"
    assert by["ring / mean / noise / seed 3"].adversary.update_attack.params == {"std": 7.0}
    assert by["ring / mean / sign_flip / seed 3"].adversary.malicious == 2
    assert by["ring / mean / noise / seed 3"].adversary.malicious == 1


def test_only_keeps_the_named_labels(tmp_path):
    g = load_grid(write(tmp_path, WIDE), only={"topologies": ["ring"], "attacks": ["none", "noise"]})
    assert g.layout.topologies == ["ring"] and g.layout.attacks == ["none", "noise"]
    assert len(g.cells) == 1 * 2 * 2 * 2


def test_leaving_the_chosen_defense_out_skips_the_checks_with_a_note(tmp_path):
    g = load_grid(write(tmp_path, WIDE), only={"defenses": ["mean"]})
    assert g.layout.chosen is None
    assert "left out by --only-defenses" in g.layout.notes[0]


# --------------------------------------------------------------------------------- validation

BAD = {
    "unknown aggregator names the cell": (
        {"defenses": "[mean, krumm]"}, [],
        "cell 'star / krumm / none / seed 0': aggregator.name: unknown aggregator 'krumm'"),
    "bad attack parameter names the cell and field": (
        {"attacks": "[none, {label: g, update_attack: {name: gaussian, std: -1}}]"}, [],
        "cell 'star / mean / g / seed 0': adversary.update_attack.std"),
    "bad field in an entry": (
        {"topologies": "[star, {label: r, topology: {name: gossip, mixing: odd}}]"}, [],
        "cell 'r / mean / none / seed 0': topology.mixing"),
    "attack with no malicious node": (
        {"attacks": "[none, sign_flip]"}, ["base.adversary.malicious=0"],
        "cell 'star / mean / sign_flip / seed 0': adversary.malicious: attack 'sign_flip' has no malicious node"),
    "unknown top-level key": ({"seedz": "[1]"}, [], "seedz: unknown key; allowed: attacks, base"),
    "empty seeds": ({}, ["seeds=[]"], "seeds: list should have at least 1 item"),
    "unknown criteria key": ({}, ["criteria.gap=1"], "criteria.gap: unknown key; allowed: clean_cost_within"),
    "duplicate labels": ({"defenses": "[mean, {label: mean, aggregator: mean}]"}, [],
                         "defenses.1.label: two defenses are labelled 'mean'"),
    "unknown key in an attack entry": ({"attacks": "[none, {label: x, rounds: 3}]"}, [],
                                       "attacks.1.rounds: unknown key; an attack entry takes label"),
    "clean entry with malicious nodes": ({"attacks": "[{label: x, malicious: 2}]"}, [],
                                         "attacks.0.malicious: an entry with no update_attack"),
    "unknown chosen": ({"chosen": "krum"}, [], "chosen: no defense is labelled 'krum'; have: mean"),
    "chosen without the baseline": ({"defenses": "[{label: other, aggregator: mean}]", "chosen": "other"},
                                    [], "no defense labelled 'mean' is in the grid"),
    "chosen without a clean attack": ({"attacks": "[sign_flip]", "chosen": "mean"}, [],
                                      "no attack entry is 'none'"),
    "unknown entry in --set": ({}, ["defenses.krum.declared_f=2"], "--set defenses.krum: no defense labelled"),
}


def bad_grid(tmp_path, fields):
    text = BASE + "".join(f"{k}: {v}\n" for k, v in fields.items())
    text += "".join(f"{k}: {v}\n" for k, v in {"topologies": "[star]", "defenses": "[mean]",
                                                 "attacks": "[none]"}.items() if k not in fields)
    return write(tmp_path, text)


@pytest.mark.parametrize("name", BAD)
def test_bad_grid_is_one_line_naming_the_cell_or_field(tmp_path, name):
    fields, sets, expected = BAD[name]
    with pytest.raises(ScenarioError) as info:
        load_grid(bad_grid(tmp_path, fields), parse_set(sets))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message, message


def test_unknown_only_label_is_an_error(tmp_path):
    with pytest.raises(ScenarioError, match=r"--only-attacks: no attack labelled 'ipm'; have: none, sign_flip"):
        load_grid(write(tmp_path, WIDE), only={"attacks": ["ipm"]})


def test_cli_bad_grid_exits_2_with_one_line_before_running_anything(tmp_path):
    from phalanx.cli import app

    # the error is in the last cell: no cell may have run when it is found
    path = bad_grid(tmp_path, {"attacks": "[none, {label: g, update_attack: {name: gaussian, std: -1}}]"})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["grid", str(path), "--out", str(out), "--no-progress", "--jobs", "1"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cell 'star / mean / g / seed 0'" in lines[0]
    assert not out.exists()


def test_cli_only_options_take_comma_separated_labels(tmp_path):
    from phalanx.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "grid", str(write(tmp_path, WIDE)), "--out", str(out), "--no-progress", "--jobs", "1",
        "--only-topologies", "star", "--only-attacks", "none,sign_flip", "--only-defenses", "mean",
        "--only-defenses", "uniform", "--set", "seeds=[0]"])
    assert result.exit_code == 0, result.stderr
    layout = json.loads((out / "grid.json").read_text())["layout"]
    assert (layout["topologies"], layout["defenses"], layout["attacks"], layout["seeds"]) == (
        ["star"], ["mean", "uniform"], ["none", "sign_flip"], [0])
    assert "4 cells: 0 cached, 4 run, 0 failed" in result.stderr
    assert "done checks for uniform: FAIL" in result.stdout  # mean under sign_flip: no defense
    assert "wide: star" in result.stdout and "plain mean collapses under:" in result.stdout


# ---------------------------------------------------------------------------- the cell cache


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """SMALL, run once with one job: (grid file, output folder, summary)."""
    root = tmp_path_factory.mktemp("grid")
    path = write(root, SMALL)
    summary = run_grid(load_grid(path), root / "first", jobs=1, progress=False)
    return path, root / "first", summary


def rerun(first_run, tmp_path, **kwargs):
    path, out, _ = first_run
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    return copy, run_grid(load_grid(path), copy, jobs=1, progress=False, **kwargs)


def test_first_run_runs_every_cell_and_caches_it(first_run):
    path, out, summary = first_run
    assert summary["counts"] == {"cells": 4, "unique": 4, "cached": 0, "ran": 4, "failed": 0,
                                 "stale_cache": 0}
    keys = {c.key for c in load_grid(path).cells}
    assert {p.stem for p in (out / "cells").glob("*.json")} == keys
    key = min(keys)
    cached = json.loads((out / "cells" / f"{key}.json").read_text())
    assert cached["config_sha256"] == key == config_key(cached["config"])
    assert [r["round"] for r in cached["records"]] == [1, 2]
    assert cached["final"] == cached["records"][-1] and cached["wall_time_s"] > 0
    assert not list((out / "cells").glob(".*"))  # no temporary file left behind
    assert {"grid.json", "grid.md", "report.html"} <= {p.name for p in out.iterdir()}


def test_second_run_runs_no_cell_and_gives_the_same_summary(first_run, tmp_path):
    _, _, summary = first_run
    _, again = rerun(first_run, tmp_path)
    assert again["counts"]["ran"] == 0 and again["counts"]["cached"] == 4
    assert again["summary"] == summary["summary"]


def test_deleted_cache_file_reruns_that_cell_only(first_run, tmp_path):
    path, out, _ = first_run
    key = load_grid(path).cells[2].key
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    (copy / "cells" / f"{key}.json").unlink()
    summary = run_grid(load_grid(path), copy, jobs=1, progress=False)
    assert (summary["counts"]["ran"], summary["counts"]["cached"]) == (1, 3)
    assert [c["cached"] for c in summary["cells"]] == [True, True, False, True]
    assert numbers(copy) == numbers(out)  # the same numbers again


@pytest.mark.parametrize("damage", ["truncated", "not json", "another cell's result", "edited config"])
def test_damaged_cache_file_is_rerun_not_trusted(first_run, tmp_path, damage):
    path, out, _ = first_run
    cells = load_grid(path).cells
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    target = copy / "cells" / f"{cells[0].key}.json"
    text = target.read_text()
    other = (copy / "cells" / f"{cells[3].key}.json").read_text()
    edited = json.loads(text)
    edited["config"]["rounds"] = 7  # the key no longer matches what it holds
    target.write_text({"truncated": text[: len(text) // 2], "not json": "garbage",
                       "another cell's result": other, "edited config": json.dumps(edited)}[damage])
    assert read_cached(copy / "cells", cells[0].key) is None

    summary = run_grid(load_grid(path), copy, jobs=1, progress=False)
    assert (summary["counts"]["ran"], summary["counts"]["stale_cache"]) == (1, 1)
    assert json.loads(target.read_text())["config_sha256"] == cells[0].key
    assert numbers(copy) == numbers(out)


def test_fresh_ignores_the_cache(first_run, tmp_path):
    _, again = rerun(first_run, tmp_path, fresh=True)
    assert again["counts"]["ran"] == 4 and again["counts"]["cached"] == 0


def test_interrupt_keeps_finished_cells_and_a_rerun_resumes(first_run, tmp_path, monkeypatch):
    path, out, _ = first_run
    real, calls = grid_mod.run_cell, []

    def interrupted_on_the_second(config, cells_dir):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, cells_dir)

    monkeypatch.setattr(grid_mod, "run_cell", interrupted_on_the_second)
    with pytest.raises(GridInterrupted, match="1 of 4 cells are cached"):
        run_grid(load_grid(path), tmp_path / "o", jobs=1, progress=False)
    assert len(list((tmp_path / "o" / "cells").glob("*.json"))) == 1
    assert not (tmp_path / "o" / "grid.json").exists()

    monkeypatch.setattr(grid_mod, "run_cell", real)
    summary = run_grid(load_grid(path), tmp_path / "o", jobs=1, progress=False)
    assert (summary["counts"]["ran"], summary["counts"]["cached"]) == (3, 1)
    assert numbers(tmp_path / "o") == numbers(out)


def test_two_jobs_give_the_same_numbers_as_one(first_run, tmp_path):
    path, out, summary = first_run
    two = run_grid(load_grid(path), tmp_path / "two", jobs=2, progress=False)
    assert two["counts"]["ran"] == 4 and two["counts"]["failed"] == 0
    assert numbers(tmp_path / "two") == numbers(out)
    assert two["summary"] == summary["summary"]


def test_failing_cell_records_its_error_and_the_grid_goes_on(tmp_path):
    from phalanx.cli import app

    # a 4-regular graph needs more than 4 nodes: found when the cell is built, not when validated
    path = write(tmp_path, BASE + "topologies: [star, {label: rr, topology: {name: gossip, "
                 "graph: {name: random_regular, degree: 4}}}]\ndefenses: [mean]\nattacks: [none]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["grid", str(path), "--out", str(out), "--no-progress", "--jobs", "1"])
    assert result.exit_code == 1
    summary = json.loads((out / "grid.json").read_text())
    status = {c["label"]: (c["status"], c["error"]) for c in summary["cells"]}
    assert status["star / mean / none / seed 0"] == ("ok", None)
    assert status["rr / mean / none / seed 0"][0] == "failed"
    assert "degree 4 needs more than 4 nodes" in status["rr / mean / none / seed 0"][1]
    assert len(list((out / "cells").glob("*.json"))) == 1  # the failure is not cached
    assert "failed: rr / mean / none / seed 0:" in result.stderr
    assert "star" in result.stdout and "worst case" in result.stdout


# ------------------------------------------------------------------- summary on hand-made results

LAYOUT = Layout(topologies=["star"], defenses=["mean", "good"], attacks=["none", "a1", "a2"],
                clean=["none"], seeds=[0, 1], chosen="good", baseline="mean")


def rows(table, layout=LAYOUT):
    """``table[(defense, attack)] = [(accuracy, accuracy_min) or None for failed, per seed]``."""
    out = []
    for (d, a), per_seed in table.items():
        for seed, value in enumerate(per_seed):
            final = {} if value is None else {"accuracy": value[0], "accuracy_min": value[1]}
            out.append({"topology": "star", "defense": d, "attack": a, "seed": seed,
                        "status": "failed" if value is None else "ok", "final": final})
    return out


HAND = {
    ("mean", "none"): [(0.80, 0.80), (0.84, 0.84)],  # clean mean: 0.82
    ("mean", "a1"): [(0.10, 0.05), (0.20, 0.15)],  # 0.15: collapses
    ("mean", "a2"): [(0.50, 0.40), (0.60, 0.50)],  # 0.55
    ("good", "none"): [(0.80, 0.70), (0.82, 0.72)],  # 0.81: 1 point below mean's clean
    ("good", "a1"): [(0.78, 0.60), (0.80, 0.62)],  # 0.79
    ("good", "a2"): [(0.76, 0.66), (0.78, 0.68)],  # 0.77: the worst case, 5 points below 0.82
}


def test_worst_case_is_the_attack_with_the_lowest_mean_accuracy():
    top = summarise(LAYOUT, rows(HAND))["topologies"][0]
    good = top["defenses"][1]

    assert good["attacks"]["a2"]["accuracy"] == pytest.approx(0.77)
    assert (good["attacks"]["a2"]["accuracy_lo"], good["attacks"]["a2"]["accuracy_hi"]) == (0.76, 0.78)
    assert good["attacks"]["a2"]["accuracy_std"] == pytest.approx(0.02 / 2**0.5)  # sample std
    assert good["attacks"]["a2"]["accuracy_min"] == pytest.approx(0.67)
    assert good["worst"]["attack"] == "a2" and good["worst"]["accuracy"] == pytest.approx(0.77)
    # the lowest min-honest accuracy comes from another attack than the lowest mean accuracy
    assert good["worst_min_honest"]["attack"] == "a1"
    assert good["worst_min_honest"]["accuracy_min"] == pytest.approx(0.61)
    assert good["worst_complete"]
    mean = top["defenses"][0]
    assert mean["worst"]["attack"] == "a1" and mean["clean"]["accuracy"] == pytest.approx(0.82)


def test_clean_case_never_counts_as_the_worst_and_ties_take_the_first_attack():
    table = {("mean", "none"): [(0.1, 0.1)] * 2, ("mean", "a1"): [(0.5, 0.5)] * 2,
             ("mean", "a2"): [(0.5, 0.4)] * 2}
    layout = Layout(topologies=["star"], defenses=["mean"], attacks=["none", "a1", "a2"],
                    clean=["none"], seeds=[0, 1])
    mean = summarise(layout, rows(table, layout))["topologies"][0]["defenses"][0]
    assert mean["worst"]["attack"] == "a1"
    assert mean["worst_min_honest"]["attack"] == "a2"


def test_failed_cell_makes_the_worst_case_incomplete_and_the_checks_unknown():
    table = dict(HAND)
    table[("good", "a2")] = [(0.76, 0.66), None]
    top = summarise(LAYOUT, rows(table))["topologies"][0]
    good = top["defenses"][1]
    assert good["attacks"]["a2"]["done"] == 1 and not good["attacks"]["a2"]["complete"]
    assert not good["worst_complete"]
    assert top["checks"]["worst_case"]["passed"] is None and top["checks"]["passed"] is None
    assert top["checks"]["clean_cost"]["passed"] is True


def test_done_checks_pass_at_exactly_the_limits():
    checks = summarise(LAYOUT, rows(HAND))["topologies"][0]["checks"]
    assert checks["baseline_clean"] == pytest.approx(0.82)
    assert checks["worst_case"]["attack"] == "a2"
    assert checks["worst_case"]["gap"] == pytest.approx(0.05)  # 0.82 - 0.77: on the limit
    assert checks["worst_case"]["passed"] is True
    assert checks["min_honest"] == {"attack": "a1", "accuracy_min": pytest.approx(0.61)}
    assert checks["clean_cost"]["cost"] == pytest.approx(0.01) and checks["clean_cost"]["passed"]
    assert checks["passed"] is True


@pytest.mark.parametrize(("change", "failing"), [
    ({("good", "a2"): [(0.76, 0.6), (0.77, 0.6)]}, "worst_case"),  # 0.765: 5.5 points below
    ({("good", "none"): [(0.79, 0.7), (0.80, 0.7)]}, "clean_cost"),  # 0.795: costs 2.5 points
])
def test_done_checks_fail_beyond_the_limits(change, failing):
    checks = summarise(LAYOUT, rows({**HAND, **change}))["topologies"][0]["checks"]
    assert checks[failing]["passed"] is False and checks["passed"] is False


def test_tighter_criteria_from_the_file_are_used():
    layout = Layout(**{**LAYOUT.__dict__, "criteria": Criteria(worst_case_within=0.04)})
    assert summarise(layout, rows(HAND))["topologies"][0]["checks"]["worst_case"]["passed"] is False


def test_collapse_of_plain_mean_per_attack():
    top = summarise(LAYOUT, rows(HAND))["topologies"][0]
    assert [(c["attack"], c["collapsed"]) for c in top["collapse"]] == [("a1", True), ("a2", False)]
    at_limit = {**HAND, ("mean", "a2"): [(0.2, 0.1), (0.2, 0.1)]}
    top = summarise(LAYOUT, rows(at_limit))["topologies"][0]
    assert top["collapse"][1]["collapsed"] is True  # accuracy <= 20% collapses


# ----------------------------------------------------------------------------------- the report


def test_report_is_self_contained_and_escapes_labels(first_run):
    _, out, summary = first_run
    html = (out / "report.html").read_text()
    assert html == render_grid_report(summary)
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'' in html
    assert "<script" not in html.lower()
    assert not re.search(r"https?://", html)
    assert re.findall(r'src="([^"]*)"', html) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))
    assert "noise &lt;b&gt;$x$&lt;/b&gt;" in html and "<b>$x$" not in html
    assert "declared f" in html and "real f" in html and "real share" in html


def test_markdown_has_the_tables_and_the_checks(first_run):
    _, out, summary = first_run
    md = (out / "grid.md").read_text()
    assert md == markdown(summary)
    assert "| defense | clean | worst case | worst attack | worst min honest | seed spread |" in md
    assert "Done checks for mean: **" in md and "(a) worst case over attacks" in md
    assert "noise <b>$x$</b>" in md  # the label as written
    assert "Does plain mean collapse (accuracy at most 20.0%)?" in md


# ------------------------------------------------------------------ defense chains and declared f

PLUGIN = '''
from phalanx.aggregate import PRE_AGGREGATORS, PreAggregator


@PRE_AGGREGATORS.register("grid_test_halve")
class Halve(PreAggregator):
    """Halves every row (a stand-in pre-aggregator for the grid tests)."""

    label = "grid_test_halve"

    def apply(self, rows, mask, weights=None, context=None):
        return rows * 0.5, mask, weights
'''

CHAINS = BASE + """\
  plugins: [grid_test_plugin]
  aggregator: [grid_test_halve, mean]
topologies:
  - star
  - {label: ring, topology: {name: gossip, graph: ring}, declared_f: "25%"}
defenses:
  - mean
  - {aggregator: [grid_test_halve, mean]}
  - {label: d1, aggregator: mean, declared_f: 1}
attacks: [none, sign_flip]
"""


@pytest.fixture
def chain_plugin(tmp_path, monkeypatch):
    (tmp_path / "grid_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_defense_chains_and_declared_f_stay_apart_from_the_real_f(tmp_path, chain_plugin):
    g = load_grid(write(tmp_path, CHAINS))
    assert g.layout.defenses == ["mean", "grid_test_halve+mean", "d1"]  # a chain's derived label
    by = {c.label: c.scenario for c in g.cells}
    plain = by["star / mean / sign_flip / seed 0"]
    assert plain.pre_aggregators == [] and plain.aggregator.name == "mean"  # a defense is its whole chain
    chained = by["star / grid_test_halve+mean / sign_flip / seed 0"]
    assert [p.name for p in chained.pre_aggregators] == ["grid_test_halve"]
    assert plain.declared_f is None and by["ring / mean / sign_flip / seed 0"].declared_f == "25%"
    assert by["ring / d1 / sign_flip / seed 0"].declared_f == 1  # the defense entry wins
    assert {s.adversary.malicious for label, s in by.items() if "/ none /" not in label} == {1}
    assert {s.adversary.malicious for label, s in by.items() if "/ none /" in label} == {0}


def test_a_grid_with_chains_runs_and_reports_declared_and_real_f(tmp_path, chain_plugin):
    g = load_grid(write(tmp_path, CHAINS), only={"topologies": ["ring"], "defenses": ["grid_test_halve+mean"]})
    summary = run_grid(g, tmp_path / "out", jobs=1, progress=False)
    assert summary["counts"]["failed"] == 0, [c["error"] for c in summary["cells"]]
    attacked = next(c for c in summary["cells"] if c["attack"] == "sign_flip")
    assert (attacked["chain"], attacked["declared_f"], attacked["real_f"]) == (
        ["grid_test_halve", "mean"], "25%", 1)
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<td>grid_test_halve → mean</td><td>25%</td><td class="n">1</td>' in html


def test_the_shipped_grids_validate_every_cell_and_name_their_chosen_defense():
    from phalanx.range.grid import default_grid_path

    for path in sorted(default_grid_path().parent.glob("*.yaml")):
        grid = load_grid(path, {}, {})
        assert grid.cells, path
        text = path.read_text()
        assert "chosen:" in text and "Sizes" in text, path
