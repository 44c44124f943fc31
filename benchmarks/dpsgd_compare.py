"""DP-SGD in the engine: its cost against the same training without DP, and against Opacus.

``--nodes`` nodes of ``--samples`` samples each (random 28x28 images, 10 classes) each train
``--epochs`` local epochs of the MLP (or ``--model``) with batch ``--batch``, as one round of the
engine does. Three ways, timed in the same process, interleaved, median of ``--reps``:

- **plain**: :func:`phalanx.train.local.train_nodes` without DP (shuffled batches), the strategy
  ``auto`` picks (the loop, with worker threads for models of 20,000 parameters and more);
- **dpsgd**: the same call with DP-SGD (Poisson batches, per-sample clipping at ``C = 1``,
  noise multiplier 1): per-sample gradients by ``torch.func.vmap(grad(...))``;
- **opacus**: Opacus 1.6, node after node: the node's model wrapped by
  ``PrivacyEngine.make_private`` (Poisson sampling, the same clip and noise) and trained through
  its data loader, as a framework built on Opacus would do for each node.

Targets (issue 5): dpsgd at most 2x plain; dpsgd faster than Opacus. ``--threads 1`` runs every
side on one thread (the engine then trains one node at a time), for a like-for-like reading.

    python benchmarks/dpsgd_compare.py [--nodes 10] [--samples 1200] [--batch 128] [--epochs 1]
        [--model mlp] [--reps 3] [--threads N] [--out benchmarks/results/dpsgd_compare.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import phalanx  # noqa: F401  (before torch: huge pages for torch's large allocations, for every side)
import torch
import torch.nn.functional as F

from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.privacy.dpsgd import DPSGD
from phalanx.train import SGDConfig, Shards
from phalanx.train.local import train_nodes

SHAPE, CLASSES = (1, 28, 28), 10
CLIP, SIGMA, LR = 1.0, 1.0, 0.05


def make_shards(nodes: int, samples: int) -> Shards:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(nodes * samples, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (nodes * samples,), generator=g)
    return Shards.from_parts(x, y, list(torch.arange(nodes * samples).view(nodes, samples)))


def run_engine(model: str, shards: Shards, config: SGDConfig, dp: bool, workers: int) -> None:
    factory = lambda: MODELS.build(model, SHAPE, CLASSES)  # noqa: E731
    n = shards.num_nodes
    rows = initial_row(factory, 0).expand(n, -1).clone()
    train_nodes(FlatModel(factory()), rows, torch.arange(n), shards, config,
                torch.Generator().manual_seed(1), "auto", 0, workers,
                dp=DPSGD(CLIP, torch.full((n,), SIGMA)) if dp else None, noise_seed=2)


def run_opacus(model: str, shards: Shards, config: SGDConfig) -> None:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    factory = lambda: MODELS.build(model, SHAPE, CLASSES)  # noqa: E731
    start = initial_row(factory, 0)
    for node in range(shards.num_nodes):
        module = factory()
        torch.nn.utils.vector_to_parameters(start.clone(), module.parameters())
        idx = shards.index[node, : int(shards.sizes[node])]
        loader = DataLoader(TensorDataset(shards.x[idx], shards.y[idx]), batch_size=config.batch_size)
        optimizer = torch.optim.SGD(module.parameters(), lr=config.lr)
        engine = PrivacyEngine(accountant="rdp")
        module, optimizer, loader = engine.make_private(
            module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=SIGMA,
            max_grad_norm=CLIP, poisson_sampling=True)
        for _ in range(config.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                F.cross_entropy(module(xb), yb).backward()
                optimizer.step()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dpsgd_compare.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", module="opacus")  # its notes on secure RNG and hooks
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = 1 if args.threads == 1 else 0
    shards = make_shards(args.nodes, args.samples)
    config = SGDConfig(epochs=args.epochs, batch_size=args.batch, lr=LR)
    sides = {"plain": lambda: run_engine(args.model, shards, config, False, workers),
             "dpsgd": lambda: run_engine(args.model, shards, config, True, workers),
             "opacus": lambda: run_opacus(args.model, shards, config)}
    for fn in sides.values():  # warm-up: imports, torch.func's first trace, Opacus's hooks
        fn()
    times = {k: [] for k in sides}
    for _ in range(args.reps):
        for k, fn in sides.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    over_plain = med["dpsgd"] / med["plain"]
    vs_opacus = med["opacus"] / med["dpsgd"]
    print(f"DP-SGD, {args.nodes} nodes x {args.samples} samples, {args.model}, batch {args.batch}, "
          f"{args.epochs} epoch(s); {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"median of {args.reps}")
    for k in sides:
        print(f"  {k:<7} {med[k]:8.2f} s")
    print(f"  dpsgd / plain  = {over_plain:.2f}x  (target at most 2x: "
          f"{'PASS' if over_plain <= 2 else 'FAIL'})")
    print(f"  opacus / dpsgd = {vs_opacus:.2f}x  (target above 1x, ours faster: "
          f"{'PASS' if vs_opacus > 1 else 'FAIL'})")
    import opacus

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "settings": vars(args), "seconds": med, "all": times, "dpsgd_over_plain": over_plain,
        "opacus_over_dpsgd": vs_opacus, "torch": torch.__version__, "opacus": opacus.__version__,
        "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
    }, indent=1))


if __name__ == "__main__":
    main()
