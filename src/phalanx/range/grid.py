"""Attack x defense x topology x seed grids: expand, validate, run two cells at a time, cache, sum up.

``phalanx grid FILE`` runs every combination of a few topologies, defenses and attacks, over a few
seeds, and reports each defense's accuracy under each attack and its **worst case** over the
attacks (the attack that leaves it the lowest accuracy), as ByzFL's benchmark does.

The grid file (YAML)::

    grid: default                 # the grid's name (default: the file's name)
    description: ...              # free text for the report
    base:                         # a full scenario, the same fields as a scenario file,
      rounds: 30                  #   shared by every cell
      data: {dataset: mnist5k, nodes: 20}
      adversary: {malicious: 4}   #   the real f for every attack but "none"
    topologies:                   # axis: a label and a partial scenario merged over base
      - star                      #   shorthand for {label: star, topology: {name: star}}
      - {label: gossip, topology: {name: gossip, graph: {name: random_regular, degree: 8}},
         declared_f: "20%"}
    defenses:                     # axis: a label and a partial scenario (the defense chain,
      - mean                      #   maybe declared_f); shorthand for {label: mean, aggregator: mean}
      - {label: "arc+nnm+tm", aggregator: [arc, nnm, trimmed_mean]}
    attacks:                      # axis: a label and the fields of the adversary section
      - none                      #   no attacker at all (malicious: 0)
      - sign_flip                 #   shorthand for {label: sign_flip, update_attack: sign_flip}
      - {label: "gauss std=10", update_attack: {name: gaussian, std: 10}}
    seeds: [0, 1]                 # every cell runs once per seed (it sets the scenario's seed)
    chosen: "arc+nnm+tm"          # the defense chosen before running: the done checks are its
    baseline: mean                # the defense label the done checks compare with (plain mean)
    criteria:                     # the done checks' thresholds, as fractions of accuracy
      worst_case_within: 0.05     #   (a) chosen's worst case >= baseline's clean accuracy - 0.05
      clean_cost_within: 0.02     #   (c) chosen's clean accuracy >= baseline's clean - 0.02
      collapse_at: 0.20           #   the baseline "collapses" under an attack at or below this

**Entries.** A label may be left out where one follows from the entry (a topology's name, the
defense chain's names joined with ``+``, the attack's name); labels are unique per axis. A
defense entry that names a single ``aggregator`` and no ``pre_aggregators`` has no
pre-aggregators, whatever the base says: each defense is the whole chain. An attack entry takes
only the adversary's fields (``update_attack``, ``data_attack``, ``malicious``); an attack the
entry does not name is off, and ``malicious`` comes from the base unless given. An entry with no
attack at all (``none``) is the *clean* case: it has no malicious node. A data-attack name
written as a shorthand (``label_flip``) becomes ``data_attack``.

**Cells.** A cell is one (topology, defense, attack, seed). Its scenario is ``base``, merged with
the topology entry, then the defense entry, then the attack entry (later wins, with
:func:`~phalanx.range.scenario.merge_scenario`: a plug-in given a new name drops the old one's
hyper-parameters), then the seed. Every cell is validated, plug-ins included, before any runs;
the first problem is one line naming the cell and the field.

**Command line.** ``--set KEY=VALUE`` changes any field of the file (values are YAML):
``base.rounds=5``; ``seeds=[0]``; ``chosen=krum``; ``criteria.collapse_at=0.1``; a whole axis,
``defenses=[mean, krum]``; or one entry, by label or index: ``defenses.krum.declared_f=2``,
``attacks.2.update_attack.std=5``. ``--only-topologies/--only-defenses/--only-attacks a,b``
keep only those labels (the done checks then need the baseline's clean cell still in, or are
skipped when the chosen defense is left out).

**Cache.** Each finished cell is written to ``OUT/cells/<key>.json`` (a temporary file renamed
into place, so a killed run never leaves half a file): the resolved configuration, its key, the
final metrics, every per-round record, the events and the wall time. The key is the SHA-256 of
the resolved configuration's canonical JSON without ``name`` and ``description`` (which change
no number), so a cell is found again whatever its labels. A later run skips every cell whose
file is there, parses, and holds the same configuration under the same key; anything else
(a corrupted or foreign file) is run again and overwritten. ``--fresh`` ignores the cache. The
key covers the configuration, not the code: after changing the engine, run with ``--fresh``.
A failed cell is not cached: it runs again next time.

**Running.** Cells run ``jobs`` at a time, each in its own process (``spawn``, one torch thread
each); with ``jobs=1`` they run one after another in this process. A failing cell records its
error and the grid goes on. Ctrl-C stops the workers; finished cells stay cached.

**Summary.** For each topology, defense and attack: the final accuracy (the honest mean: star,
the global model; gossip, the mean over honest live nodes) averaged over seeds, with its
minimum and maximum over seeds (the *spread*) and its sample standard deviation, and the final
minimum honest accuracy (``accuracy_min``, the worst honest node) averaged over seeds. Per
topology and defense, the worst case is the non-clean attack with the lowest mean accuracy
(the first in file order on a tie); the worst-case minimum honest accuracy is the lowest mean
``accuracy_min`` over the non-clean attacks. Both are marked incomplete while any of their
cells failed or has not run. The done checks (see ``criteria`` above) are computed per topology
for the ``chosen`` defense.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import signal
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import Field

from phalanx.range.scenario import (
    AdversarySpec, Scenario, ScenarioError, Strict, check_plugins, deep_merge,
    format_validation_error, import_plugins, load_entry_point_plugins, load_yaml, merge_scenario,
    with_plugin_defaults,
)

__all__ = [
    "AXES", "Cell", "Criteria", "Grid", "GridInterrupted", "Layout", "config_key", "load_grid",
    "read_cached", "run_cell", "run_grid", "summarise",
]

AXES = ("topologies", "defenses", "attacks")
CACHE_FORMAT = 1
CLEAN = "none"


# -- the file ------------------------------------------------------------------------------------
class Criteria(Strict):
    """The done checks' thresholds, as fractions of accuracy (0.05 = 5 points)."""

    worst_case_within: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05, description="(a) the chosen defense's worst case over attacks may be at most this "
                          "far below the baseline's accuracy with no attacker.")
    clean_cost_within: Annotated[float, Field(ge=0, le=1)] = Field(
        0.02, description="(c) with no attacker, the chosen defense may cost at most this much "
                          "accuracy against the baseline.")
    collapse_at: Annotated[float, Field(ge=0, le=1)] = Field(
        0.20, description="The baseline collapses under an attack when its accuracy is at most this.")


