"""The plug-in registry: names, keyword-only hyper-parameters as a validated model, user plug-ins."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Annotated

import pydantic
import pytest
from pydantic import Field

from conftest import run_cli
from phalanx.aggregate import AGGREGATORS
from phalanx.core import PluginError, Registry
from phalanx.core.registry import UnknownPluginError
from phalanx.range.scenario import Scenario, ScenarioError, check_plugins, load_study


def scale(x, y=1, *, factor: Annotated[float, Field(gt=0, le=10)] = 2.0, label: str):
    """Multiply.

    Second paragraph, not part of the description."""
    return (x * y * factor, label)


class Box:
    """A box
    of things."""

    def __init__(self, size, *, depth: Annotated[int, Field(ge=1)] = 3):
        self.size, self.depth = size, depth


# ----------------------------------------------------------------------------- names


def test_register_then_get_returns_the_same_object():
    reg = Registry("widget")
    returned = reg.register("scale", scale)
    assert returned is scale
    assert reg.get("scale") is scale
    assert "scale" in reg and "other" not in reg


def test_register_as_decorator_keeps_the_class():
    reg = Registry("widget")

    @reg.register("box")
    class Local(Box):
        pass

    assert reg.get("box") is Local
    assert isinstance(reg.build("box", 5), Local)


def test_names_and_iteration_are_sorted():
    reg = Registry("widget")
    for name in ("zeta", "alpha", "mid"):
        reg.register(name, scale)
    assert reg.names() == ["alpha", "mid", "zeta"]
    assert list(reg) == ["alpha", "mid", "zeta"]


def test_duplicate_name_for_another_object_is_refused():
    reg = Registry("widget")
    reg.register("thing", scale)
    with pytest.raises(PluginError, match=r"widget 'thing' is already registered"):
        reg.register("thing", Box)
    assert reg.get("thing") is scale  # the first registration survives


def test_registering_the_same_object_twice_is_harmless():
    reg = Registry("widget")
    reg.register("thing", scale)
    reg.register("thing", scale)  # e.g. a plug-in module imported twice
    assert reg.names() == ["thing"]


def test_unknown_name_lists_the_known_names():
    reg = Registry("widget")
    reg.register("b", scale)
    reg.register("a", Box)
    with pytest.raises(UnknownPluginError) as info:
        reg.get("c")
    assert str(info.value) == "unknown widget 'c'; known: a, b"
    assert info.value.known == ["a", "b"]
    assert isinstance(info.value, PluginError)


def test_unknown_name_in_an_empty_registry_says_none():
    with pytest.raises(UnknownPluginError, match=r"known: \(none\)"):
        Registry("widget").get("x")


# ------------------------------------------------------------------ hyper-parameters


def test_only_keyword_only_parameters_become_fields():
    reg = Registry("widget")
    reg.register("scale", scale)
    assert set(reg.params_model("scale").model_fields) == {"factor", "label"}


def test_validate_fills_defaults():
    reg = Registry("widget")
    reg.register("scale", scale)
    assert reg.validate("scale", {"label": "z"}) == {"factor": 2.0, "label": "z"}


@pytest.mark.parametrize("factor", [0, -1, 10.5])
def test_bounds_from_annotations_are_enforced(factor):
    reg = Registry("widget")
    reg.register("scale", scale)
    with pytest.raises(pydantic.ValidationError) as info:
        reg.validate("scale", {"factor": factor, "label": "z"})
    assert [e["loc"] for e in info.value.errors()] == [("factor",)]


def test_extra_keys_are_rejected():
    reg = Registry("widget")
    reg.register("scale", scale)
    with pytest.raises(pydantic.ValidationError) as info:
        reg.validate("scale", {"label": "z", "y": 3})  # y is run-time, not a hyper-parameter
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("y",)


def test_required_keyword_only_parameter_is_required():
    reg = Registry("widget")
    reg.register("scale", scale)
    with pytest.raises(pydantic.ValidationError) as info:
        reg.validate("scale", {})
    assert info.value.errors()[0]["type"] == "missing"
    assert info.value.errors()[0]["loc"] == ("label",)


def test_build_passes_runtime_args_and_validated_params():
    reg = Registry("widget")
    reg.register("scale", scale)
    assert reg.build("scale", 3, 5, label="q") == (30.0, "q")  # 3 * 5 * default factor 2
    with pytest.raises(pydantic.ValidationError):
        reg.build("scale", 3, label="q", factor=0)


def test_class_plugin_takes_params_from_init():
    reg = Registry("widget")
    reg.register("box", Box)
    assert set(reg.params_model("box").model_fields) == {"depth"}
    box = reg.build("box", 7, depth=4)
    assert (box.size, box.depth) == (7, 4)
    with pytest.raises(pydantic.ValidationError):
        reg.build("box", 7, depth=0)


def test_describe_is_the_first_paragraph_on_one_line():
    reg = Registry("widget")
    reg.register("scale", scale)
    reg.register("box", Box)
    assert reg.describe("scale") == "Multiply."
    assert reg.describe("box") == "A box of things."


# ------------------------------------------------------------------ user plug-ins

PLUGIN_SOURCE = '''
"""A user's aggregator, registered from outside the package."""
from typing import Annotated

from pydantic import Field

from phalanx.aggregate import AGGREGATORS, Mean


