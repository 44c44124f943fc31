"""The hand-written reference: FedAvg as a plain PyTorch loop, one process, no framework.

Each round, every sampled client gets its own copy of the global ``nn.Module``, trains it with
``torch.optim.SGD`` on its shard (:func:`common.train_local`), and the server replaces the
global parameters with the clients' sample-weighted mean. The clients of a round are the ones
the phalanx star samples (same seed), the data, partition, model and initial weights are the
ones every side uses (:mod:`common`).

Prints one JSON object on its last line: the final test accuracy and the time of each phase.

    python benchmarks/flower/handloop_task.py --task lr|cnn
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(common.TASKS), required=True)
    args = parser.parse_args()
    task = common.TASKS[args.task]
    t_import = time.perf_counter()

    dataset, parts = common.load(task.nodes)
    x, y = dataset.x_train, dataset.y_train
    global_model = common.make_model(task, dataset)
    t_load = time.perf_counter()

    round_s = []
    for r in range(1, task.rounds + 1):
        t_round = time.perf_counter()
        sums = [torch.zeros_like(p) for p in global_model.parameters()]
        total = 0
        for c in common.sample_clients(task, r):
            local = common.clone(global_model)
            n = common.train_local(local, x, y, parts[c], task, common.client_generator(task, r, c))
            with torch.no_grad():
                for acc, p in zip(sums, local.parameters(), strict=True):
                    acc.add_(p, alpha=float(n))
            total += n
        with torch.no_grad():
            for p, acc in zip(global_model.parameters(), sums, strict=True):
                p.copy_(acc / total)
        round_s.append(round(time.perf_counter() - t_round, 3))
    t_train = time.perf_counter()

    acc = common.accuracy(global_model, dataset.x_test, dataset.y_test)
    t_end = time.perf_counter()
    print(json.dumps({
        "system": "hand loop", "task": task.name, "accuracy": acc,
        "threads": torch.get_num_threads(),
        "phases_s": {"import": t_import - T0, "load": t_load - t_import,
                     "rounds": t_train - t_load, "evaluate": t_end - t_train},
        "round_s": round_s,
    }))


if __name__ == "__main__":
    main()
