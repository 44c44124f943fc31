"""Scenario files: one-line errors naming the field and the value, --set, studies, hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.range.scenario import (
    Scenario,
    ScenarioError,
    default_study_path,
    deep_merge,
    load_study,
    parse_set,
    with_plugin_defaults,
)

# (yaml text, substrings the one-line message must hold: the field, then the bad value, then hints)
BAD_FILES = {
    "unknown top-level key": ("roundz: 3\n", ["roundz: unknown key", "allowed:", "rounds", "topology"]),
    "unknown nested key": ("train: {lrr: 0.1}\n",
                           ["train.lrr: unknown key", "allowed: batch_size, chunk_size, epochs, lr,"]),
    "unknown key in a list item": ("faults: [{target: server, crash: 2, when: 3}]\n",
                                   ["faults.0.when: unknown key", "crash", "recover"]),
    "wrong type": ("rounds: abc\n", ["rounds:", "valid integer", "'abc'"]),
    "wrong nested type": ("train: {lr: fast}\n", ["train.lr:", "'fast'"]),
    "section not a mapping": ("train: 3\n", ["train:", "3"]),
    "out of range": ("train: {lr: -1}\n", ["train.lr:", "greater than 0", "-1"]),
    "out of range int": ("data: {nodes: 0}\n", ["data.nodes:", "greater than or equal to 1", "0"]),
    "out of range float": ("topology: {participation: 1.5}\n", ["topology.participation:", "1.5"]),
    "bad choice": ("topology: {name: ring}\n", ["topology.name:", "'star'", "'gossip'", "'ring'"]),
    "unknown dataset": ("data: {dataset: nope}\n",
                        ["data.dataset.name: unknown dataset 'nope'", "known: digits, fashion_mnist"]),
    "unknown partitioner": ("data: {partition: nope}\n",
                            ["data.partition.name: unknown partitioner 'nope'", "dirichlet", "iid"]),
    "unknown model": ("model: resnet\n", ["model.name: unknown model 'resnet'", "cnn, logistic, mlp"]),
    "unknown aggregator": ("aggregator: krum9\n", ["aggregator.name: unknown aggregator 'krum9'", "mean"]),
    "unknown graph": ("topology: {name: gossip, graph: torus}\n",
                      ["topology.graph.name: unknown graph 'torus'", "random_regular", "ring"]),
    "unknown update attack": ("adversary: {update_attack: boom}\n",
                              ["adversary.update_attack.name: unknown update attack 'boom'", "sign_flip"]),
    "unknown data attack": ("adversary: {data_attack: boom}\n",
                            ["adversary.data_attack.name: unknown data attack 'boom'", "label_flip"]),
    "bad partition alpha": ("data: {partition: {name: dirichlet, alpha: 0}}\n",
                            ["data.partition.alpha:", "greater than 0", "(got 0)"]),
    "bad model param": ("model: {name: mlp, hidden: 0}\n", ["model.hidden:", "(got 0)"]),
    "bad graph param": ("topology: {name: gossip, graph: {name: random_regular, degree: 0}}\n",
                        ["topology.graph.degree:", "(got 0)"]),
    "unknown plug-in param": ("model: {name: mlp, hiden: 3}\n", ["model.hiden: unknown key"]),
    "bad attack param": ("adversary: {update_attack: {name: sign_flip, scale: -2}}\n",
                         ["adversary.update_attack.scale:", "-2"]),
    "plug-in without name": ("model: {hidden: 3}\n", ["model.name: required field is missing"]),
    "too many malicious": ("data: {nodes: 3}\nadversary: {malicious: 4}\n",
                           ["adversary.malicious: more malicious nodes than nodes (3)", "(got 4)"]),
    "recover before crash": ("faults: [{target: server, crash: 3, recover: 3}]\n",
                             ["faults.0", "recover (3) must come after crash (3)"]),
    "fault node outside": ("data: {nodes: 3}\nfaults: [{target: nodes, nodes: [1, 5], crash: 1}]\n",
                           ["faults.0.nodes: node ids must be below 3", "(got [5])"]),
    "fault without nodes": ("faults: [{target: nodes, crash: 1}]\n", ["faults.0", "non-empty 'nodes'"]),
    "server fault in gossip": ("topology: {name: gossip}\nfaults: [{target: server, crash: 2}]\n",
                               ["faults.0.target: only a star has a server", "'server'"]),
    "fault crash missing": ("faults: [{target: server}]\n", ["faults.0.crash: required field is missing"]),
    "invalid yaml": ("rounds: [1, 2\n", ["invalid YAML at line", "column"]),
    "not a mapping": ("- a\n- b\n", ["the top level must be a mapping of fields, got list"]),
    "scalar file": ("42\n", ["the top level must be a mapping of fields, got int"]),
    "empty runs": ("runs: []\n", ["runs: expected a non-empty list of runs"]),
    "runs not a list": ("runs: {a: 1}\n", ["runs: expected a non-empty list of runs"]),
    "run not a mapping": ("runs: [3]\n", ["runs.0: expected a mapping, got 3"]),
    "duplicate run names": ("runs: [{name: a}, {name: a, rounds: 2}]\n", ["name: two runs are named 'a'"]),
    "bad field inside a run": ("runs: [{name: fast, rounds: 0}]\n", ["run 'fast'", "rounds:", "(got 0)"]),
    "unknown pre-aggregator": ("aggregator: [nope, mean]\n",
                               ["pre_aggregators.0.name: unknown pre-aggregator 'nope'", "nnm"]),
    "rule in a pre-aggregator slot": ("pre_aggregators: [mean]\n",
                                      ["pre_aggregators.0.name: unknown pre-aggregator 'mean'"]),
    "empty chain": ("aggregator: []\n", ["empty chain"]),
    "chain given twice": ("aggregator: [nnm, mean]\npre_aggregators: [arc]\n", ["use one"]),
    "f set per stage": ("aggregator: {name: mean, f: 2}\n",
                        ["aggregator.f: set the f a defense assumes with declared_f", "(got 2)"]),
    "bad declared share": ("declared_f: 120%\n", ["declared_f:", "share below 100%"]),
    "declared f words": ("declared_f: many\n", ["declared_f:", "'many'"]),
    "negative declared f": ("declared_f: -1\n", ["declared_f:", "(got -1)"]),
    "bad weight cap": ("topology: {weight_cap: 0.5}\n", ["topology.weight_cap:", "0.5"]),
}


@pytest.mark.parametrize("text, expected", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_a_one_line_error_naming_field_and_value(write_yaml, text, expected):
    path = write_yaml(text)
    with pytest.raises(ScenarioError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert message.startswith(str(path) + ": ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"no such file$"):
        load_study(tmp_path / "absent.yaml")


def test_several_problems_are_counted_on_the_one_line(write_yaml):
    with pytest.raises(ScenarioError) as info:
        load_study(write_yaml("rounds: 0\nseed: -1\ntrain: {lr: 0}\n"))
    assert str(info.value).endswith("(+2 more problems)")


def test_plugins_not_a_list_is_a_scenario_error(write_yaml):
    with pytest.raises(ScenarioError, match=r"plugins"):
        load_study(write_yaml("plugins: 5\n"))


def test_plugins_as_a_string_names_the_field_not_a_letter(write_yaml):
    with pytest.raises(ScenarioError) as info:
        load_study(write_yaml("plugins: phalanx_userrules\n"))
    assert "'p'" not in str(info.value)


def test_unknown_plugin_param_lists_the_allowed_ones(write_yaml):
    with pytest.raises(ScenarioError, match=r"model\.hiden: unknown key; allowed: hidden"):
        load_study(write_yaml("model: {name: mlp, hiden: 3}\n"))


# ------------------------------------------------------------------------------------ --set


def test_parse_set_nests_and_parses_values_as_yaml():
    got = parse_set(["a.b=1", "a.c=x", "d=true", "e=0.5", "f=[1, 2]", "g=", "h.i.j=null", "k=a=b"])
    assert got == {"a": {"b": 1, "c": "x"}, "d": True, "e": 0.5, "f": [1, 2], "g": "",
                   "h": {"i": {"j": None}}, "k": "a=b"}


def test_parse_set_keeps_unparsable_yaml_as_text():
    assert parse_set(["x=[1"]) == {"x": "[1"}


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_parse_set_bad_form(item):
    with pytest.raises(ScenarioError, match=r"expected KEY=VALUE"):
        parse_set([item])


def test_parse_set_conflicting_keys():
    with pytest.raises(ScenarioError, match=r"a is set twice"):
        parse_set(["a=1", "a.b=2"])


keys = st.text("abcdefghij_", min_size=1, max_size=6)
scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.text("klmnopqrstuvwxyz", max_size=8))
trees = st.recursive(scalars, lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=3),
                     max_leaves=8)


def flatten(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")  # JSON is YAML
    return out


@settings(max_examples=100, deadline=None)
@given(tree=st.dictionaries(keys, trees, min_size=1, max_size=4))
def test_parse_set_round_trips_flattened_assignments(tree):
    assert parse_set(flatten(tree)) == tree


# ------------------------------------------------------------------------- studies and merging

STUDY = """\
study: mine
study_description: two runs
seed: 3
train: {lr: 0.1, batch_size: 8}
runs:
  - name: a
    train: {lr: 0.2}
  - name: b
    rounds: 7
