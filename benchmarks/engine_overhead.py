"""Engine overhead: node updates per second of the engine against a tight hand-written loop.

A *node update* is one node taking one local SGD step on a batch of 32 and sending it for
aggregation. One round of each system does this for every node, then averages (FedAvg):

- **reference** (the "tight hand-written loop"): one ``nn.Module`` and one ``torch.optim.SGD``
  per node, ``zero_grad / forward / backward / step`` in a Python loop, then
  ``parameters_to_vector`` of every node, the mean, and ``vector_to_parameters`` back: what a
  person writes by hand with plain PyTorch, with no framework at all.
- **engine**: ``Simulation.step`` of a star network with full participation and the ``mean`` rule,
  with the strategy ``auto`` picks, and each explicit strategy beside it to show the choice.

- **arithmetic limit** (issue 8): one model taking one SGD step on one batch as large as all the
  nodes' batches together (``n x 32``): the same arithmetic with shared weights, the most the
  hardware does with it. No per-node engine can beat it; the ratio says how close one comes.

All run the same arithmetic on the same data in the same process, interleaved (reference,
engine, reference, ...); each sample repeats rounds until it lasts at least 0.25 s, and the median
of ``--reps`` samples is reported. Targets: engine throughput at least 90% of the reference on
CPU and at least 5x at 1,000 nodes on a GPU (issue 2); on a GPU, at least 50% of the arithmetic
limit at 1,000 nodes (issue 8).

    python benchmarks/engine_overhead.py [--nodes 10,100,1000] [--models mlp,cnn] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import phalanx  # noqa: F401  (before torch: its huge-page setting reaches torch's allocator, for all sides)
import torch
import torch.nn.functional as F

from phalanx.aggregate import get as get_aggregator
from phalanx.engine import FaultSchedule, Simulation
from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.network import Star
from phalanx.train import SGDConfig, Shards
from phalanx.train.local import choose_strategy, choose_workers

BATCH = 32
MIN_SAMPLE_S = 0.25  # each sample repeats rounds until it lasts this long
SHAPE = (1, 28, 28)


def make_data(n: int, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n * BATCH, *SHAPE, generator=g).to(device)
    y = torch.randint(0, 10, (n * BATCH,), generator=g).to(device)
    return x, y


class Reference:
    """Plain PyTorch: a module and an optimizer per node, a Python loop, FedAvg by hand."""

    def __init__(self, model: str, n: int, x, y, device):
        self.models = [MODELS.build(model, SHAPE, 10).to(device) for _ in range(n)]
        start = torch.nn.utils.parameters_to_vector(self.models[0].parameters()).detach()
        for m in self.models:
            torch.nn.utils.vector_to_parameters(start.clone(), m.parameters())
        self.opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in self.models]
        self.x, self.y = x, y

    def round(self) -> None:
        for i, (m, opt) in enumerate(zip(self.models, self.opts)):
            opt.zero_grad()
            F.cross_entropy(m(self.x[i * BATCH:(i + 1) * BATCH]), self.y[i * BATCH:(i + 1) * BATCH]).backward()
            opt.step()
        with torch.no_grad():
            vecs = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()) for m in self.models])
            avg = vecs.mean(0)
            for m in self.models:
                torch.nn.utils.vector_to_parameters(avg, m.parameters())


class ArithmeticLimit:
    """One model, one SGD step on all ``n x 32`` samples at once: the nodes' arithmetic, shared."""

    def __init__(self, model: str, x, y, device):
        self.model = MODELS.build(model, SHAPE, 10).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.x, self.y = x, y

    def round(self) -> None:
        self.opt.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()