Label = Annotated[str, Field(min_length=1, max_length=60)]
Entries = Annotated[list[Any], Field(min_length=1)]


class GridFile(Strict):
    """The grid file's top level (entries are checked by :func:`_normalise`)."""

    grid: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        None, description="The grid's name (default: the file's name).")
    description: str = Field("", description="Free text shown in the report.")
    base: dict[str, Any] = Field({}, description="The scenario every cell starts from.")
    topologies: Entries = Field(["star"], description="Topology axis.")
    defenses: Entries = Field(["mean"], description="Defense axis.")
    attacks: Entries = Field([CLEAN], description="Attack axis.")
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)] = Field(
        [0], description="Seeds; every cell runs once per seed.")
    chosen: Label | None = Field(None, description="The defense the done checks are about.")
    baseline: Label = Field("mean", description="The defense label the done checks compare with.")
    criteria: Criteria = Criteria()


@dataclass(frozen=True)
class Entry:
    """One value of an axis: its label and the partial scenario it merges over the base."""

    label: str
    over: dict[str, Any]
    clean: bool = False  # attacks only: no attacker


@dataclass(frozen=True)
class Cell:
    topology: str
    defense: str
    attack: str
    seed: int
    clean: bool
    scenario: Scenario
    key: str

    @property
    def label(self) -> str:
        return cell_label(self.topology, self.defense, self.attack, self.seed)


def cell_label(topology: str, defense: str, attack: str, seed: int) -> str:
    return f"{topology} / {defense} / {attack} / seed {seed}"


@dataclass(frozen=True)
class Layout:
    """The grid's axes and checks, all that :func:`summarise` needs besides the results."""

    topologies: list[str]
    defenses: list[str]
    attacks: list[str]
    clean: list[str]  # the attack labels with no attacker
    seeds: list[int]
    chosen: str | None = None
    baseline: str = "mean"
    criteria: Criteria = field(default_factory=Criteria)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"topologies": self.topologies, "defenses": self.defenses, "attacks": self.attacks,
                "clean": self.clean, "seeds": self.seeds, "chosen": self.chosen,
                "baseline": self.baseline, "criteria": self.criteria.model_dump(),
                "notes": self.notes}


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    source: str
    layout: Layout
    cells: list[Cell]


