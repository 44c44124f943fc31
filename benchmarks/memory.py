"""Peak host memory of 1,000 CNN nodes on Fashion-MNIST (issue 2 target: under 4 GB).

Each configuration runs in its own process; the figure is that process's peak resident set
(``ru_maxrss``) after building the network and running two rounds. Reference: the *floor*, the
bytes that any simulator must hold (the training set as float32, plus one parameter vector per
node), reported beside the peak as a ratio; and the hand-written loop's peak (one ``nn.Module``
and ``torch.optim.SGD`` per node), the way a person writes it without a framework.

    python benchmarks/memory.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, torch
import torch.nn.functional as F
mode, n = sys.argv[1], int(sys.argv[2])
from phalanx.data import DATASETS, PARTITIONERS
from phalanx.models import MODELS
ds = DATASETS.build("fashion_mnist")
if mode == "hand":
    parts = PARTITIONERS.build("iid", ds.y_train, n, torch.Generator().manual_seed(0))
    models = [MODELS.build("cnn", ds.input_shape, 10) for _ in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    for _ in range(2):
        for m, o, p in zip(models, opts, parts):
            for b in p.split(32):
                o.zero_grad(); F.cross_entropy(m(ds.x_train[b]), ds.y_train[b]).backward(); o.step()
        with torch.no_grad():
            avg = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()) for m in models]).mean(0)
            for m in models:
                torch.nn.utils.vector_to_parameters(avg, m.parameters())
    d = avg.numel()
else:
    from phalanx.range.scenario import Scenario
    from phalanx.range.runner import build
    topo = {"name": "gossip", "graph": {"name": "random_regular", "degree": 8}} if mode == "gossip" else {"name": "star"}
    s = Scenario.model_validate({"rounds": 2, "data": {"dataset": "fashion_mnist", "partition": "iid",
        "nodes": n, "test_samples": 1000}, "model": "cnn", "topology": topo, "device": "cpu"})
    sim = build(s).simulation
    list(sim.run(2))
    d = sim.rows.shape[1]
floor = ds.x_train.numel() * 4 + n * d * 4
print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "floor_bytes": floor, "dim": d}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = ap.parse_args()
    # baseline: the interpreter with torch imported and the data set loaded, nothing else
    base = subprocess.run([sys.executable, "-c", "import resource, torch; from phalanx.data import DATASETS;"
                           "DATASETS.build('fashion_mnist');"
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024)"],
                          capture_output=True, text=True, check=True)
    results = {"baseline_bytes": int(base.stdout.strip())}
    print(f"peak host memory, {args.nodes} CNN nodes on Fashion-MNIST, 2 rounds "
          f"(process baseline with torch and the data loaded: {results['baseline_bytes'] / 2**30:.2f} GiB)")
    print(f"{'system':<16} {'peak GiB':>9} {'floor GiB':>10} {'peak/floor':>11}  target < 4 GiB")
    for mode in ("star", "gossip", "hand"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.nodes)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode:<16} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[mode] = r
        name = {"star": "phalanx star", "gossip": "phalanx gossip", "hand": "hand loop"}[mode]
        peak, floor = r["peak_bytes"] / 2**30, r["floor_bytes"] / 2**30
        verdict = "" if mode == "hand" else ("PASS" if peak < 4 else "FAIL")
        print(f"{name:<16} {peak:>9.2f} {floor:>10.2f} {peak / floor:>10.2f}x  {verdict}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    main()
