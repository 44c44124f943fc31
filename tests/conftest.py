"""Shared fixtures: tiny synthetic shards, a study-file writer, and the ``phalanx`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from phalanx.train import Shards
from pg_server import ledger_location, pg_url, postgres_server  # noqa: F401  (the ledger's storage fixtures)

# The tests run tiny tensors on a small shared CPU, where intra-op threads cost far more than they
# give (a 16x64 linear layer: 8 ms with 2 threads under load, 0.01 ms with 1). One thread, here
# and in the subprocesses, keeps the suite fast; results do not depend on it.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

#: A tiny study that really runs on the bundled scikit-learn digits: star and gossip, 6 nodes.
TINY_STUDY = """\
study: tiny
study_description: two tiny runs on the digits
seed: 0
rounds: 3
data: {dataset: digits, nodes: 6, partition: iid, train_samples: 300, test_samples: 100}
model: logistic
train: {epochs: 1, batch_size: 16, lr: 0.1, strategy: loop}
aggregator: mean
runs:
  - name: star
    topology: {name: star}
  - name: gossip
    topology: {name: gossip, graph: {name: ring}}
"""


def synthetic_shards(
    sizes: Sequence[int],
    input_shape: tuple[int, ...] = (1, 2, 2),
    num_classes: int = 3,
    seed: int = 0,
    extra: int = 0,
) -> Shards:
    """Node ``i`` owns the next ``sizes[i]`` rows of a random pool (plus ``extra`` unowned rows)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes) + extra
    x = torch.randn(total, *input_shape, generator=g)
    y = torch.randint(0, num_classes, (total,), generator=g)
    parts, start = [], 0
    for s in sizes:
        parts.append(torch.arange(start, start + s))
        start += s
    return Shards.from_parts(x, y, parts)


@pytest.fixture
def make_shards() -> Callable[..., Shards]:
    return synthetic_shards


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """``write_yaml(text, name="study.yaml")``: a dedented YAML file in ``tmp_path``."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def cli_env(extra_paths: Sequence[Path] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *map(str, extra_paths)])
    env["COLUMNS"] = "200"
    env["OMP_NUM_THREADS"] = "1"
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx.cli", *args]


def start_cli(*args: str, cwd: Path | None = None, extra_paths: Sequence[Path] = ()) -> subprocess.Popen:
    """Start ``phalanx ARGS`` in a subprocess (several may run at once on the two cores)."""
    return subprocess.Popen(cli_command(*args), cwd=cwd or REPO, env=cli_env(extra_paths),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: str, cwd: Path | None = None, extra_paths: Sequence[Path] = ()):
    return finish(start_cli(*args, cwd=cwd, extra_paths=extra_paths))


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli("run", "file.yaml", ...)`` runs the real command with ``PYTHONPATH=src``."""
    return run_cli
