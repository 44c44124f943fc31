"""Phalanx's robust rules and pre-aggregators against ByzFL 0.0.11's, on the same input, in one run.

For every rule that both libraries have, one input ``x`` of ``n`` rows of dimension ``d`` (float32,
seeded) goes to ByzFL's implementation and to ours with the same hyper-parameters; each side is
timed (median of ``--reps`` calls after one warm-up call, in this process, with torch using every
core unless ``--threads`` says otherwise) and the outputs are compared. A side whose warm-up call
takes over ``--slow`` seconds (ByzFL's MDA: minutes at ``n = 100``) is timed by one more call.

**Input.** Honest rows are a shared mean plus noise of a scale that differs per row (clients are
heterogeneous): ``x_i = mu + s_i * e_i``, ``mu, e_i ~ N(0, I_d)``, ``s_i`` evenly spaced in
``[0.5, 1.5]``. The last ``--f`` rows are Byzantine, a reversed and amplified mean plus noise:
``x_i = -3 mu + e_i``. Distinct noise scales keep the selection rules (Krum, MDA, ...) away from
near-ties, so that the two libraries' rounding cannot pick different rows.

**Agreement.** ``rel_err = max |ours - byzfl| / max |byzfl|`` over every coordinate of the output
(the whole ``(n', d)`` output for a pre-aggregator); the outputs agree when it is at most
``1e-5``. Where they differ, the column ``f64 err`` says which side is off: each side's
``rel_err`` against ours run once more on the same input in float64 (untimed).

**Hyper-parameters** (ByzFL's defaults, mapped onto ours; ``f = --f`` unless said):

- ``mean``, ``median``: none. ByzFL's median is ``torch.quantile(q=0.5)`` (the mean of the two
  middle values when ``n`` is even).
- ``trimmed_mean``, ``krum``, ``multi_krum`` (ByzFL averages the ``n - f`` best-scored rows, our
  default), ``nnm``, ``arc``: ``f``. Krum's score differs by definition: ours sums the squared
  distances to the ``n - f - 2`` nearest other rows (Blanchard et al. 2017), ByzFL averages the
  ``n - f - 1`` nearest; on this input both pick the same rows.
- ``nnm``: ByzFL gathers an ``(n, n - f, d)`` tensor (36 GB at ``n = 100, f = 10, d = 10^6``).
  When that would take over 80% of the free memory (RAM, or the GPU's), both sides run on the
  first ``d'`` coordinates that fit, and the row says so.
- ``mda``: ``f = 2`` (ByzFL enumerates all ``C(n, n-f)`` subsets in Python).
- ``geometric_median``: ByzFL's smoothed Weiszfeld starts from 0 and runs ``T = 3`` iterations with
  ``nu = 0.1``; ours is given the same start (``start="zero"``; its default is the coordinate-wise
  median), iteration count (``tol = 0``: no early stop) and ``nu``.
- ``centered_clipping``: ByzFL's ``m = 0`` (a fresh instance every call, since ByzFL keeps the
  last output as its next start), ``L = 1``, ``tau = 100``; ours gets ``previous = 0`` in its
  context and the same ``L`` and ``tau``.
- ``clipping``: ``c = 2.0`` (ByzFL's default).
- ``bucketing``: bucket size ``s = 2``. ByzFL shuffles with torch's global generator, ours with the
  context's, so the outputs are compared with ByzFL's shuffle replaced by the permutation ours
  used (found by running ours, with the same seed, on the ``n x n`` identity: bucket ``j`` of its
  output names the rows it averaged). The times are those of each library's own shuffle.
- ``bulyan`` is not in ByzFL 0.0.11 (nor are ``fltrust``, ``sign_majority``, ``clipped_gossip``):
  ours is timed alone, without a ratio.

ByzFL's ``clipping`` and ``arc`` write into their input; each of their calls gets a fresh copy,
made outside the timed region.

**Targets** (issue 3): ByzFL / Phalanx time at least 3 for the rules with pairwise distances or
iterations, at least 1 (no slower) for ``mean``, ``median`` and ``trimmed_mean``. ``arc`` has
neither pairwise distances nor iterations: one pass for the norms, a sort of ``n`` numbers and
one pass to scale, as memory-bound as the mean, so it is held to "no slower" too. ByzFL scales
the clipped rows inside its input, while ours returns new rows and leaves the caller's intact
(one more ``(n, d)`` write); the column says what that costs.

**ByzFL's import.** ``import byzfl`` runs its package ``__init__``, which imports its training
framework and with it torchvision (absent here: its wheel would need another torch). The
aggregators use none of it, so this script loads ``byzfl.aggregators`` without running that
``__init__`` (see :func:`import_byzfl`).

Run it in the benchmark's own environment (``bash benchmarks/byzfl_setup.sh`` creates it)::

    benchmarks/.venv-byzfl/bin/python benchmarks/byzfl_compare.py [--n 100] [--d 1000000] [--f 10]
        [--reps 5] [--rules krum,nnm] [--device cpu|cuda] [--threads N] [--slow 20]
        [--out benchmarks/results/byzfl_compare.json]

``--device cuda`` runs both libraries on the GPU (the input is made on the CPU, then moved); it
prints a line and exits 0 where CUDA is absent. The table, then the JSON (settings, environment,
every row), are the output; the exit code is 0 whatever the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Huge pages for torch's large CPU allocations, as `import phalanx` sets them, here before torch
# is imported: they apply to both libraries alike (a fresh 400 MB output costs 34 ms instead of
# 150 ms of page faults)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT / "src") not in sys.path:  # phalanx from this checkout, installed or not
    sys.path.insert(0, str(ROOT / "src"))

TOLERANCE = 1e-5
TARGET_FAST = 3.0  # rules with pairwise distances or iterations
TARGET_PLAIN = 1.0  # mean, median, trimmed mean (one library call in ByzFL); arc (one pass)
MDA_F = 2
BUCKET_SIZE = 2
GM_NU, GM_T = 0.1, 3
CC_L, CC_TAU = 1, 100.0
CLIP_C = 2.0


def import_byzfl() -> types.ModuleType:
    """``byzfl.aggregators``, without running ``byzfl/__init__.py``.

    That ``__init__`` imports ``byzfl.fed_framework`` and ``byzfl.benchmark``, which import
    torchvision; the aggregators import only torch, numpy, scipy and ``byzfl.utils``. So the
    package ``byzfl`` is registered as an empty module whose ``__path__`` is the installed
    package's folder: its submodules then import as usual, the ``__init__`` never runs.
    """
    if "byzfl.aggregators" in sys.modules:
        return sys.modules["byzfl.aggregators"]
    spec = importlib.util.find_spec("byzfl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("byzfl is not installed (bash benchmarks/byzfl_setup.sh)")
    package = types.ModuleType("byzfl")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["byzfl"] = package
    import byzfl.aggregators

    return byzfl.aggregators


# -- the input ---------------------------------------------------------------------------------
def make_input(n: int, d: int, f: int, seed: int, device: torch.device) -> torch.Tensor:
    """``n`` rows: ``n - f`` honest (shared mean plus per-row-scaled noise), then ``f`` Byzantine."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g)
    scales = torch.linspace(0.5, 1.5, n - f)
    x[: n - f] = mu + scales[:, None] * x[: n - f]
    x[n - f :] += -3.0 * mu
    return x.to(device)


