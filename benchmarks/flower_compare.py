"""Phalanx against Flower 1.42's simulation engine and a hand-written PyTorch loop, side by side.

Two tasks, the same data, partition, model, initial weights, local training and aggregation on
every side (``benchmarks/flower/common.py``):

- ``lr`` (overhead-bound, the shape FLUTE published): logistic regression on Fashion-MNIST,
  1,000 nodes, 10 sampled per round, 100 rounds.
- ``cnn`` (compute-bound): FedAvg with the LeNet-shaped CNN, 100 nodes, all of them every round,
  10 rounds.

Each run is its own process and is timed whole, from start to exit (imports, data loading,
training, the final evaluation on the 10,000 test images):

- ``phalanx``: ``benchmarks/flower/phalanx_task.py``, a scenario built and run by the engine;
- ``flower``: ``benchmarks/flower/flower_task.py`` in Flower's simulation engine (Ray backend),
  run by the python of ``benchmarks/.venv-flower``, which this script creates and fills when
  missing (Flower pins its own protobuf, grpcio, ... hence its own environment; phalanx goes in
  as an editable install so Flower's clients load the same data and model code); ``cnn`` also
  runs with one CPU per client, and the faster setting is "Flower best";
- ``hand loop``: ``benchmarks/flower/handloop_task.py``, plain PyTorch, one ``nn.Module`` and
  ``torch.optim.SGD`` per client.

It prints a table with each figure beside the one measured when the issue was written, the
ratios to Flower's best and to the hand loop, then PASS/FAIL for each target (the exit code is
0 either way: this is a benchmark), and writes ``benchmarks/results/flower_compare.json`` and
``benchmarks/results/flower_compare.md``.

    .venv/bin/python benchmarks/flower_compare.py [--tasks lr,cnn] [--skip-flower] [--repeat N]

The host's CPUs may be shared: the script measures, before and after, how much faster two
processes finish than one after the other ("CPU check"), so that a table taken on a busy host
says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
TASK_DIR = BENCH / "flower"
FLOWER_VENV = BENCH / ".venv-flower"
RESULTS = BENCH / "results"
FLOWER_SPEC = "flwr[simulation]==1.42.*"
TORCH_SPEC = "torch==2.13.0"  # the CPU wheel on disk; always in the same pip call as its dependants
PHALANX_DEPS = ["numpy", "networkx", "pydantic", "pyyaml", "typer", "rich", "matplotlib", "jinja2",
                "scikit-learn", "mlxtend"]
RUN_TIMEOUT_S = 1800

#: Whole-process wall times measured when the issue was written (Flower 1.42, Ray 2.55,
#: torch 2.13 CPU), keyed by (task, system label).
REFERENCE_S = {
    ("lr", "flower (default resources)"): 30.0,
    ("lr", "hand loop"): 3.2,
    ("cnn", "flower (default resources)"): 67.0,
    ("cnn", "flower (1 CPU per client)"): 47.0,
    ("cnn", "hand loop"): 36.0,
}
#: (task, minimum speed-up of Phalanx over Flower's best setting).
SPEED_TARGETS = {"lr": 10.0, "cnn": 1.3}
ACCURACY_POINTS = 1.0
#: A run during which other processes used more than this many cores on average is "disturbed":
#: left out of the median when the same row has undisturbed runs (all runs stay in the JSON).
DISTURBED_CORES = 0.25


# -- the Flower environment --------------------------------------------------------------------
def flower_python() -> Path:
    return FLOWER_VENV / "bin" / "python"


def _flower_ready() -> str | None:
    """flwr's version when the Flower venv imports flwr, ray and phalanx; else None."""
    py = flower_python()
    if not py.exists():
        return None
    probe = subprocess.run(
        [str(py), "-c", "import flwr, ray, torch, phalanx.data, phalanx.models; print(flwr.__version__)"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    version = probe.stdout.strip()
    return version if probe.returncode == 0 and version.startswith("1.42") else None


def ensure_flower_venv() -> tuple[str | None, str]:
    """(flwr version or None, a line saying what happened)."""
    version = _flower_ready()
    if version:
        return version, f"Flower {version} found in {FLOWER_VENV.relative_to(ROOT)}"
    print(f"setting up {FLOWER_VENV.relative_to(ROOT)} (Flower 1.42 with Ray, torch 2.13 CPU) ...",
          flush=True)
    steps = []
    if not flower_python().exists():
        # the project's interpreter version, so that the cp311 CPU torch wheel on disk fits
        steps.append([sys.executable, "-m", "venv", str(FLOWER_VENV)])
    pip = [str(flower_python()), "-m", "pip", "install", "-q"]
    steps.append(pip + ["-e", str(ROOT), "--no-deps"])
    steps.append(pip + [TORCH_SPEC, FLOWER_SPEC, *PHALANX_DEPS])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return None, f"Flower 1.42 could not be installed ({' '.join(cmd[-3:])}): {tail}"
    version = _flower_ready()
    if not version:
        return None, "Flower 1.42 was installed but `import flwr, ray, phalanx` fails in its venv"
    return version, f"Flower {version} installed into {FLOWER_VENV.relative_to(ROOT)}"


# -- one run -----------------------------------------------------------------------------------
class OtherLoad:
    """CPU time that processes other than the run being timed use while it runs.

    A background thread reads ``/proc/<pid>/stat`` of every process twice a second. A process
    belongs to the run when it is in the run's session (the run starts a new one) or is one of
    Ray's (its command line starts with ``ray::`` or runs from the Flower venv); everything else
    (this script excepted) is "other". ``cores()`` is the other processes' CPU seconds over the
    wall time: 0 on a quiet machine, 1 when someone else keeps a whole core busy.
    """

    def __init__(self, session: int, interval: float = 0.5):
        self.session, self.interval = session, interval
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.base: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.other: dict[int, bool] = {}
        self.stop = threading.Event()
        self.base = self._scan()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _stat(self, pid: int) -> tuple[int, int] | None:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        rest = raw[raw.rfind(")") + 2 :].split()
        return int(rest[3]), int(rest[11]) + int(rest[12])  # session, utime + stime

    def _is_other(self, pid: int, session: int) -> bool:
        if pid == os.getpid() or session == self.session:
            return False
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return True
        return not (cmd.startswith("ray::") or ".venv-flower" in cmd)

    def _scan(self) -> dict[int, int]:
        ticks = {}
        if not Path("/proc").is_dir():
            return ticks
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = self._stat(int(entry))
            if stat is None:
                continue
            pid, (session, used) = int(entry), stat
            ticks[pid] = used
            if pid not in self.other:
                self.other[pid] = self._is_other(pid, session)
        return ticks

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.last.update(self._scan())

    def __enter__(self) -> "OtherLoad":  # noqa: PYI034, UP037
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.last.update(self._scan())
        self.wall = time.perf_counter() - self.t0

    def cores(self) -> float:
        used = sum(t - self.base.get(pid, 0) for pid, t in self.last.items()
                   if self.other.get(pid) and pid != os.getpid())
        return used / self.tick / max(self.wall, 1e-9)


def wait_quiet(max_s: float) -> float:
    """Wait (at most ``max_s``) until other processes use under DISTURBED_CORES for 2 s; return
    the load last seen."""
    deadline = time.perf_counter() + max_s
    while True:
        with OtherLoad(session=-1) as load:
            time.sleep(2.0)
        cores = load.cores()
        if cores <= DISTURBED_CORES or time.perf_counter() >= deadline:
            return cores
        print(f"  (other processes use {cores:.2f} cores; waiting for a quiet machine)", flush=True)
        time.sleep(8.0)


def run_once(label: str, task: str, cmd: list[str], env: dict[str, str], log_dir: Path,
             rep: int = 1) -> dict:
    """Run one task process; whole-process wall time and the JSON of its last stdout line."""
    stem = "".join(c if c.isalnum() or c in "-." else "_" for c in f"{task}-{label}-{rep}")
    out_path, err_path = log_dir / f"{stem}.out", log_dir / f"{stem}.err"
    print(f"  {task:>3} | {label:<36} ...", end=" ", flush=True)
    with out_path.open("w") as out, err_path.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True)
        with OtherLoad(session=proc.pid) as load:
            try:
                code = proc.wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = "timeout"
            wall = time.perf_counter() - t0
    lines = [ln for ln in out_path.read_text().splitlines() if ln.strip()]
    result = {"task": task, "system": label, "wall_s": wall, "returncode": code,
              "other_load_cores": round(load.cores(), 3)}
    try:
        result.update(json.loads(lines[-1]) if lines else {})
        result["system"] = label
    except json.JSONDecodeError:
        pass
    if code != 0 or "accuracy" not in result:
        tail = err_path.read_text().strip().splitlines()[-5:]
        result["error"] = f"exit {code}: " + " | ".join(tail)
        print(f"FAILED ({result['error']}; logs in {log_dir})", flush=True)
    else:
        busy = "  (DISTURBED)" if result["other_load_cores"] > DISTURBED_CORES else ""
        print(f"{wall:7.2f} s  acc {result['accuracy']:.4f}  other load "
              f"{result['other_load_cores']:.2f} cores{busy}", flush=True)
    return result


def phalanx_variant(spec: str) -> tuple[str, list[str]]:
    """``strategy[/wN][/tN]`` -> (row label, phalanx_task arguments). ``wN``: N worker threads
    (the loop strategy's ``workers``, patched in by the benchmark); ``tN``: N intra-op threads."""
    strategy, *mods = spec.split("/")
    args, notes = ["--strategy", strategy], [] if strategy == "auto" else [strategy]
    for mod in mods:
        if mod[:1] == "w" and mod[1:].isdigit():
            args += ["--workers", mod[1:]]
            notes.append(f"{mod[1:]} worker{'s' if mod[1:] != '1' else ''}")
        elif mod[:1] == "t" and mod[1:].isdigit():
            args += ["--threads", mod[1:]]
            notes.append(f"{mod[1:]} thread{'s' if mod[1:] != '1' else ''}")
        else:
            raise ValueError(f"phalanx variant {spec!r}: {mod!r} is neither wN nor tN")
    return ("phalanx" + (f" ({', '.join(notes)})" if notes else "")), args


def plan(tasks: list[str], flower: bool, args: argparse.Namespace, env: dict[str, str]):
    """(task, label, command, env) of every run of one repetition, interleaved by task."""
    me = sys.executable
    runs = []
    for task in tasks:
        for variant in (args.phalanx_lr_strategies if task == "lr" else args.phalanx_cnn_strategies):
            label, extra = phalanx_variant(variant)
            runs.append((task, label, [me, str(TASK_DIR / "phalanx_task.py"), "--task", task, *extra],
                         env))
        runs.append((task, "hand loop", [me, str(TASK_DIR / "handloop_task.py"), "--task", task], env))
        if flower:
            cpus = args.flower_lr_cpus if task == "lr" else args.flower_cnn_cpus
            for c in cpus:
                label = "flower (default resources)" if c == "default" else \
                    f"flower ({c} CPU{'s' if c != '1' else ''} per client)"
                extra = [] if c == "default" else ["--client-cpus", c]
                runs.append((task, label, [str(flower_python()), str(TASK_DIR / "flower_task.py"),
                                           "--task", task, *extra], env))
    return runs


# -- the CPU check -------------------------------------------------------------------------------
_SPIN = "import time\nt=time.perf_counter()\ns=0\nfor i in range(6_000_000): s+=i\nprint(time.perf_counter()-t)"


def cpu_check() -> dict:
    """Seconds of a fixed pure-Python loop alone, and of two copies at once: on two free cores
    the pair takes as long as one (parallel speed-up 2.0); on one core's worth, twice as long."""
    def spin(n: int) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.DEVNULL)
                 for _ in range(n)]
        for p in procs:
            p.wait()
        return time.perf_counter() - t0

    one, two = spin(1), spin(2)
    return {"one_s": round(one, 3), "two_s": round(two, 3), "parallel_speedup": round(2 * one / two, 2)}


