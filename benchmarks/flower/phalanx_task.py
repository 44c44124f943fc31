"""The Phalanx side: the task as a scenario, built and run by the phalanx engine.

The scenario is the task of :mod:`common` written as a scenario dict: Fashion-MNIST, IID
partition, a star whose server samples ``participation`` of the nodes each round (10 of 1,000
for ``lr``, all 100 for ``cnn``), sample-weighted mean (FedAvg), and ``eval.every`` larger than
the number of rounds so that only the last round is evaluated, on the full test set.

Prints one JSON object on its last line: the final test accuracy, the local-training strategy
used and the time of each phase (imports, ``build``, the rounds).

    python benchmarks/flower/phalanx_task.py --task lr|cnn [--strategy auto|loop|vmap|chunked]
                                              [--chunk-size N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import torch

from phalanx.range.runner import build
from phalanx.range.scenario import Scenario, TrainSpec, check_plugins
from phalanx.train import local
from phalanx.train.local import choose_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SEED, TASKS, Task


def scenario(task: Task, strategy: str = "auto", chunk_size: int = 0,
             workers: int | None = None) -> dict:
    train = {"epochs": task.epochs, "batch_size": task.batch_size, "lr": task.lr,
             "strategy": strategy, "chunk_size": chunk_size}
    if workers is not None:
        train["workers"] = workers
    return {
        "name": f"flower-compare-{task.name}",
        "seed": SEED,
        "rounds": task.rounds,
        "device": "cpu",
        "data": {"dataset": "fashion_mnist", "partition": "iid", "nodes": task.nodes},
        "model": task.model,
        "train": train,
        "topology": {"name": "star", "participation": task.participation, "weighting": "samples"},
        "aggregator": "mean",
        "eval": {"every": 100_000},
    }


def _train_with_workers(workers: int) -> None:
    """For a phalanx whose scenario has no ``train.workers`` yet: make the engine call
    ``train_nodes(..., workers=workers)`` (a benchmark-only patch)."""
    import inspect
    from functools import partial

    from phalanx.engine import simulation

    if "workers" not in inspect.signature(local.train_nodes).parameters:
        raise SystemExit("phalanx_task: this phalanx's train_nodes has no 'workers' parameter")
    simulation.train_nodes = partial(local.train_nodes, workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--strategy", choices=["auto", "loop", "vmap", "chunked"], default="auto")
    parser.add_argument("--chunk-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument("--workers", type=int, default=None,
                        help="train.workers: threads that train the loop strategy's nodes, one "
                             "intra-op thread each (0: the engine picks; default: the scenario's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workers_in_scenario = "workers" in TrainSpec.model_fields
    if args.workers is not None and not workers_in_scenario:
        _train_with_workers(args.workers)
    task = TASKS[args.task]
    t_import = time.perf_counter()

    s = Scenario.model_validate(scenario(task, args.strategy, args.chunk_size,
                                         args.workers if workers_in_scenario else None))
    check_plugins(s)
    built = build(s)
    sim = built.simulation
    t_build = time.perf_counter()

    final, round_s = None, []
    for record in sim.run(s.rounds):
        round_s.append(round(record["wall_time_s"], 3))
        if record.get("accuracy") is not None:
            final = record
    t_end = time.perf_counter()

    strategy = args.strategy
    if strategy == "auto":
        strategy = f"auto->{choose_strategy(sim.rows.device, sim.rows.shape[1], task.per_round)}"
    workers = args.workers
    if not strategy.endswith("loop"):
        workers = None  # only the loop strategy has workers
    elif workers_in_scenario:
        workers = s.train.workers
        if workers == 0 and hasattr(local, "choose_workers"):
            picked = local.choose_workers(sim.rows.device, sim.rows.shape[1], task.per_round)
            workers = f"auto->{picked}"
    print(json.dumps({
        "system": "phalanx", "task": task.name, "accuracy": final["accuracy"],
        "strategy": strategy, "chunk_size": args.chunk_size, "threads": torch.get_num_threads(),
        "workers": workers,
        "rounds_evaluated": 1 if final else 0,
        "phases_s": {"import": t_import - T0, "build": t_build - t_import,
                     "rounds": t_end - t_build,
                     "last_round_with_eval": final["wall_time_s"] if final else None},
        "round_s": round_s,
    }))


if __name__ == "__main__":
    main()
