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

import torch  # noqa: E402

from phalanx.range.runner import build  # noqa: E402
from phalanx.range.scenario import Scenario, check_plugins  # noqa: E402
from phalanx.train.local import choose_strategy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SEED, TASKS, Task  # noqa: E402


def scenario(task: Task, strategy: str = "auto", chunk_size: int = 0) -> dict:
    return {
        "name": f"flower-compare-{task.name}",
        "seed": SEED,
        "rounds": task.rounds,
        "device": "cpu",
        "data": {"dataset": "fashion_mnist", "partition": "iid", "nodes": task.nodes},
        "model": task.model,
        "train": {"epochs": task.epochs, "batch_size": task.batch_size, "lr": task.lr,
                  "strategy": strategy, "chunk_size": chunk_size},
        "topology": {"name": "star", "participation": task.participation, "weighting": "samples"},
        "aggregator": "mean",
        "eval": {"every": 100_000},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--strategy", choices=["auto", "loop", "vmap", "chunked"], default="auto")
    parser.add_argument("--chunk-size", type=int, default=0)
    args = parser.parse_args()
    task = TASKS[args.task]
    t_import = time.perf_counter()

    s = Scenario.model_validate(scenario(task, args.strategy, args.chunk_size))
    check_plugins(s)
    built = build(s)
    sim = built.simulation
    t_build = time.perf_counter()

    final = None
    for record in sim.run(s.rounds):
        if record.get("accuracy") is not None:
            final = record
    t_end = time.perf_counter()

    strategy = args.strategy
    if strategy == "auto":
        strategy = f"auto->{choose_strategy(sim.rows.device, sim.rows.shape[1], task.per_round)}"
    print(json.dumps({
        "system": "phalanx", "task": task.name, "accuracy": final["accuracy"],
        "strategy": strategy, "chunk_size": args.chunk_size, "threads": torch.get_num_threads(),
        "rounds_evaluated": 1 if final else 0,
        "phases_s": {"import": t_import - T0, "build": t_build - t_import,
                     "rounds": t_end - t_build,
                     "last_round_with_eval": final["wall_time_s"] if final else None},
    }))


if __name__ == "__main__":
    main()