def config_key(config: Scenario | Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved configuration, without name and description
    (and without the ledger section when the ledger is off: it changes nothing a cell computes)."""
    data = config.model_dump(mode="json") if isinstance(config, Scenario) else dict(config)
    data.pop("name", None)
    data.pop("description", None)
    if not (data.get("ledger") or {}).get("enabled", False):
        data.pop("ledger", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# -- loading and expanding -------------------------------------------------------------------------
def default_grid_path() -> Path:
    """The built-in default grid, ``grids/default.yaml`` beside this module."""
    from importlib import resources

    return Path(str(resources.files("phalanx.range").joinpath("grids/default.yaml")))


def load_grid(path: Path, overrides: Mapping[str, Any] | None = None,
              only: Mapping[str, Sequence[str]] | None = None) -> Grid:
    """Read a grid file, apply ``--set`` overrides and ``--only-*`` filters, validate every cell.

    ``overrides`` is :func:`~phalanx.range.scenario.parse_set`'s nested dict; ``only`` maps an
    axis (``"defenses"``) to the labels to keep. Any problem is a one-line :class:`ScenarioError`.
    """
    raw = load_yaml(path)
    load_entry_point_plugins()
    try:
        _import_base_plugins(raw)  # shorthand attack names may be user plug-ins
        raw = apply_overrides(raw, dict(overrides or {}))
        _import_base_plugins(raw)
        spec = GridFile.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ScenarioError(f"{path}: {_grid_error(e)}") from None
    except ScenarioError as e:
        raise ScenarioError(f"{path}: {e}") from None
    try:
        axes = {axis: _entries(axis, getattr(spec, axis)) for axis in AXES}
        axes, notes = _keep(axes, dict(only or {}), spec)
    except ScenarioError as e:
        raise ScenarioError(f"{path}: {e}") from None
    layout = Layout(
        topologies=[e.label for e in axes["topologies"]], defenses=[e.label for e in axes["defenses"]],
        attacks=[e.label for e in axes["attacks"]],
        clean=[e.label for e in axes["attacks"] if e.clean], seeds=list(spec.seeds),
        chosen=spec.chosen if spec.chosen in [e.label for e in axes["defenses"]] else None,
        baseline=spec.baseline, criteria=spec.criteria, notes=notes,
    )
    # a grid writes no ledger unless its base says how (e.g. ledger: {keep_updates: false})
    base = {"ledger": {"enabled": False}, **spec.base}
    cells = expand(base, axes, spec.seeds, str(path))
    return Grid(name=spec.grid or path.stem, description=spec.description, source=str(path),
                layout=layout, cells=cells)


def _import_base_plugins(raw: Mapping[str, Any]) -> None:
    base = raw.get("base")
    if isinstance(base, dict):
        import_plugins(_modules(base.get("plugins", [])))


def _modules(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _grid_error(error: pydantic.ValidationError) -> str:
    loc = [str(p) for p in error.errors(include_url=False)[0]["loc"]]
    model = Criteria if loc[:1] == ["criteria"] else GridFile
    return format_validation_error(error, allowed=sorted(model.model_fields))


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The file's fields with ``--set`` values applied (see the module docstring)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        if key == "base" and isinstance(value, dict) and isinstance(raw.get("base", {}), dict):
            raw["base"] = merge_scenario(raw.get("base") or {}, value)
        elif key == "criteria" and isinstance(value, dict) and isinstance(raw.get(key, {}), dict):
            raw[key] = deep_merge(raw.get(key) or {}, value)
        elif key in AXES and isinstance(value, dict):
            raw[key] = _override_entries(key, raw.get(key, GridFile.model_fields[key].default), value)
        else:
            raw[key] = value
    return raw


def _override_entries(axis: str, entries: Any, changes: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise ScenarioError(f"{axis}: expected a list of entries (got {entries!r})")
    entries = [_normalise(axis, e, i) for i, e in enumerate(entries)]
    for which, change in changes.items():
        labels = [e["label"] for e in entries]
        if which in labels:
            i = labels.index(which)
        elif str(which).isdigit() and int(which) < len(entries):
            i = int(which)
        else:
            raise ScenarioError(f"--set {axis}.{which}: no {axis[:-1]} labelled {which!r} and no "
                                f"index {which!r}; have: {', '.join(labels)}")
        if not isinstance(change, dict):
            entries[i] = _normalise(axis, change, i)
            continue
        label = change.get("label", entries[i]["label"])
        fields = {k: v for k, v in change.items() if k != "label"}
        old = {k: v for k, v in entries[i].items() if k != "label"}
        if axis == "attacks":
            merged = merge_scenario({"adversary": old}, {"adversary": fields})["adversary"]
        else:
            merged = merge_scenario(old, fields)
        entries[i] = {"label": label, **merged}
    return entries


def _normalise(axis: str, entry: Any, i: int) -> dict[str, Any]:
    """An entry as ``{label, **fields}``: shorthands expanded, the label derived if missing."""
    where = f"{axis}.{i}"
    if isinstance(entry, str) and entry.strip():
        name = entry.strip()
        if axis == "topologies":
            return {"label": name, "topology": {"name": name}}
        if axis == "defenses":
            return {"label": name, "aggregator": name}
        if name == CLEAN:
            return {"label": CLEAN}
        from phalanx.attacks import DATA_ATTACKS, UPDATE_ATTACKS

        slot = "data_attack" if name in DATA_ATTACKS and name not in UPDATE_ATTACKS else "update_attack"
        return {"label": name, slot: name}
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: expected a name or a mapping with a label (got {entry!r})")
    entry = dict(entry)
    label = entry.pop("label", None)
    if axis == "attacks":
        allowed = sorted(AdversarySpec.model_fields)
        unknown = sorted(set(entry) - set(allowed))
        if unknown:
            raise ScenarioError(f"{where}.{unknown[0]}: unknown key; an attack entry takes label, "
                                f"{', '.join(allowed)}")
    if label is None:
        label = _derived_label(axis, entry)
    if not isinstance(label, (str, int, float)) or not str(label).strip():
        raise ScenarioError(f"{where}.label: give each entry a label (got {label!r})")
    return {"label": str(label).strip(), **entry}


def _name(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"]
    return None


def _derived_label(axis: str, entry: dict[str, Any]) -> str | None:
    if axis == "topologies":
        return _name(entry.get("topology"))
    if axis == "attacks":
        return _name(entry.get("update_attack")) or _name(entry.get("data_attack")) or (
            CLEAN if not entry.get("malicious") else None)
    chain = entry.get("aggregator")
    chain = list(entry.get("pre_aggregators") or []) + (chain if isinstance(chain, list) else [chain])
    names = [_name(s) for s in chain if s is not None]
    return "+".join(names) if names and None not in names else None


def _entries(axis: str, raw: list[Any]) -> list[Entry]:
    out: list[Entry] = []
    for i, item in enumerate(raw):
        entry = _normalise(axis, item, i)
        label = entry.pop("label")
        if label in [e.label for e in out]:
            raise ScenarioError(f"{axis}.{i}.label: two {axis} are labelled {label!r}")
        if axis == "attacks":
            out.append(_attack(label, entry, f"{axis}.{i}"))
        elif axis == "defenses":
            out.append(Entry(label, _whole_chain(entry)))
        else:
            out.append(Entry(label, entry))
    return out


def _attack(label: str, fields: dict[str, Any], where: str) -> Entry:
    if fields.get("update_attack") is None and fields.get("data_attack") is None:
        if fields.get("malicious"):
            raise ScenarioError(f"{where}.malicious: an entry with no update_attack or data_attack "
                                f"is the clean case, with no malicious node (got {fields['malicious']!r})")
        return Entry(label, {"adversary": {"malicious": 0, "update_attack": None, "data_attack": None}},
                     clean=True)
    return Entry(label, {"adversary": {"update_attack": None, "data_attack": None, **fields}})


def _whole_chain(entry: dict[str, Any]) -> dict[str, Any]:
    """A defense naming one rule and no pre-aggregators has none, whatever the base says."""
    if ("aggregator" in entry and not isinstance(entry["aggregator"], list)
            and "pre_aggregators" not in entry):
        return {**entry, "pre_aggregators": []}
    return entry


def _keep(axes: dict[str, list[Entry]], only: Mapping[str, Sequence[str]], spec: GridFile
          ) -> tuple[dict[str, list[Entry]], list[str]]:
    """Apply ``--only-*``; check the chosen and baseline defenses and the clean attack."""
    notes: list[str] = []
    defenses = [e.label for e in axes["defenses"]]
    if spec.chosen is not None and spec.chosen not in defenses:
        raise ScenarioError(f"chosen: no defense is labelled {spec.chosen!r}; have: {', '.join(defenses)}")
    for axis, labels in only.items():
        if not labels:
            continue
        have = [e.label for e in axes[axis]]
        unknown = [label for label in labels if label not in have]
        if unknown:
            raise ScenarioError(f"--only-{axis}: no {axis[:-1]} labelled {unknown[0]!r}; "
                                f"have: {', '.join(have)}")
        axes[axis] = [e for e in axes[axis] if e.label in labels]
    if spec.chosen is not None and spec.chosen not in [e.label for e in axes["defenses"]]:
        notes.append(f"the chosen defense {spec.chosen!r} is left out by --only-defenses: "
                     "no done checks")
    elif spec.chosen is not None:
        if spec.baseline not in [e.label for e in axes["defenses"]]:
            raise ScenarioError(f"baseline: the done checks for {spec.chosen!r} compare with the "
                                f"clean {spec.baseline!r} cell, but no defense labelled "
                                f"{spec.baseline!r} is in the grid (add it, or --set chosen=null)")
        if not any(e.clean for e in axes["attacks"]):
            raise ScenarioError(f"attacks: the done checks for {spec.chosen!r} need the clean "
                                f"{spec.baseline!r} cell, but no attack entry is {CLEAN!r} (add "
                                "it, or --set chosen=null)")
    return axes, notes


def expand(base: dict[str, Any], axes: Mapping[str, list[Entry]], seeds: Sequence[int],
           source: str) -> list[Cell]:
    """Every (topology, defense, attack, seed), validated, in axis order (seeds innermost)."""
    cells = []
    for t in axes["topologies"]:
        for d in axes["defenses"]:
            for a in axes["attacks"]:
                data = merge_scenario(merge_scenario(merge_scenario(base, t.over), d.over), a.over)
                for seed in seeds:
                    label = cell_label(t.label, d.label, a.label, seed)
                    scenario = _validated({**data, "seed": seed, "name": label[:80]},
                                          f"{source}: cell {label!r}: ")
                    baseline = (a.over.get("adversary") or {}).get("malicious") == 0  # clean, measured
                    if not (a.clean or baseline) and scenario.adversary.malicious == 0 \
                            and scenario.adversary.sybils is None:
                        raise ScenarioError(
                            f"{source}: cell {label!r}: adversary.malicious: attack {a.label!r} "
                            "has no malicious node to run it (set base.adversary.malicious or the "
                            "attack's malicious)")
                    cells.append(Cell(t.label, d.label, a.label, seed, a.clean, scenario,
                                      config_key(scenario)))
    return cells


def _validated(data: dict[str, Any], where: str) -> Scenario:
    """The scenario of one cell, checked as ``phalanx run`` checks a run, with plug-in defaults."""
    try:
        import_plugins(_modules(data.get("plugins", [])))
        scenario = Scenario.model_validate(data)
        check_plugins(scenario)
        return with_plugin_defaults(scenario)
    except pydantic.ValidationError as e:
        raise ScenarioError(where + format_validation_error(e)) from None
    except ScenarioError as e:
        raise ScenarioError(where + str(e)) from None


# -- one cell --------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def read_cached(cells_dir: Path, key: str) -> dict[str, Any] | None:
    """The cached result of the cell ``key``, or ``None`` when absent, unreadable or not its own."""
    path = cells_dir / f"{key}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        if (result["format"] != CACHE_FORMAT or result["status"] != "ok"
                or result["config_sha256"] != key or config_key(result["config"]) != key
                or not isinstance(result["final"], dict) or not isinstance(result["records"], list)):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return result


def run_cell(config: dict[str, Any], cells_dir: str) -> dict[str, Any]:
    """Build and run one cell from its resolved configuration; cache it when it succeeds.

    Never raises for a failing cell: the result then has ``status: failed`` and ``error``.
    """
    from phalanx.range import recording
    from phalanx.range.runner import build

    key = config_key(config)
    t0 = time.perf_counter()
    try:
        scenario = Scenario.model_validate(config)
        import_plugins(scenario.plugins)
        built = build(scenario)
        try:
            recorder = recording.attach(built, Path(cells_dir) / key)
            records = list(built.simulation.run(scenario.rounds))
            ledger = recording.finish(recorder, built, Path(cells_dir) / key) if recorder is not None else None
        finally:
            for sim in getattr(built.simulation, "groups", [built.simulation]):  # a diverse cell: one per group
                if sim.trainer is not None:
                    sim.trainer.close()
    except Exception as e:  # noqa: BLE001  (a cell may fail in any way; the grid goes on)
        text = f"{type(e).__name__}: {e}".strip().splitlines()
        return {"status": "failed", "config_sha256": key, "error": text[0] if text else repr(e),
                "wall_time_s": round(time.perf_counter() - t0, 3)}
    import phalanx

    result = {
        "format": CACHE_FORMAT, "status": "ok", "config_sha256": key, "config": config,
        "final": final_record(records), "records": records,
        "exposed_per_round": _mean_of(records, "exposed"),
        "events": built.events + built.simulation.events, "malicious": built.malicious,
        "defense": _defense_name(built.simulation.aggregator),
        "wall_time_s": round(time.perf_counter() - t0, 3), "phalanx": phalanx.__version__,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "ledger": ledger,
    }
    if getattr(built.simulation, "guard", None) is not None:  # detection, decisions, a swarm's accounts
        result["guard"] = built.simulation.guard.summary()
    _write_atomic(Path(cells_dir) / f"{key}.json", result)
    return result


def _mean_of(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over the records that have it (``None`` when none has)."""
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def _defense_name(aggregator: Any) -> str:
    name = getattr(aggregator, "name", None)
    return str(name()) if callable(name) else type(aggregator).__name__


def final_record(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last record with an accuracy (the last record if none has one)."""
    scored = [r for r in records if r.get("accuracy") is not None]
    return dict(scored[-1] if scored else (records[-1] if records else {}))


def _init_worker() -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the workers
    torch.set_num_threads(1)
    load_entry_point_plugins()


# -- running ---------------------------------------------------------------------------------------
class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during a grid: ``done`` of ``total`` cells are cached."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"interrupted: {done} of {total} cells are cached; run again to resume")


def default_jobs() -> int:
    """One job per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def execute(todo: Sequence[Cell], cells_dir: Path, jobs: int) -> Iterator[tuple[Cell, dict]]:
    """Run ``todo``, yielding (cell, result) as cells finish; ``jobs`` processes at a time."""
    if jobs <= 1 or len(todo) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for cell in todo:
                yield cell, run_cell(cell.scenario.model_dump(mode="json"), str(cells_dir))
        finally:
            torch.set_num_threads(threads)
        return
    pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), initializer=_init_worker,
                                  mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_cell, c.scenario.model_dump(mode="json"), str(cells_dir)): c
                   for c in todo}
        for future in cf.as_completed(futures):
            cell = futures[future]
            try:
                result = future.result()
            except Exception as e:  # noqa: BLE001  (the worker itself died: killed, out of memory)
                result = {"status": "failed", "config_sha256": cell.key,
                          "error": f"worker failed: {type(e).__name__}: {e}".splitlines()[0]}
            yield cell, result
    except BaseException:
        # our own workers, by their process ids: a running cell is lost, finished ones are cached
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_grid(grid: Grid, out_dir: Path, jobs: int | None = None, fresh: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run every cell not already cached, write ``grid.json``, ``grid.md`` and ``report.html``.

    Returns the grid summary (what ``grid.json`` holds). Raises :class:`GridInterrupted` on
    Ctrl-C, after the finished cells are cached.
    """
    from phalanx.range.grid_report import GridProgress, write_outputs

    out_dir = Path(out_dir)
    cells_dir = out_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    for stale in cells_dir.glob(".*.tmp"):  # left by a run that was killed mid-write
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    unique = {c.key: c for c in grid.cells}
    results: dict[str, dict] = {}
    cached: set[str] = set()
    stale = 0
    for key in unique:
        hit = None if fresh else read_cached(cells_dir, key)
        if hit is not None:
            results[key] = hit
            cached.add(key)
        elif (cells_dir / f"{key}.json").exists() and not fresh:
            stale += 1
    todo = [c for k, c in unique.items() if k not in results]
    jobs = default_jobs() if jobs is None else max(1, jobs)
    with GridProgress(len(todo), len(cached), enabled=progress) as bar:
        try:
            with contextlib.closing(execute(todo, cells_dir, jobs)) as finished:
                for cell, result in finished:
                    results[cell.key] = result
                    bar.advance(cell, result)
        except KeyboardInterrupt:
            done = sum(1 for r in results.values() if r.get("status") == "ok")
            raise GridInterrupted(done, len(unique)) from None
    summary = grid_summary(grid, results, cached, stale, time.perf_counter() - t0)
    write_outputs(out_dir, summary)
    return summary


# -- summing up ----------------------------------------------------------------------------------
def cell_row(cell: Cell, result: Mapping[str, Any] | None, cached: bool) -> dict[str, Any]:
    """What grid.json keeps of a cell: labels, the settings that matter, final metrics, status."""
    s = cell.scenario
    result = result or {"status": "not run"}
    chain = [p.name for p in s.pre_aggregators] + [s.aggregator.name]
    return {
        "topology": cell.topology, "defense": cell.defense, "attack": cell.attack, "seed": cell.seed,
        "clean": cell.clean, "label": cell.label, "config_sha256": cell.key,
        "status": result.get("status"), "cached": cached, "error": result.get("error"),
        "final": result.get("final") or {}, "wall_time_s": result.get("wall_time_s"),
        "exposed_per_round": result.get("exposed_per_round"),
        "rounds": s.rounds, "nodes": s.data.nodes, "network": s.topology.name,
        "chain": chain, "declared_f": s.declared_f, "real_f": s.adversary.malicious,
        "update_attack": s.adversary.update_attack.as_dict() if s.adversary.update_attack else None,
        "data_attack": s.adversary.data_attack.as_dict() if s.adversary.data_attack else None,
    }


def grid_summary(grid: Grid, results: Mapping[str, dict], cached: set[str], stale: int,
                 wall: float) -> dict[str, Any]:
    from phalanx.range.runner import manifest

    rows = [cell_row(c, results.get(c.key), c.key in cached) for c in grid.cells]
    man = manifest([], grid.cells[0].scenario.device if grid.cells else "cpu")
    man.update(config_sha256={c.label: c.key for c in grid.cells}, seeds=grid.layout.seeds,
               wall_time_s=round(wall, 3))
    return {
        "grid": grid.name, "description": grid.description, "source": grid.source,
        "layout": grid.layout.as_dict(),
        "counts": {"cells": len(rows), "unique": len({c.key for c in grid.cells}),
                   "cached": len(cached), "ran": len(results) - len(cached),
                   "failed": sum(r["status"] == "failed" for r in rows), "stale_cache": stale},
        "base": grid.cells[0].scenario.model_dump(mode="json") if grid.cells else {},
        "summary": summarise(grid.layout, rows),
        "cells": rows, "manifest": man,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def seed_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy over a group of seeds: mean, min, max, sample std; mean and min of accuracy_min."""
    ok = [r for r in rows if r.get("status") == "ok"]
    acc = [a for a in (_number((r.get("final") or {}).get("accuracy")) for r in ok) if a is not None]
    low = [a for a in (_number((r.get("final") or {}).get("accuracy_min")) for r in ok) if a is not None]
    return {
        "seeds": len(rows), "done": len(acc), "complete": len(acc) == len(rows) and len(rows) > 0,
        "accuracy": statistics.fmean(acc) if acc else None,
        "accuracy_lo": min(acc) if acc else None, "accuracy_hi": max(acc) if acc else None,
        "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
        "accuracy_min": statistics.fmean(low) if low else None,
        "accuracy_min_lo": min(low) if low else None,
    }


def summarise(layout: Layout, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per topology: every defense's stats per attack, its worst case, the done checks, collapses.

    ``rows`` are :func:`cell_row` dicts (only ``topology``, ``defense``, ``attack``, ``status``
    and ``final`` are read), so hand-made results can be summed up as well.
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["topology"], r["defense"], r["attack"]), []).append(r)
    attacked = [a for a in layout.attacks if a not in layout.clean]
    clean = layout.clean[0] if layout.clean else None
    out = []
    for t in layout.topologies:
        defenses = []
        for d in layout.defenses:
            stats = {a: seed_stats(groups.get((t, d, a), [])) for a in layout.attacks}
            exposed = [e for a in attacked for r in groups.get((t, d, a), [])  # attackers present
                       if (e := _number(r.get("exposed_per_round"))) is not None]
            defenses.append({"label": d, "attacks": stats, "clean": stats[clean] if clean else None,
                             "exposed": statistics.fmean(exposed) if exposed else None,
                             **worst_case(stats, attacked)})
        by_label = {e["label"]: e for e in defenses}
        out.append({
            "label": t, "defenses": defenses,
            "checks": done_checks(layout, by_label, clean),
            "collapse": collapses(layout, by_label.get(layout.baseline), attacked),
        })
    return {"clean_attack": clean, "attacked": attacked, "topologies": out}


