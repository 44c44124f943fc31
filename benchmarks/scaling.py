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

- **Host memory per node.** Each of star and gossip (random 8-regular), with a population of
  1,000 and of ``--population`` nodes and ``--per-round`` participants, runs 2 rounds in a fresh
  process that reports its peak resident memory, and the same process's memory once torch, the
  data and the model are loaded (the base). The constant per node is the slope between the two
  populations, set beside what the engine keeps per node by design (gossip: one model, d float32;
  star: no model, only the node's index row and counters).

    python benchmarks/scaling.py [--nodes 100] [--rounds 4] [--population 10000] [--per-round 100]
        [--skip-ray] [--skip-population] [--skip-memory] [--out benchmarks/results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
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


def probe(topology: str, population: int, per_round: int, model: str) -> dict:
    """Run in a fresh process: 2 rounds; the base and peak resident memory (GiB)."""
    config = scenario(rounds=2, model=model, data={"nodes": population, "train_samples": None},
                      topology={"name": topology, "participation": per_round / population})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(config))
        built = build(load_study(path)[2][0])
    base = current_host_gib()
    t0 = time.perf_counter()
    for r in (1, 2):
        built.simulation.step(r)
    return {"topology": topology, "population": population, "base_gib": base,
            "peak_gib": peak_host_gib(), "rounds_s": time.perf_counter() - t0,
            "dim": int(built.simulation.rows.shape[1])}


def current_host_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def memory_curve(populations: list[int], per_round: int, model: str) -> dict:
    """Peak host memory per topology and population, each in its own process; bytes per node."""
    out: dict = {}
    for topology in ("star", "gossip"):
        rows = []
        for population in populations:
            cmd = [sys.executable, __file__, "--probe", topology, str(population), str(per_round), model]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                                   .strip().splitlines()[-1]))
        (a, b), d = rows, rows[0]["dim"]
        per_node = (b["peak_gib"] - a["peak_gib"]) * 2**30 / (b["population"] - a["population"])
        out[topology] = {"runs": rows, "bytes_per_node": per_node, "model_bytes": 4 * d,
                         "per_node_over_model": per_node / (4 * d)}
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
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--probe", nargs=4, metavar=("TOPOLOGY", "POPULATION", "PER_ROUND", "MODEL"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        topology, population, per_round, model = args.probe
        print(json.dumps(probe(topology, int(population), int(per_round), model)))
        return
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
    if not args.skip_memory:
        curve = memory_curve([1000, args.population], args.per_round, args.model)
        print(f"Host memory per node ({args.model}, d = {curve['star']['runs'][0]['dim']:,}; peak over 2 "
              f"rounds, {args.per_round} a round, each run in its own process):")
        print(f"  {'topology':<8} {'1,000 nodes':>12} {f'{args.population:,} nodes':>14} {'per node':>10} "
              f"{'one model':>10} {'ratio':>6}")
        for topology, row in curve.items():
            a, b = row["runs"]
            print(f"  {topology:<8} {a['peak_gib']:>10.2f} G {b['peak_gib']:>12.2f} G "
                  f"{row['bytes_per_node'] / 1024:>8.1f} K {row['model_bytes'] / 1024:>8.1f} K "
                  f"{row['per_node_over_model']:>6.2f}")
        print(f"  base (torch, data, model loaded): {curve['star']['runs'][0]['base_gib']:.2f} GiB")
        result["memory"] = curve
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
