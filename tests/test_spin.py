"""The committee protocol's Promela model (``spin/committee.pml``) checked with SPIN.

Each case generates the verifier (``spin -a``), compiles it (``cc``) and runs it (``./pan``) in a
temporary directory, then asserts the verdict: agreement holds with one Byzantine validator of
four at quorum 3 and with two of seven at quorum 5; at quorum 2 SPIN finds the counterexample
(two values certified in one round) and its trail replays to it; a round whose first sequencer
has crashed (or equivocates) is decided after the rotation, and with more crashes than f it is
not (the liveness check can fail). Without ``spin`` or a C compiler the cases skip, unless
``PHALANX_REQUIRE_SPIN=1`` (``.ci/run`` sets it): then a missing tool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[1] / "spin" / "committee.pml"
SLOW = bool(os.environ.get("PHALANX_SLOW_TESTS"))


def _tools() -> tuple[str, str]:
    spin, cc = shutil.which("spin"), shutil.which("cc") or shutil.which("gcc")
    if spin and cc:
        return spin, cc
    reason = "spin is not installed (apt-get install spin)" if not spin else "no C compiler (cc/gcc)"
    if os.environ.get("PHALANX_REQUIRE_SPIN") == "1":
        pytest.fail(f"SPIN is required here (PHALANX_REQUIRE_SPIN=1) but {reason}")
    pytest.skip(reason)


def check(tmp_path: Path, defines: dict[str, int], live: bool = False) -> str:
    """Verify the model under ``defines``; return pan's report (raises if a step fails to run)."""
    spin, cc = _tools()
    model = tmp_path / "committee.pml"
    shutil.copy(MODEL, model)
    flags = [f"-D{k}={v}" for k, v in defines.items()] + (["-DLIVE=1"] if live else [])
    subprocess.run([spin, "-a", *flags, model.name], cwd=tmp_path, check=True, capture_output=True)
    # safety: assertions only (no cycle detection); liveness: acceptance cycles under weak fairness
    cflags = ["-DNFAIR=3"] if live else ["-DSAFETY"]
    subprocess.run([cc, "-O2", "-w", *cflags, "-o", "pan", "pan.c"], cwd=tmp_path, check=True)
    args = ["./pan", "-m100000"] + (["-a", "-f"] if live else [])
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600).stdout
    # a search cut short proves nothing, unless it stopped at the error it found
    assert errors(out) > 0 or "Search not completed" not in out, out
    return out


def errors(report: str) -> int:
    return int(re.search(r"errors: (\d+)", report).group(1))


def test_agreement_one_byzantine_of_four_at_quorum_3(tmp_path):
    report = check(tmp_path, {"N": 4, "Q": 3, "B": 1, "NV": 4 if SLOW else 3})
    assert errors(report) == 0, report
    assert int(re.search(r"(\d+) states, stored", report).group(1)) > 1000  # the search really ran


def test_quorum_2_of_four_lets_two_values_be_certified(tmp_path):
    report = check(tmp_path, {"N": 4, "Q": 2, "B": 1})
    assert errors(report) == 1 and "assertion violated" in report, report
    # the counterexample replays: at its end both values are decided
    spin, _ = _tools()
    trail = subprocess.run(
        [spin, "-t", "-g", "-DN=4", "-DQ=2", "-DB=1", "committee.pml"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout
    assert re.search(r"decided\[0\] = 1", trail) and re.search(r"decided\[1\] = 1", trail), trail


def test_agreement_two_byzantine_of_seven_at_quorum_5(tmp_path):
    assert errors(check(tmp_path, {"N": 7, "Q": 5, "B": 2, "NV": 2})) == 0


@pytest.mark.parametrize(
    "faults",
    [{"N": 4, "Q": 3, "B": 0, "C": 1}, {"N": 4, "Q": 3, "B": 1, "C": 0}, {"N": 7, "Q": 5, "B": 1, "C": 1}],
    ids=["crashed-sequencer-4", "equivocating-sequencer-4", "byzantine-and-crashed-7"],
)
def test_a_faulty_sequencer_is_rotated_and_the_round_certifies(tmp_path, faults):
    report = check(tmp_path, faults, live=True)
    assert "never claim         \t+ (live)" in report and "fairness enabled" in report, report
    assert errors(report) == 0, report


def test_more_crashes_than_f_stall_the_round_for_ever(tmp_path):
    report = check(tmp_path, {"N": 4, "Q": 3, "B": 0, "C": 2}, live=True)
    assert errors(report) == 1 and "acceptance cycle" in report, report