# -- the cases ---------------------------------------------------------------------------------
@dataclass
class Case:
    """One row of the table: our plug-in, ByzFL's counterpart, and how to call both."""

    name: str  # our registered name
    byzfl: Callable[[types.ModuleType, int], Callable[[torch.Tensor], torch.Tensor]] | None
    params: Callable[[int], dict]  # f -> our hyper-parameters
    target: float | None
    fixed_f: int | None = None  # e.g. MDA at f = 2 whatever --f is
    byzfl_writes_input: bool = False
    context: Callable[[torch.Tensor], object] | None = None  # x -> our Context
    note: str = ""
    #: (n, f) -> bytes per coordinate of ByzFL's largest temporary, when it dwarfs the input
    byzfl_bytes_per_coord: Callable[[int, int], int] | None = None
    extra: dict = field(default_factory=dict)


KRUM_NOTE = "score: ours n-f-2 neighbours (paper), ByzFL n-f-1"


def _f(f: int) -> dict:
    return {"f": f}


def _cc_context(x: torch.Tensor):
    from phalanx.aggregate import Context

    return Context(previous=torch.zeros(x.shape[1], dtype=x.dtype, device=x.device))


def _bucket_context(x: torch.Tensor):
    from phalanx.aggregate import Context

    return Context(generator=torch.Generator(device=x.device).manual_seed(1))