def worst_case(stats: Mapping[str, Mapping[str, Any]], attacked: Sequence[str]) -> dict[str, Any]:
    """The non-clean attack with the lowest mean accuracy, and the lowest mean accuracy_min."""
    scored = [a for a in attacked if stats[a]["accuracy"] is not None]
    worst = min(scored, key=lambda a: stats[a]["accuracy"]) if scored else None
    lows = [a for a in attacked if stats[a]["accuracy_min"] is not None]
    low = min(lows, key=lambda a: stats[a]["accuracy_min"]) if lows else None
    complete = all(stats[a]["complete"] for a in attacked) and bool(attacked)
    return {
        "worst": {"attack": worst, **stats[worst]} if worst else None,
        "worst_min_honest": ({"attack": low, "accuracy_min": stats[low]["accuracy_min"]}
                             if low else None),
        "worst_complete": complete,
    }


def _within(gap: float | None, limit: float) -> bool | None:
    return None if gap is None else gap <= limit + 1e-9


def done_checks(layout: Layout, defenses: Mapping[str, Mapping[str, Any]], clean: str | None
                ) -> dict[str, Any] | None:
    """(a) worst case within ``worst_case_within`` of the baseline's clean accuracy; (b) the
    worst-case minimum honest accuracy beside it; (c) clean cost within ``clean_cost_within``.

    ``passed`` is ``None`` (unknown) while a cell they rest on is missing or failed."""
    if layout.chosen is None or layout.chosen not in defenses or clean is None:
        return None
    crit = layout.criteria
    chosen = defenses[layout.chosen]
    base = defenses.get(layout.baseline)
    ref = base["attacks"][clean]["accuracy"] if base else None
    worst = chosen["worst"]
    worst_acc = worst["accuracy"] if worst and chosen["worst_complete"] else None
    own_clean = chosen["attacks"][clean]["accuracy"]
    gap = None if ref is None or worst_acc is None else ref - worst_acc
    cost = None if ref is None or own_clean is None else ref - own_clean
    a, c = _within(gap, crit.worst_case_within), _within(cost, crit.clean_cost_within)
    low = chosen["worst_min_honest"]
    return {
        "defense": layout.chosen, "baseline": layout.baseline, "baseline_clean": ref,
        "worst_case": {"attack": worst["attack"] if worst else None, "accuracy": worst_acc,
                       "gap": gap, "limit": crit.worst_case_within, "passed": a},
        "min_honest": {"attack": low["attack"] if low else None,
                       "accuracy_min": low["accuracy_min"] if low else None},
        "clean_cost": {"accuracy": own_clean, "cost": cost, "limit": crit.clean_cost_within,
                       "passed": c},
        "passed": None if a is None or c is None else (a and c),
    }


def collapses(layout: Layout, baseline: Mapping[str, Any] | None, attacked: Sequence[str]
              ) -> list[dict[str, Any]]:
    """Per non-clean attack: whether the baseline's mean accuracy is at most ``collapse_at``."""
    if baseline is None:
        return []
    out = []
    for a in attacked:
        acc = baseline["attacks"][a]["accuracy"]
        out.append({"attack": a, "accuracy": acc,
                    "collapsed": None if acc is None else acc <= layout.criteria.collapse_at + 1e-9})
    return out