def make_engine(model: str, n: int, x, y, device, variant: str) -> Simulation:
    strategy, _, workers = variant.partition("/w")
    factory = lambda: MODELS.build(model, SHAPE, 10)  # noqa: E731
    parts = list(torch.arange(n * BATCH, device=device).view(n, BATCH))
    return Simulation(
        flat_model=FlatModel(factory()), initial=initial_row(factory, 0).to(device),
        shards=Shards.from_parts(x, y, parts), test_x=x[:BATCH], test_y=y[:BATCH],
        topology=Star(n, 0), aggregator=get_aggregator("mean"),
        malicious=torch.zeros(n, dtype=torch.bool, device=device), faults=FaultSchedule([], n),
        sgd=SGDConfig(epochs=1, batch_size=BATCH, lr=0.01), seed=0, weighting="uniform",
        strategy=strategy, workers=int(workers or 0),
    )


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(model: str, n: int, reps: int, device, strategies: list[str]) -> dict:
    x, y = make_data(n, device)
    ref = Reference(model, n, x, y, device)
    limit = ArithmeticLimit(model, x, y, device)
    limit.round()
    engines = {s: make_engine(model, n, x, y, device, s) for s in strategies}
    counter = iter(range(1, 10**9))
    # warm-up, and how many rounds make one sample of at least MIN_SAMPLE_S
    repeat = max(1, math.ceil(MIN_SAMPLE_S / max(timed(ref.round, device), 1e-6)))
    for e in engines.values():
        e.step(next(counter))
    times = {"reference": [], "limit": [], **{s: [] for s in strategies}}

    def rounds_of(fn):
        return lambda: [fn() for _ in range(repeat)]

    for _ in range(reps):
        times["reference"].append(timed(rounds_of(ref.round), device) / repeat)
        times["limit"].append(timed(rounds_of(limit.round), device) / repeat)
        for s, e in engines.items():
            times[s].append(timed(rounds_of(lambda: e.step(next(counter))), device) / repeat)
    med = {k: statistics.median(v) for k, v in times.items()}
    dim = engines[strategies[0]].rows.shape[1]
    auto = choose_strategy(device, dim, n)
    if auto == "loop":
        auto += f"/w{choose_workers(device, dim, n)}"
    return {"model": model, "nodes": n, "dim": dim, "device": str(device),
            "auto": auto, "seconds": med,
            "updates_per_s": {k: n / v for k, v in med.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="10,100,1000")
    ap.add_argument("--models", default="logistic,mlp,cnn")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--strategies", default="loop/w1,loop/w2,chunked,vmap",
                    help="strategies measured beside auto (loop/wN = loop with N worker threads)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_overhead.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    strategies = ["auto", *args.strategies.split(",")]
    rows = []
    print(f"engine overhead on {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}); median of {args.reps} samples")
    print(f"{'model':<8} {'nodes':>6} {'reference':>11} {'engine':>11} {'auto':>9} {'ratio':>7} "
          f"{'limit':>11} {'of limit':>8}   " + " ".join(f"{s:>9}" for s in strategies[1:]))
    for model in args.models.split(","):
        for n in map(int, args.nodes.split(",")):
            r = measure(model, n, args.reps, device, strategies)
            rows.append(r)
            ups = r["updates_per_s"]
            ratio = ups["auto"] / ups["reference"]
            print(f"{model:<8} {n:>6} {ups['reference']:>8.0f}/s {ups['auto']:>8.0f}/s {r['auto']:>9} "
                  f"{ratio:>6.2f}x {ups['limit']:>8.0f}/s {ups['auto'] / ups['limit']:>7.0%}   "
                  + " ".join(f"{ups[s]:>7.0f}/s" for s in strategies[1:]), flush=True)
    target = 0.9 if device.type == "cpu" else 5.0
    print(f"\ntarget: engine (auto) at least {target}x the reference's node updates per second"
          + (" at 1,000 nodes" if device.type != "cpu" else ""))
    for r in rows:
        if device.type != "cpu" and r["nodes"] != 1000:
            continue
        ratio = r["updates_per_s"]["auto"] / r["updates_per_s"]["reference"]
        share = r["updates_per_s"]["auto"] / r["updates_per_s"]["limit"]
        verdict = f"{'PASS' if ratio >= target else 'FAIL'}"
        if device.type != "cpu":
            verdict += f"; {share:.0%} of the arithmetic limit (target 50%: {'PASS' if share >= 0.5 else 'FAIL'})"
        print(f"  {r['model']:<5} {r['nodes']:>5} nodes: {ratio:.2f}x  {verdict}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                          "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