CASES: list[Case] = [
    Case("mean", lambda B, f: B.Average(), lambda f: {}, TARGET_PLAIN),
    Case("median", lambda B, f: B.Median(), lambda f: {}, TARGET_PLAIN),
    Case("trimmed_mean", lambda B, f: B.TrMean(f=f), _f, TARGET_PLAIN),
    Case("geometric_median", lambda B, f: B.GeometricMedian(nu=GM_NU, T=GM_T),
         lambda f: {"nu": GM_NU, "iterations": GM_T, "tol": 0.0, "start": "zero"}, TARGET_FAST,
         note=f"T={GM_T} Weiszfeld steps from 0, nu={GM_NU}"),
    Case("krum", lambda B, f: B.Krum(f=f), _f, TARGET_FAST, note=KRUM_NOTE),
    Case("multi_krum", lambda B, f: B.MultiKrum(f=f), _f, TARGET_FAST,
         note="averages n - f rows; " + KRUM_NOTE),
    Case("centered_clipping", lambda B, f: (lambda x: B.CenteredClipping(L=CC_L, tau=CC_TAU)(x)),
         lambda f: {"iterations": CC_L, "tau": CC_TAU}, TARGET_FAST, context=_cc_context,
         note=f"L={CC_L}, tau={CC_TAU:g}, from 0"),
    Case("mda", lambda B, f: B.MDA(f=f), _f, TARGET_FAST, fixed_f=MDA_F),
    Case("clipping", lambda B, f: B.Clipping(c=CLIP_C), lambda f: {"c": CLIP_C}, None,
         byzfl_writes_input=True, note=f"c={CLIP_C}"),
    Case("arc", lambda B, f: B.ARC(f=f), _f, TARGET_PLAIN, byzfl_writes_input=True,
         note="ByzFL writes into its input, ours returns new rows"),
    Case("nnm", lambda B, f: B.NNM(f=f), _f, TARGET_FAST,
         byzfl_bytes_per_coord=lambda n, f: 4 * n * (n - f)),  # ByzFL gathers (n, n-f, d)
    Case("bucketing", lambda B, f: B.Bucketing(s=BUCKET_SIZE), lambda f: {"s": BUCKET_SIZE}, None,
         context=_bucket_context, note=f"s={BUCKET_SIZE}; compared with ours' permutation"),
    Case("bulyan", None, _f, TARGET_FAST, note="not in ByzFL 0.0.11: ours alone"),
]
NOT_IN_BYZFL = ("bulyan", "fltrust", "sign_majority", "clipped_gossip")
ONLY_IN_BYZFL = ("MoNNA", "Meamed", "CAF", "SMEA")


