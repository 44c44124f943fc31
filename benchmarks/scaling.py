"""Scaling the engine: Ray workers against the local engine, and large populations.

Two measurements (issue 8), each against a reference timed in the same run:

- **Ray workers.** One star scenario (Fashion-MNIST, the CNN, ``--nodes`` nodes all taking part,
  ``--rounds`` rounds of one local epoch) on the local engine and on ``engine: ray`` with 1 and 2
  workers. Per round: the wall time, and for Ray the share that is communication (the round's
  wall time minus its slowest actor's training: planning, shipping rows and plans out and back,
  Ray's scheduling). The reference is the local engine on the same scenario; the ratio is its
  round time over Ray's. The first round (actors starting, data shipped) is left out.
- **A large population.** ``--population`` nodes (10,000 by default) share Fashion-MNIST (6
  samples each, some empty after a Dirichlet split), ``--per-round`` of them take part in each
  round: wall time per round, peak host memory (``ru_maxrss``), and device memory when on CUDA.
  The reference is the same round with the population cut to the participants alone: what the
  population itself costs.

    python benchmarks/scaling.py [--nodes 100] [--rounds 4] [--population 10000] [--per-round 100]
        [--skip-ray] [--skip-population] [--out benchmarks/results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import phalanx  # noqa: F401  (before torch: huge pages for torch's large allocations)
import torch
import yaml

from phalanx.range.runner import build
from phalanx.range.scenario import load_study


def scenario(**fields) -> dict:
    base = {"rounds": 4, "model": "cnn", "ledger": {"enabled": False},
            "data": {"dataset": "fashion_mnist", "nodes": 100, "partition": {"name": "dirichlet", "alpha": 1.0},
                     "train_samples": 20000, "test_samples": 500},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.05}, "eval": {"every": 1000}}
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def run(config: dict) -> dict:
    """Round wall times of one scenario (the first round apart), and the Ray timings if any."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(config))
        built = build(load_study(path)[2][0])
    sim = built.simulation
    times = []
    try:
        for r in range(1, config["rounds"] + 1):
            t0 = time.perf_counter()
            sim.step(r)
            if sim.rows.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        ray_timings = list(sim.trainer.timings) if sim.trainer is not None else []
    finally:
        if sim.trainer is not None:
            sim.trainer.close()
    steady = times[1:] or times
    out = {"round_s": statistics.median(steady), "first_round_s": times[0], "rounds": len(times)}
    if ray_timings:
        steady_ray = ray_timings[1:] or ray_timings
        wall = statistics.median(t["wall_s"] for t in steady_ray)
        train = statistics.median(t["train_s"] for t in steady_ray)
        out.update({"ray_wall_s": wall, "ray_train_s": train, "communication_s": wall - train})
    return out


def peak_host_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--population", type=int, default=10_000)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-population", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scaling.json"))
    args = ap.parse_args()
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "settings": vars(args)}
    if not args.skip_ray:
        base = scenario(rounds=args.rounds, model=args.model, data={"nodes": args.nodes})
        local = run(base)
        rows = {"local": local}
        for workers in (1, 2):
            rows[f"ray/{workers}"] = run({**base, "engine": "ray", "ray": {"workers": workers}})
        print(f"Ray workers: {args.nodes} nodes, {args.model}, all taking part; median of "
              f"{args.rounds - 1} rounds after the first")
        print(f"  {'engine':<8} {'round s':>8} {'vs local':>9} {'training s':>11} {'communication s':>16}")
        for name, row in rows.items():
            ratio = local["round_s"] / row["round_s"]
            print(f"  {name:<8} {row['round_s']:>8.2f} {ratio:>8.2f}x "
                  f"{row.get('ray_train_s', float('nan')):>11.2f} {row.get('communication_s', float('nan')):>16.3f}")
        result["ray"] = rows
    if not args.skip_population:
        big = scenario(rounds=args.rounds, model=args.model,
                       data={"nodes": args.population, "train_samples": None},
                       topology={"participation": args.per_round / args.population})
        small = scenario(rounds=args.rounds, model=args.model,
                         data={"nodes": args.per_round, "train_samples": 6 * args.per_round})
        before = peak_host_gib()
        reference = run(small)
        population = run(big)
        host = peak_host_gib()
        device = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        print(f"Population: {args.population:,} nodes, {args.per_round} a round ({args.model}): round "
              f"{population['round_s']:.2f} s against {reference['round_s']:.2f} s for the "
              f"{args.per_round} participants alone ({reference['round_s'] / population['round_s']:.2f}x); "
              f"peak host memory {host:.2f} GiB (process before the runs: {before:.2f} GiB)"
              + (f", device {device:.2f} GiB" if device is not None else ""))
        result["population"] = {"population": population, "participants_alone": reference,
                                "peak_host_gib": host, "host_before_gib": before, "peak_device_gib": device}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
