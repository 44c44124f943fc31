"""What the dashboard's tests share: a small finished study with a ledger (built once per
session, in this process), a dashboard served on a free loopback port, and Debian's Chromium
driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

#: A star under a Sybil swarm (screens, reputation, quarantine) and a gossip ring with two
#: sign-flippers: every role, reputation, quarantine decisions, rejected rows, and two ledgers.
SMALL_STUDY = """\
study: small
study_description: a star under a Sybil swarm, and a gossip ring with two attackers
seed: 0
rounds: 6
data: {dataset: digits, partition: {name: dirichlet, alpha: 0.5}, nodes: 10, train_samples: 400, test_samples: 100}
model: logistic
train: {epochs: 1, batch_size: 20, lr: 0.05, strategy: loop}
aggregator: mean
runs:
  - name: star, sybils
    topology: {name: star}
    screens: [{name: norm_bound, bound: 5.0}, reputation]
    quarantine: {rounds: 2}
    adversary:
      data_attack: {name: label_flip, source: 1, target: 7}
      update_attack: {name: sybil, mode: identical}
      sybils: {count: 3, arrival: 2, data: {classes: [1], samples: 100}}
  - name: gossip
    topology: {name: gossip, graph: {name: ring}}
    adversary: {malicious: 2, update_attack: {name: sign_flip, scale: 2.0}}
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

_BUILT: dict[str, Path] = {}


def small_study() -> Path:
    """The finished small study's output folder (run once per session; callers copy it to change it)."""
    if "study" not in _BUILT:
        from phalanx.range.runner import run_study
        from phalanx.range.scenario import load_study

        root = Path(tempfile.mkdtemp(prefix="phalanx-dash-"))
        (root / "small.yaml").write_text(SMALL_STUDY)
        study, description, runs = load_study(root / "small.yaml", {}, None)
        run_study(study, description, runs, root / "out", progress=False)
        _BUILT["study"] = root / "out"
    return _BUILT["study"]


def copy_study(dest: Path) -> Path:
    shutil.copytree(small_study(), dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The dashboard app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, folder: Path, live: bool = False):
        import uvicorn

        from phalanx.dashboard.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(folder, live=live), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def browser_or_skip():
    """A Playwright Chromium (Debian's), or a skip; with PHALANX_REQUIRE_BROWSER=1 (CI) a failure."""
    required = os.environ.get("PHALANX_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        if required:
            pytest.fail(f"PHALANX_REQUIRE_BROWSER=1 but playwright is missing ({e})")
        pytest.skip("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        if required:
            pytest.fail(f"PHALANX_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    return sync_playwright


def launch(playwright, viewport=(1280, 1600)):
    """Chromium with a fresh profile, no network but loopback (the flags that work on these machines)."""
    return playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="phalanx-chromium-"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
        headless=True, viewport={"width": viewport[0], "height": viewport[1]})
