"""The Flower side: the task in Flower 1.42's simulation engine (``flwr.simulation.run_simulation``).

Runs with the Flower virtual environment's python (``benchmarks/.venv-flower``, which
``benchmarks/flower_compare.py`` creates), where phalanx is installed too so that the data,
partition and model come from the same code as on the other sides (:mod:`common`).

``--client-cpus N`` sets the Ray backend's ``client_resources`` to ``num_cpus=N`` (one actor per
N CPUs); without it Flower's default resources apply (2 CPUs per client).

Prints one JSON object on its last line: the final test accuracy and the time of each phase.

    benchmarks/.venv-flower/bin/python benchmarks/flower/flower_task.py --task lr|cnn [--client-cpus N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Ray actors are started by the driver's raylet and inherit its environment: this lets them
# import flower_app and common by name.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)

import common
import flower_app
import flwr
from flwr.simulation import run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(common.TASKS), required=True)
    parser.add_argument("--client-cpus", type=float, default=None,
                        help="num_cpus per ClientApp (Ray client_resources); default: Flower's")
    args = parser.parse_args()
    task = common.TASKS[args.task]
    t_import = time.perf_counter()

    backend_config = None
    if args.client_cpus is not None:
        backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}}
    run_simulation(server_app=flower_app.server_app(task), client_app=flower_app.client_app,
                   num_supernodes=task.nodes, backend_config=backend_config)
    t_end = time.perf_counter()

    if "accuracy" not in flower_app.RESULT:
        raise SystemExit("flower_task: the simulation ended without a final evaluation")
    print(json.dumps({
        "system": "flower", "task": task.name, "accuracy": flower_app.RESULT["accuracy"],
        "flwr": flwr.__version__, "client_cpus": args.client_cpus or "default",
        "phases_s": {"import": t_import - T0, "simulation": t_end - t_import},
    }))


if __name__ == "__main__":
    main()