@AGGREGATORS.register("{name}")
class Damped(Mean):
    """The weighted mean times ``factor`` (0 freezes the model)."""

    def __init__(self, *, factor: Annotated[float, Field(ge=0, le=1)] = 1.0):
        self.factor = factor

    def aggregate(self, rows, mask, weights=None, context=None):
        return self.factor * super().aggregate(rows, mask, weights, context)
'''


@pytest.fixture
def user_plugin(tmp_path, monkeypatch):
    """Write a plug-in module into tmp_path; the global registry is restored afterwards."""
    monkeypatch.setattr(AGGREGATORS, "_entries", dict(AGGREGATORS._entries))
    monkeypatch.setattr(AGGREGATORS, "_models", dict(AGGREGATORS._models))
    module = f"user_plugin_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_SOURCE.format(name="damped"))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_user_plugin_is_unknown_until_its_module_is_imported(user_plugin):
    scenario = Scenario.model_validate({"aggregator": {"name": "damped", "factor": 0.5}})
    with pytest.raises(ScenarioError, match=r"aggregator\.name: unknown aggregator 'damped'"):
        check_plugins(scenario)


def test_user_plugin_usable_by_name_after_import(user_plugin):
    __import__(user_plugin)
    scenario = Scenario.model_validate({"aggregator": {"name": "damped", "factor": 0.5}})
    check_plugins(scenario)  # no error
    rule = AGGREGATORS.build(scenario.aggregator.name, **scenario.aggregator.params)
    assert rule.factor == 0.5
    with pytest.raises(ScenarioError, match=r"^aggregator\.factor: .*\(got 2\)$"):
        check_plugins(Scenario.model_validate({"aggregator": {"name": "damped", "factor": 2}}))


def test_study_plugins_field_imports_the_module(user_plugin, write_yaml):
    path = write_yaml(f"""\
        plugins: [{user_plugin}]
        aggregator: {{name: damped, factor: 0.25}}
        """)
    _, _, runs = load_study(path)
    assert runs[0].aggregator.name == "damped"
    assert runs[0].aggregator.params == {"factor": 0.25}
    assert "damped" in AGGREGATORS


def test_plugins_named_inside_a_run_are_imported(user_plugin, write_yaml):
    path = write_yaml(f"""\
        runs:
          - name: a
            plugins: [{user_plugin}]
            aggregator: damped
        """)
    _, _, runs = load_study(path)
    assert runs[0].aggregator.name == "damped"


def test_plugin_module_that_fails_to_import_is_a_one_line_error(write_yaml):
    path = write_yaml("plugins: [phalanx_no_such_module_xyz]\n")
    with pytest.raises(ScenarioError) as info:
        load_study(path)
    assert "plugins: cannot import 'phalanx_no_such_module_xyz'" in str(info.value)
    assert "\n" not in str(info.value)


def test_user_plugin_end_to_end_through_phalanx_run(tmp_path):
    (tmp_path / "my_rules.py").write_text(PLUGIN_SOURCE.format(name="damped"))
    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent("""\
        plugins: [my_rules]
        seed: 0
        rounds: 3
        data: {dataset: digits, nodes: 4, partition: iid, train_samples: 200, test_samples: 100}
        model: logistic
        train: {batch_size: 16, lr: 0.2, strategy: loop}
        runs:
          - name: frozen
            aggregator: {name: damped, factor: 0.0}
          - name: moving
            aggregator: {name: damped, factor: 1.0}
        """))
    out = tmp_path / "out"
    result = run_cli("run", str(study), "--out", str(out), "--no-progress", extra_paths=[tmp_path])
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["config"]["aggregator"] for r in summary["runs"]] == [
        {"name": "damped", "factor": 0.0}, {"name": "damped", "factor": 1.0}]
    losses = {name: [json.loads(line)["loss"] for line in (out / name / "metrics.jsonl").open()]
              for name in ("frozen", "moving")}
    # factor 0: the global model never moves, so every round evaluates the same model
    assert len(set(losses["frozen"])) == 1
    # factor 1 is the plain mean: the model learns
    assert losses["moving"][-1] < losses["frozen"][-1]


def test_user_plugin_bad_hyper_parameter_through_phalanx_run(tmp_path):
    (tmp_path / "my_rules2.py").write_text(PLUGIN_SOURCE.format(name="damped"))
    study = tmp_path / "study.yaml"
    study.write_text("plugins: [my_rules2]\naggregator: {name: damped, factor: 3}\n")
    result = run_cli("run", str(study), "--out", str(tmp_path / "o"), "--no-progress",
                     extra_paths=[tmp_path])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "aggregator.factor" in result.stderr and "3" in result.stderr
    assert "Traceback" not in result.stderr


def test_entry_point_plugins_are_loaded_and_a_broken_one_is_a_scenario_error(monkeypatch):
    import importlib.metadata as md

    from phalanx.range import scenario as sc

    loaded = []

    class Entry:
        def __init__(self, name, fail):
            self.name, self.value, self.fail = name, f"pkg.{name}", fail

        def load(self):
            if self.fail:
                raise ImportError("no module named pkg")
            loaded.append(self.name)

    monkeypatch.setattr(md, "entry_points", lambda group: [Entry("good", False)] if group == "phalanx.plugins" else [])
    sc.load_entry_point_plugins()
    assert loaded == ["good"]

    monkeypatch.setattr(md, "entry_points", lambda group: [Entry("broken", True)])
    with pytest.raises(sc.ScenarioError, match=r"entry point 'broken' \(pkg.broken\) failed to load: ImportError"):
        sc.load_entry_point_plugins()
