"""What writing the ledger costs a run: a default-grid cell, and a run of the default study.

Each setting runs the same scenario three ways, interleaved and repeated (the median is kept):
the ledger off; on with hashes only (``keep_updates: false``, what a grid would use); on with
every update kept for replay (the default for runs). Reported per run: the rounds' time (the
engine's own ``wall_time_s``, which includes the hooks and each round's checkpoint), the set-up
(registrations and dataset commitments) and the close (last checkpoint and the trace for the
report), and the disk the ledger and its kept bytes take.

    .venv/bin/python benchmarks/ledger_overhead.py                 # grid cells (star and gossip)
    .venv/bin/python benchmarks/ledger_overhead.py --study         # also the default study's runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from phalanx.range import recording
from phalanx.range.grid import default_grid_path, load_grid
from phalanx.range.runner import build
from phalanx.range.scenario import load_study

MODES = {"off": {"enabled": False}, "hashes": {"enabled": True, "keep_updates": False},
         "kept": {"enabled": True, "keep_updates": True}}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(scenario, mode: str, folder: Path) -> dict:
    ledger = {**scenario.ledger.model_dump(), **MODES[mode]}
    scenario = scenario.model_copy(update={"ledger": type(scenario.ledger).model_validate(ledger)})
    built = build(scenario)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    recorder = recording.attach(built, folder)
    setup = time.perf_counter() - t0
    records = list(built.simulation.run(scenario.rounds))
    t1 = time.perf_counter()
    if recorder is not None:
        recording.finish(recorder, built, folder)
    close = time.perf_counter() - t1
    rounds = sum(r["wall_time_s"] for r in records)
    return {"rounds_s": rounds, "per_round_s": rounds / len(records), "setup_s": setup, "close_s": close,
            "total_s": setup + rounds + close, "bytes": _size(folder)}


def compare(label: str, scenario, repeats: int, work: Path) -> dict:
    runs = {m: [] for m in MODES}
    for _ in range(repeats):
        for mode in MODES:
            runs[mode].append(measure(scenario, mode, work / mode))
    out = {}
    for mode, results in runs.items():
        out[mode] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    base = out["off"]["total_s"]
    print(f"\n{label} ({scenario.rounds} rounds, {scenario.data.nodes} nodes, {repeats} repeats, medians)")
    heads = ("per round", "set-up", "close", "total", "overhead", "disk")
    print(f"{'ledger':<8} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, (10, 8, 8, 8, 9, 10), strict=True)))
    for mode, m in out.items():
        print(f"{mode:<8} {m['per_round_s'] * 1e3:>8.0f}ms {m['setup_s']:>7.2f}s {m['close_s']:>7.2f}s "
              f"{m['total_s']:>7.2f}s {100 * (m['total_s'] / base - 1):>8.1f}% {m['bytes'] / 1e6:>8.1f}MB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--study", action="store_true", help="also the default study's four runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ledger_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a grid cell runs (one process per core)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        grid = load_grid(default_grid_path(), {}, {"defenses": ["mean"], "attacks": ["none"]})
        for cell in grid.cells:
            if cell.seed == 0:
                results[f"grid cell {cell.label}"] = compare(f"default grid: {cell.label}", cell.scenario,
                                                             args.repeats, Path(tmp))
        if args.study:
            torch.set_num_threads(2)
            _, _, runs = load_study(None)
            for s in runs:
                results[f"study run {s.name}"] = compare(f"default study: {s.name}", s, 1, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