# -- summary -------------------------------------------------------------------------------------
def summarize(samples: list[dict], tasks: list[str]) -> tuple[list[dict], list[dict]]:
    rows = []
    for task in tasks:
        labels = list(dict.fromkeys(s["system"] for s in samples if s["task"] == task))
        for label in labels:
            ok = [s for s in samples if s["task"] == task and s["system"] == label and "error" not in s]
            if not ok:
                rows.append({"task": task, "system": label, "wall_s": None, "accuracy": None,
                             "runs": 0, "error": next(s["error"] for s in samples
                                                      if s["task"] == task and s["system"] == label)})
                continue
            quiet = [s for s in ok if s.get("other_load_cores", 0) <= DISTURBED_CORES]
            used = quiet or ok
            walls = [s["wall_s"] for s in used]
            rows.append({
                "task": task, "system": label, "runs": len(used), "runs_total": len(ok),
                "disturbed_runs": len(ok) - len(quiet), "all_disturbed": not quiet,
                "other_load_cores": max(s.get("other_load_cores", 0) for s in used),
                "wall_s": statistics.median(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
                "accuracy": statistics.fmean(s["accuracy"] for s in ok),
                "wall_all_s": [round(s["wall_s"], 2) for s in ok],
                "reference_s": REFERENCE_S.get((task, label)),
                "phases_s": ok[-1].get("phases_s"), "strategy": ok[-1].get("strategy"),
                "workers": ok[-1].get("workers"), "threads": ok[-1].get("threads"),
            })
    targets = []
    for task in tasks:
        mine = [r for r in rows if r["task"] == task and r["wall_s"] is not None]
        flower = [r for r in mine if r["system"].startswith("flower")]
        hand = next((r for r in mine if r["system"] == "hand loop"), None)
        best = min(flower, key=lambda r: r["wall_s"]) if flower else None
        for r in mine:
            r["flower_best"] = r is best
            r["vs_flower_best"] = best["wall_s"] / r["wall_s"] if best else None
            r["vs_hand_loop"] = hand["wall_s"] / r["wall_s"] if hand else None
        ph = next((r for r in mine if r["system"] == "phalanx"), None)
        if ph is None:
            continue
        need = SPEED_TARGETS[task]
        if best is None:
            targets.append({"task": task, "target": f"{need:g}x faster than Flower's best",
                            "status": "NOT CHECKED", "detail": "no Flower run"})
            continue
        speed = best["wall_s"] / ph["wall_s"]
        noisy = [r["system"] for r in (ph, best) if r["all_disturbed"]]
        caveat = f" [every run of {' and '.join(noisy)} was disturbed by other processes]" if noisy else ""
        targets.append({
            "task": task, "target": f"at least {need:g}x faster than Flower's best ({best['system']})",
            "status": "PASS" if speed >= need else "FAIL",
            "detail": f"Flower {best['wall_s']:.2f} s / Phalanx {ph['wall_s']:.2f} s = {speed:.2f}x "
                      f"(needs {need:g}x){caveat}"})
        flower_acc = statistics.fmean(r["accuracy"] for r in flower)
        diff = 100 * (ph["accuracy"] - flower_acc)
        targets.append({
            "task": task, "target": f"final accuracy within {ACCURACY_POINTS:g} point of Flower's",
            "status": "PASS" if abs(diff) <= ACCURACY_POINTS else "FAIL",
            "detail": f"Phalanx {100 * ph['accuracy']:.2f}% vs Flower {100 * flower_acc:.2f}% "
                      f"(mean of its {sum(r['runs'] for r in flower)} runs): {diff:+.2f} points"})
    return rows, targets


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(rows: list[dict]) -> list[list[str]]:
    head = ["task", "system", "wall s", "runs", "other load", "final acc",
            "vs Flower best (Flower s / this s)", "vs hand loop (hand s / this s)", "issue's figure",
            "time vs issue's (this s / issue's s)"]
    out = [head]
    for r in rows:
        if r["wall_s"] is None:
            out.append([r["task"], r["system"], "failed"] + ["-"] * (len(head) - 3))
            continue
        ref = r.get("reference_s")
        wall = f"{r['wall_s']:.2f}"
        if r["runs"] > 1:
            wall += f" ({r['wall_min_s']:.1f}-{r['wall_max_s']:.1f})"
        runs = f"{r['runs']}"
        if r["all_disturbed"]:
            runs += " (all disturbed)"
        elif r["disturbed_runs"]:
            runs += f" of {r['runs_total']}"
        out.append([r["task"], r["system"] + (" *" if r.get("flower_best") else ""), wall, runs,
                    f"{r['other_load_cores']:.2f}", f"{100 * r['accuracy']:.2f}%",
                    _x(r.get("vs_flower_best")), _x(r.get("vs_hand_loop")),
                    "-" if ref is None else f"{ref:g} s", "-" if ref is None else _x(r["wall_s"] / ref)])
    return out


NOTE = ("* Flower's best setting for the task. wall s: whole process, start to exit (imports, data, "
        "training, final evaluation), median of the runs counted (range in brackets). runs: runs "
        "counted; 'k of n' when n - k were left out because other processes on the machine used "
        f"more than {DISTURBED_CORES} core during them. other load: the most CPU cores other "
        "processes used on average during a counted run. 'vs' columns: speed-ups, above 1 = faster "
        "than Flower's best / the hand loop. Last column: time now over the figure in the issue, "
        "above 1 = slower.")


def render_text(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in cells[0]) + "|")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lr,cnn", help="comma-separated: lr, cnn")
    parser.add_argument("--skip-flower", action="store_true", help="run Phalanx and the hand loop only")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each system (median wall time)")
    parser.add_argument("--flower-lr-cpus", default="default",
                        help="Flower client_resources num_cpus settings for lr (comma-separated)")
    parser.add_argument("--flower-cnn-cpus", default="default,1",
                        help="Flower client_resources num_cpus settings for cnn (comma-separated)")
    parser.add_argument("--phalanx-lr-strategies", default="auto,chunked",
                        help="Phalanx variants to run for lr, comma-separated, each "
                             "strategy[/wN][/tN] (N worker threads / N intra-op threads); plain "
                             "'auto' is the one checked against the targets, the others are extra rows")
    parser.add_argument("--phalanx-cnn-strategies", default="auto",
                        help="the same for cnn (e.g. auto,loop/w1: the loop in one thread of "
                             "control, torch's intra-op threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="set OMP_NUM_THREADS/MKL_NUM_THREADS for every run (default: torch's)")
    parser.add_argument("--wait-quiet", type=float, default=300.0,
                        help="before each run, wait up to this many seconds for other processes "
                             f"to use under {DISTURBED_CORES} core (0: never wait)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and Markdown")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in SPEED_TARGETS]
    if bad or not tasks:
        parser.error(f"--tasks: unknown task(s) {bad}; choose from lr, cnn")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.flower_lr_cpus = [c.strip() for c in args.flower_lr_cpus.split(",") if c.strip()]
    args.flower_cnn_cpus = [c.strip() for c in args.flower_cnn_cpus.split(",") if c.strip()]
    for name in ("phalanx_lr_strategies", "phalanx_cnn_strategies"):
        chosen = [s.strip() for s in getattr(args, name).split(",") if s.strip()]
        for spec in chosen:
            try:
                phalanx_variant(spec)
            except ValueError as e:
                parser.error(f"--{name.replace('_', '-')}: {e}")
            if spec.split("/")[0] not in ("auto", "loop", "vmap", "chunked"):
                parser.error(f"--{name.replace('_', '-')}: unknown strategy in {spec!r}")
        setattr(args, name, ["auto"] + [s for s in chosen if s != "auto"])

    flower_note = "skipped (--skip-flower)"
    flwr_version = None
    if not args.skip_flower:
        flwr_version, flower_note = ensure_flower_venv()
        print(flower_note, flush=True)
        if flwr_version is None:
            print("!! Flower is NOT part of this run: only Phalanx and the hand loop are measured, "
                  "and the targets against Flower cannot be checked.", flush=True)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONSTARTUP", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)

    print("CPU check ...", end=" ", flush=True)
    check_before = cpu_check()
    print(check_before, flush=True)
    source = git_state()
    log_dir = Path(tempfile.mkdtemp(prefix="flower_compare-"))
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    samples = []
    for rep in range(args.repeat):
        print(f"repetition {rep + 1}/{args.repeat} (logs: {log_dir})", flush=True)
        for task, label, cmd, run_env in plan(tasks, flwr_version is not None, args, env):
            if args.wait_quiet > 0:
                wait_quiet(args.wait_quiet)
            sample = run_once(label, task, cmd, run_env, log_dir, rep + 1)
            sample["repetition"] = rep + 1
            samples.append(sample)
    check_after = cpu_check()
    print(f"CPU check after: {check_after}", flush=True)

    rows, targets = summarize(samples, tasks)
    cells = table(rows)
    print()
    print(render_text(cells))
    print(NOTE)
    print()
    for t in targets:
        print(f"{t['status']:<11} {t['task']:>3}: {t['target']}: {t['detail']}")
    if not targets:
        print("no target could be checked")

    import torch  # the project venv's, for the record

    record = {
        "started": started, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "host": {"platform": platform.platform(), "python": platform.python_version(),
                 "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "threads_env": args.threads, "cpu_check_before": check_before,
                 "cpu_check_after": check_after},
        "flower": {"version": flwr_version, "note": flower_note}, "phalanx_source": source,
        "settings": _settings(), "reference_s": {f"{k[0]}/{k[1]}": v for k, v in REFERENCE_S.items()},
        "rows": rows, "targets": targets, "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flower_compare.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "flower_compare.md").write_text(_markdown(record, cells))
    print(f"\nwrote {args.out / 'flower_compare.json'} and {args.out / 'flower_compare.md'}")
    return 0


def git_state() -> str:
    """The commit the Phalanx side ran from, with the files under src/ that differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return (head or "unknown") + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def _settings() -> dict:
    sys.path[:0] = [str(TASK_DIR), str(ROOT / "src")]
    try:
        import common
    finally:
        del sys.path[:2]
    return {name: task.as_dict() for name, task in common.TASKS.items()}


def _markdown(record: dict, cells: list[list[str]]) -> str:
    host = record["host"]
    lines = [
        "# Phalanx vs Flower 1.42 vs a hand-written loop", "",
        (f"Run {record['started']} with `{record['command']}`; {host['platform']}, {host['cpus']} CPUs, "
        f"python {host['python']}, torch {host['torch']}; {record['flower']['note']}; Phalanx from "
        f"{record.get('phalanx_source', 'unknown')}."), "",
        (f"CPU check (two processes at once vs one; 2.0 = two free cores): before "
        f"{host['cpu_check_before']['parallel_speedup']}, after {host['cpu_check_after']['parallel_speedup']}."),
        "",
        render_markdown(cells), "",
        NOTE.replace("* ", "`*` ", 1), "",
        "## Targets", "",
    ]
    lines += [f"- **{t['status']}** `{t['task']}`: {t['target']}: {t['detail']}" for t in record["targets"]]
    lines += ["", "## Where the time goes (last run of each row, seconds inside the process)", ""]
    for r in record["rows"]:
        phases = r.get("phases_s")
        if phases:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if v is not None)
            how = [f"{k} {r[k]}" for k in ("strategy", "workers", "threads") if r.get(k) is not None]
            lines.append(f"- `{r['task']}` {r['system']}: {parts}" + (f" ({', '.join(how)})" if how else ""))
    lines += ["", "## Settings (the same on every side)", "",
              "| task | model | nodes | per round | rounds | epochs | batch | lr |",
              "|---|---|---|---|---|---|---|---|"]
    for name, s in record["settings"].items():
        lines.append(f"| {name} | {s['model']} | {s['nodes']} | {s['clients_per_round']} | {s['rounds']} | "
                     f"{s['epochs']} | {s['batch_size']} | {s['lr']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