"""


def test_study_runs_are_merged_over_the_base(write_yaml):
    name, description, runs = load_study(write_yaml(STUDY))
    assert (name, description) == ("mine", "two runs")
    a, b = runs
    assert (a.name, a.train.lr, a.train.batch_size, a.seed, a.rounds) == ("a", 0.2, 8, 3, 30)
    assert (b.name, b.train.lr, b.train.batch_size, b.seed, b.rounds) == ("b", 0.1, 8, 3, 7)


def test_set_beats_run_overrides_beats_base(write_yaml):
    _, _, runs = load_study(write_yaml(STUDY), parse_set(["train.lr=0.3", "rounds=4"]))
    assert [(r.train.lr, r.rounds, r.train.batch_size) for r in runs] == [(0.3, 4, 8), (0.3, 4, 8)]


def test_seed_argument_beats_set_and_file(write_yaml):
    _, _, runs = load_study(write_yaml(STUDY), parse_set(["seed=5"]), seed=9)
    assert [r.seed for r in runs] == [9, 9]


def test_set_with_exponent_notation_still_validates_as_a_float(write_yaml):
    # PyYAML reads 1e-5 as a string; the float field must still accept it
    _, _, runs = load_study(write_yaml("train: {lr: 0.1}\n"), parse_set(["train.lr=1e-5"]))
    assert runs[0].train.lr == 1e-5


def test_single_scenario_file_is_a_study_of_one(write_yaml):
    name, description, runs = load_study(write_yaml("rounds: 2\n", name="solo.yaml"))
    assert (name, description, len(runs), runs[0].name, runs[0].rounds) == ("solo", "", 1, "run", 2)


def test_empty_file_is_the_default_scenario(write_yaml):
    _, _, runs = load_study(write_yaml(""))
    assert runs[0] == with_plugin_defaults(Scenario())


def test_deep_merge_does_not_mutate_its_inputs():
    base, over = {"a": {"b": 1, "c": [1]}}, {"a": {"b": 2}}
    merged = deep_merge(base, over)
    merged["a"]["c"].append(2)
    assert base == {"a": {"b": 1, "c": [1]}} and merged == {"a": {"b": 2, "c": [1, 2]}}


def test_switching_plugin_in_a_run_drops_the_base_plugins_params(write_yaml):
    _, _, runs = load_study(write_yaml("""\
        data: {partition: {name: dirichlet, alpha: 0.5}}
        runs:
          - name: a
            data: {partition: {name: iid}}
        """))
    assert runs[0].data.partition.as_dict() == {"name": "iid"}


def test_switching_plugin_by_bare_name_replaces_it(write_yaml):
    _, _, runs = load_study(write_yaml("""\
        data: {partition: {name: dirichlet, alpha: 0.5}}
        runs:
          - name: a
            data: {partition: iid}
        """))
    assert runs[0].data.partition.as_dict() == {"name": "iid"}


def test_default_study_loads_four_star_and_gossip_runs():
    name, description, runs = load_study(None)
    assert name == "default" and description
    assert [r.name for r in runs] == ["star", "star, server crash", "gossip", "gossip, 10 nodes crash"]
    assert [r.topology.name for r in runs] == ["star", "star", "gossip", "gossip"]
    assert runs[1].faults[0].target == "server" and runs[3].faults[0].count == 10
    assert all(r.data.dataset.name == "fashion_mnist" and r.data.nodes == 40 for r in runs)
    assert default_study_path().is_file()


# --------------------------------------------------------------------------- canonical form


def test_canonical_json_is_compact_sorted_and_hashed():
    s = Scenario()
    text = s.canonical_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert s.sha256() == hashlib.sha256(text.encode()).hexdigest()


def test_hash_is_stable_across_key_order_and_spelling(write_yaml):
    a = load_study(write_yaml("rounds: 5\ntrain: {lr: 0.1, epochs: 2}\n", "a.yaml"))[2][0]
    b = load_study(write_yaml("train: {epochs: 2, lr: 0.1}\nrounds: 5\n", "b.yaml"))[2][0]
    assert a.sha256() == b.sha256() == with_plugin_defaults(
        Scenario(rounds=5, train={"lr": 0.1, "epochs": 2})).sha256()


def test_hash_is_the_same_whether_plugin_defaults_are_written_or_not(write_yaml):
    short = load_study(write_yaml("data: {partition: dirichlet}\nmodel: mlp\n", "a.yaml"))[2][0]
    spelled = load_study(write_yaml("data: {partition: {name: dirichlet, alpha: 0.5, min_size: 0}}\n"
                                    "model: {name: mlp, hidden: 200}\n", "b.yaml"))[2][0]
    assert short.sha256() == spelled.sha256()
    assert short.data.partition.params == {"alpha": 0.5, "min_size": 0}


@pytest.mark.parametrize("change", [
    {"rounds": 31}, {"seed": 1}, {"name": "other"}, {"train": {"lr": 0.051}},
    {"model": {"name": "mlp", "hidden": 199}}, {"data": {"partition": {"name": "dirichlet", "alpha": 0.6}}},
    {"topology": {"graph": {"name": "random_regular", "degree": 6}}},
    {"faults": [{"target": "server", "crash": 2}]}, {"plugins": ["x"]}, {"description": "d"},
])
def test_hash_changes_with_any_field(change):
    base = Scenario()
    assert Scenario.model_validate(change).sha256() != base.sha256()


@settings(max_examples=50, deadline=None)
@given(a=st.floats(1e-4, 100), b=st.floats(1e-4, 100))
def test_hash_equal_iff_values_equal(a, b):
    ha = Scenario.model_validate({"train": {"lr": a}}).sha256()
    hb = Scenario.model_validate({"train": {"lr": b}}).sha256()
    assert (ha == hb) == (a == b)


def test_scenario_round_trips_through_its_canonical_json():
    s = Scenario.model_validate(yaml.safe_load("""
        data: {partition: {name: shards, shards_per_node: 3}}
        model: {name: mlp, hidden: 12}
        faults: [{target: nodes, nodes: [1], crash: 2, recover: 4}]
    """))
    again = Scenario.model_validate(json.loads(s.canonical_json()))
    assert again == s and again.sha256() == s.sha256()


def test_chain_shorthand_splits_into_pre_aggregators_and_rule():
    s = Scenario.model_validate({"aggregator": ["nnm", {"name": "bucketing", "s": 3}, "mean"]})
    assert [p.name for p in s.pre_aggregators] == ["nnm", "bucketing"]
    assert s.pre_aggregators[1].params == {"s": 3} and s.aggregator.name == "mean"


def test_declared_f_forms():
    assert Scenario.model_validate({"declared_f": 3}).declared() == (3, None)
    assert Scenario.model_validate({"declared_f": "20%"}).declared() == (None, 0.2)
    real = Scenario.model_validate({"data": {"nodes": 50}, "adversary": {"malicious": 10}})
    assert real.declared() == (None, 0.2)  # default: the real malicious share


def test_a_chain_given_in_a_run_replaces_the_base_chain(write_yaml):
    path = write_yaml("""
        pre_aggregators: [arc]
        aggregator: mean
        runs:
          - {name: a}
          - {name: b, aggregator: [nnm, mean]}
    """)
    _, _, runs = load_study(path)
    assert [[p.name for p in r.pre_aggregators] for r in runs] == [["arc"], ["nnm"]]


def test_every_shipped_study_and_grid_file_validates():
    # the files the README tells people to run: each loads, every run and cell is a valid scenario
    from importlib import resources

    from phalanx.range.grid import load_grid

    folder = resources.files("phalanx.range")
    studies = sorted(p for p in (folder / "studies").iterdir() if p.name.endswith(".yaml"))
    grids = sorted(p for p in (folder / "grids").iterdir() if p.name.endswith(".yaml"))
    assert {p.name for p in studies} >= {"default.yaml", "privacy.yaml", "leakage.yaml"}
    assert {p.name for p in grids} >= {"default.yaml", "full.yaml", "secagg.yaml"}
    for path in studies:
        _, _, runs = load_study(Path(str(path)))
        assert runs, path.name
    for path in grids:
        assert load_grid(Path(str(path))).cells, path.name