# -- timing ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], torch.Tensor], prepare: Callable[[], None] | None, reps: int,
          device: torch.device, slow_s: float) -> tuple[float, torch.Tensor, int]:
    """(median seconds of the timed calls, the warm-up's output, how many calls were timed).

    One warm-up call, then ``reps`` timed calls; only one when the warm-up took longer than
    ``slow_s`` (ByzFL's MDA takes minutes a call). ``prepare`` runs before each call, outside the
    timed region.
    """
    if prepare:
        prepare()
    _sync(device)
    t0 = time.perf_counter()
    out = call()
    _sync(device)
    if time.perf_counter() - t0 > slow_s:
        reps = 1
    times = []
    for _ in range(reps):
        if prepare:
            prepare()
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out, reps


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|``, in float64; inf when the shapes differ."""
    if ours.shape != ref.shape:
        return math.inf
    a, b = ours.detach().double().cpu(), ref.detach().double().cpu()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


# -- bucketing: ByzFL with our permutation ----------------------------------------------------
def our_buckets(ours, n: int, device: torch.device, context_of) -> torch.Tensor:
    """The row order ours used: run it on the ``n x n`` identity with the same seeded context."""
    eye = torch.eye(n, device=device)
    out = ours(eye, context=context_of(eye))
    members = [torch.nonzero(row > 0).flatten() for row in out]
    perm = torch.cat(members)
    if sorted(perm.tolist()) != list(range(n)):
        raise RuntimeError("could not read ours' permutation from its output on the identity")
    return perm


@contextlib.contextmanager
def byzfl_permutation(perm: torch.Tensor):
    """ByzFL's shuffle (``byzfl.utils.torch_tools.permutation``) replaced by ``perm``."""
    from byzfl.utils import torch_tools

    saved = torch_tools.permutation
    torch_tools.permutation = lambda vectors: vectors[perm.to(vectors.device)]
    try:
        yield
    finally:
        torch_tools.permutation = saved


# -- one case ----------------------------------------------------------------------------------
def run_case(case: Case, B, x: torch.Tensor, f_default: int, reps: int, slow_s: float) -> dict:
    from phalanx.aggregate import AGGREGATORS, PRE_AGGREGATORS, get

    device = x.device
    n, d = x.shape
    f = case.fixed_f if case.fixed_f is not None else f_default
    row = {"rule": case.name, "f": f, "d": d, "byzfl_ms": None, "phalanx_ms": None, "ratio": None,
           "target": case.target, "agree": None, "rel_err": None, "note": case.note,
           "problems": []}
    if case.byzfl is not None and case.byzfl_bytes_per_coord is not None:
        fits = int(0.8 * free_bytes(device) / case.byzfl_bytes_per_coord(n, f))
        if fits < d:  # both sides on the first coordinates only, so that ByzFL's side fits
            x, row["d"] = x[:, :fits].contiguous(), fits
            row["note"] = "; ".join(filter(None, [row["note"], (
                f"compared at d={fits:,}: at d={d:,} ByzFL would allocate "
                f"{case.byzfl_bytes_per_coord(n, f) * d / 2**30:.1f} GiB, over 80% of the "
                f"{free_bytes(device) / 2**30:.1f} GiB free")]))
    params = case.params(f)
    row["params"] = params
    if "f" not in params:
        row["f"] = None  # the rule takes no f

    # ours
    ours = None
    registry = AGGREGATORS if case.name in AGGREGATORS else (
        PRE_AGGREGATORS if case.name in PRE_AGGREGATORS else None)
    if registry is None:
        row["problems"].append("phalanx: not registered")
    else:
        accepted = set(registry.params_model(case.name).model_fields)
        unknown = sorted(set(params) - accepted)
        if unknown:
            row["problems"].append(f"phalanx {case.name} takes no {unknown} "
                                   f"(its parameters: {sorted(accepted)})")
        else:
            try:
                ours = get(case.name, **params)
            except Exception as e:  # noqa: BLE001 - reported in the table
                row["problems"].append(f"phalanx: {type(e).__name__}: {e}")
    ours_out = None
    if ours is not None:
        context_of = case.context or (lambda _x: None)
        try:
            secs, ours_out, row["phalanx_calls"] = timed(
                lambda: ours(x, context=context_of(x)), None, reps, device, slow_s)
            row["phalanx_ms"] = secs * 1e3
        except Exception as e:  # noqa: BLE001
            row["problems"].append(f"phalanx raised {type(e).__name__}: {e}")

    # ByzFL
    byz_out = None
    if case.byzfl is not None:
        rule = case.byzfl(B, f)
        fresh: dict[str, torch.Tensor] = {}

        def prepare() -> None:  # ByzFL writes into its input: a new copy, outside the timing
            fresh["x"] = x.clone()

        def call() -> torch.Tensor:
            return rule(fresh["x"] if case.byzfl_writes_input else x)

        try:
            secs, byz_out, row["byzfl_calls"] = timed(
                call, prepare if case.byzfl_writes_input else None, reps, device, slow_s)
            row["byzfl_ms"] = secs * 1e3
            if case.name == "bucketing" and ours is not None:
                perm = our_buckets(ours, n, device, case.context)
                with byzfl_permutation(perm):
                    byz_out = rule(x)
        except Exception as e:  # noqa: BLE001
            row["problems"].append(f"ByzFL raised {type(e).__name__}: {e}")
            byz_out = None

    for side, label in (("byzfl", "ByzFL"), ("phalanx", "Phalanx")):
        if row.get(f"{side}_calls", reps) < reps:
            row["note"] = "; ".join(filter(None, [row["note"], (f"{label} timed by one call "
                                                  f"(its warm-up took over {slow_s:g} s)")]))
    if row["byzfl_ms"] and row["phalanx_ms"]:
        row["ratio"] = row["byzfl_ms"] / row["phalanx_ms"]
    if ours_out is not None:  # the same rule in float64: which side is off when they differ
        try:
            x64 = x.double()
            context_of = case.context or (lambda _x: None)
            ref64 = ours(x64, context=context_of(x64))
            del x64
            row["phalanx_err_f64"] = rel_err(ours_out, ref64)
            if byz_out is not None:
                row["byzfl_err_f64"] = rel_err(byz_out, ref64)
        except (RuntimeError, MemoryError) as e:  # out of memory: no reference, said so
            row["problems"].append(f"no float64 reference: {type(e).__name__}")
    if ours_out is not None and byz_out is not None:
        row["rel_err"] = rel_err(ours_out, byz_out)
        row["agree"] = row["rel_err"] <= TOLERANCE
        if ours_out.shape != byz_out.shape:
            row["problems"].append(f"shapes differ: ours {tuple(ours_out.shape)}, "
                                   f"ByzFL {tuple(byz_out.shape)}")
    if row["target"] is not None and row["ratio"] is not None:
        row["meets_target"] = row["ratio"] >= row["target"]
    return row


