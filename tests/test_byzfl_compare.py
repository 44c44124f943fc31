"""Our rules agree with ByzFL 0.0.11's on the benchmark's input (benchmarks/byzfl_compare.py).

ByzFL lives in the benchmark's own environment, ``benchmarks/.venv-byzfl`` (created by
``bash benchmarks/byzfl_setup.sh``); the default environment, CI's included, does not have it, so
the test that needs it is skipped there. It runs the benchmark itself, on a tiny input, in that
environment's python, and reads its JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / "benchmarks" / ".venv-byzfl" / "bin" / "python"
SCRIPT = ROOT / "benchmarks" / "byzfl_compare.py"

#: the rules and pre-aggregators both libraries have (Bulyan is timed on our side only)
SHARED = {"mean", "median", "trimmed_mean", "geometric_median", "krum", "multi_krum",
          "centered_clipping", "mda", "clipping", "arc", "nnm", "bucketing"}


def _byzfl_missing() -> str | None:
    if not VENV_PYTHON.exists():
        return f"{VENV_PYTHON.relative_to(ROOT)} is absent (bash benchmarks/byzfl_setup.sh creates it)"
    probe = subprocess.run([str(VENV_PYTHON), "-c", ("import importlib.util as u; "
                            "assert u.find_spec('byzfl')")], capture_output=True, check=False)
    return None if probe.returncode == 0 else "byzfl is not installed in benchmarks/.venv-byzfl"


needs_byzfl = pytest.mark.skipif(_byzfl_missing() is not None, reason=str(_byzfl_missing()))


def run_benchmark(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "byzfl_compare.json"
    done = subprocess.run([str(VENV_PYTHON), str(SCRIPT), "--out", str(out), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


@needs_byzfl
def test_every_shared_rule_agrees_with_byzfl_on_the_same_input(tmp_path):
    # n = 23, f = 5: Bulyan's n >= 4f + 3 holds exactly; MDA runs at f = 2 (253 subsets)
    record = run_benchmark(tmp_path, "--n", "23", "--f", "5", "--d", "300", "--reps", "1")

    rows = {r["rule"]: r for r in record["rows"]}
    compared = {name for name, r in rows.items() if r["byzfl_ms"] is not None}
    assert compared == SHARED
    for name in sorted(SHARED):
        r = rows[name]
        assert r["problems"] == [], (name, r["problems"])
        assert r["agree"] is True and r["rel_err"] <= 1e-5, (name, r["rel_err"])
    assert rows["mda"]["f"] == 2
    assert rows["bulyan"]["phalanx_ms"] is not None and rows["bulyan"]["byzfl_ms"] is None


def test_agreement_is_the_largest_difference_over_the_largest_reference_value():
    # rel_err = max |ours - ref| / max |ref|: here 0.002 / 4
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import byzfl_compare
    finally:
        sys.path.pop(0)
    import torch

    ref = torch.tensor([[1.0, -4.0], [2.0, 0.0]], dtype=torch.float64)
    assert byzfl_compare.rel_err(ref.clone(), ref) == 0.0
    assert byzfl_compare.rel_err(ref + torch.tensor([[0.0, 0.002]], dtype=torch.float64), ref) == pytest.approx(5e-4)
    assert byzfl_compare.rel_err(ref[:1], ref) == float("inf")  # shapes differ