# -- the report --------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = ["rule", "f", "ByzFL ms", "Phalanx ms", "ratio", "target", "", "agree", "rel. err",
            "f64 err ByzFL/ours", "note"]
    cells = [head]
    for r in rows:
        ms = lambda v: "-" if v is None else (f"{v:.1f}" if v >= 1 else f"{v:.3f}")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = "-" if r["target"] is None else f">={r['target']:g}x"
        verdict = "" if r.get("meets_target") is None else ("PASS" if r["meets_target"] else "FAIL")
        agree = "-" if r["agree"] is None else ("yes" if r["agree"] else "NO")
        err = "-" if r["rel_err"] is None else f"{r['rel_err']:.1e}"
        e64 = lambda v: "-" if v is None else f"{v:.1e}"
        f64 = f"{e64(r.get('byzfl_err_f64'))}/{e64(r.get('phalanx_err_f64'))}"
        note = "; ".join([r["note"], *r["problems"]] if r["note"] else r["problems"])
        cells.append([r["rule"], "-" if r["f"] is None else str(r["f"]), ms(r["byzfl_ms"]), ms(r["phalanx_ms"]), ratio,
                      target, verdict, agree, err, f64, note])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    right = {1, 2, 3, 4, 5}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    def version(p: str) -> str | None:
        try:
            return importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    env = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "python": platform.python_version(), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": str(device),
           "phalanx_commit": commit or None,
           "versions": {p: version(p) for p in ("byzfl", "torch", "numpy", "scipy", "phalanx")},
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="rows (default 100)")
    ap.add_argument("--d", type=int, default=1_000_000, help="dimension (default 1,000,000)")
    ap.add_argument("--f", type=int, default=10, help="declared f, and Byzantine rows in the input "
                    f"(default 10; MDA always runs at f = {MDA_F})")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per side, after a warm-up")
    ap.add_argument("--rules", default=",".join(c.name for c in CASES),
                    help="comma-separated subset of: " + ", ".join(c.name for c in CASES))
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda is skipped when absent)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both sides (default: every core this process may use)")
    ap.add_argument("--slow", type=float, default=20.0,
                    help="a side whose warm-up call takes longer than this many seconds is timed "
                    "by one call instead of --reps (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "byzfl_compare.json")
    args = ap.parse_args(argv)
    chosen = [r.strip() for r in args.rules.split(",") if r.strip()]
    known = {c.name: c for c in CASES}
    bad = [r for r in chosen if r not in known]
    if bad:
        ap.error(f"--rules: unknown {bad}; choose from {', '.join(known)}")
    if not 0 <= 2 * args.f < args.n or args.reps < 1 or args.d < 1:
        ap.error("need 0 <= 2f < n, reps >= 1, d >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: nothing to measure on --device cuda (skipped).")
        return 0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores or 1)
    try:
        B = import_byzfl()
    except ImportError as e:
        print(f"ByzFL cannot be imported ({e}); run: bash benchmarks/byzfl_setup.sh")
        return 1

    x = make_input(args.n, args.d, args.f, args.seed, device)
    pristine = x.clone()
    env = environment(device)
    print(f"ByzFL {env['versions']['byzfl']} vs Phalanx ({env['phalanx_commit']}) on {device}"
          f"{' (' + env['gpu'] + ')' if 'gpu' in env else ''}: n={args.n}, d={args.d:,}, "
          f"f={args.f}, float32; {env['cpus']} CPUs, {env['torch_threads']} torch threads, "
          f"torch {torch.__version__}; median of {args.reps} calls after a warm-up", flush=True)
    rows = []
    for name in chosen:
        case = known[name]
        if case.fixed_f is not None and 2 * case.fixed_f >= args.n:
            continue
        row = run_case(case, B, x, args.f, args.reps, args.slow)
        if not torch.equal(x, pristine):
            row["problems"].append("the input was modified: later rows would be wrong; restored")
            x.copy_(pristine)
        rows.append(row)
        r = row
        print(f"  {name}: ByzFL {r['byzfl_ms'] or float('nan'):.1f} ms, Phalanx "
              f"{r['phalanx_ms'] or float('nan'):.1f} ms, rel. err "
              f"{'-' if r['rel_err'] is None else format(r['rel_err'], '.1e')}"
              + (f" [{'; '.join(r['problems'])}]" if r["problems"] else ""), flush=True)

    print()
    print(table(rows))
    print(f"\nratio = ByzFL ms / Phalanx ms (> 1: Phalanx faster); rel. err = max|ours - ByzFL| / "
          f"max|ByzFL| over the output; agree: rel. err <= {TOLERANCE:g}. Targets: >= {TARGET_FAST:g}x "
          f"for rules with pairwise distances or iterations, >= {TARGET_PLAIN:g}x for mean, median, "
          f"trimmed_mean. Not in ByzFL 0.0.11: {', '.join(NOT_IN_BYZFL)}; in ByzFL only: "
          f"{', '.join(ONLY_IN_BYZFL)}.")
    record = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"n": args.n, "d": args.d, "f": args.f, "mda_f": MDA_F, "reps": args.reps,
                     "seed": args.seed, "dtype": "float32", "tolerance": TOLERANCE,
                     "input": "honest x_i = mu + s_i e_i (s_i in [0.5, 1.5]); last f rows -3 mu + e_i"},
        "environment": env, "rows": rows, "not_in_byzfl": list(NOT_IN_BYZFL),
        "only_in_byzfl": list(ONLY_IN_BYZFL),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
