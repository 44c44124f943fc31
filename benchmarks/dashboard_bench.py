"""The dashboard in a real browser with 1,000 nodes and 100 rounds: how long one update takes.

A synthetic study folder (no training: the dashboard only reads what a run writes) holds one
gossip run of 1,000 nodes over a random 8-regular graph (4,000 edges), 100 of them malicious,
some quarantined, each with a reputation, and 100 rounds of metrics. The dashboard serves it on
loopback; Debian's Chromium, driven by Playwright, loads the page. Then, timed in the page with
``performance.now()``:

- **full update**: ``phalanxRefresh(true)``: fetch the overview, all 100 rounds of metrics and
  the network again, lay out and draw the 1,000 nodes and 4,000 edges on the canvas, draw the
  five charts (what the page does when a study changes under it);
- **live update**: a new round is appended to metrics.jsonl and ``phalanxRefresh()`` fetches only
  the new line, the network, and redraws (what ``--live`` does once per finished round);
- **reference**: ``fetch`` and ``JSON.parse`` of the same three responses and nothing else: the
  floor any page showing this data pays. The ratio says what drawing adds to it.

The target (issue 9) is under 1 second per update. Medians of ``--repeat`` updates (default 15).

    .venv/bin/python benchmarks/dashboard_bench.py [--nodes 1000] [--rounds 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from dashboard_helpers import Served, launch  # noqa: E402


def synthetic_study(root: Path, nodes: int, rounds: int, seed: int = 0) -> Path:
    """A study folder as ``phalanx run`` writes it (summary.json, run/metrics.jsonl), no training."""
    rng = random.Random(seed)
    degree = 8
    edges = set()
    for i in range(nodes):  # a ring lattice of degree 8, rewired a little: 4,000 edges for 1,000 nodes
        for k in range(1, degree // 2 + 1):
            j = (i + k) % nodes if rng.random() > 0.1 else rng.randrange(nodes)
            if j != i:
                edges.add((min(i, j), max(i, j)))
    malicious = sorted(rng.sample(range(nodes), nodes // 10))
    quarantined = malicious[: len(malicious) // 2]
    run = {
        "name": "gossip, 1000 nodes", "topology": "gossip", "description": "synthetic", "config": {},
        "final": {"round": rounds, "accuracy": 0.8},
        "events": [], "partition": {"sizes": [rng.randrange(20, 80) for _ in range(nodes)], "label_histogram": [],
                                    "classes": []},
        "graph": {"nodes": nodes, "edges": [list(e) for e in sorted(edges)]},
        "evidence": {str(m): rng.randrange(1, 9) for m in malicious},
        "defense": "reputation -> trimmed_mean", "malicious": malicious,
        "guard": {"decisions": [{"round": 10 + i % 50, "node": m, "action": "quarantine", "reason": "low reputation",
                                 "votes": [0, 1, 2], "voters": [0, 1, 2, 3], "evidence": {}}
                                for i, m in enumerate(quarantined)],
                  "reputation": [round(rng.random() * (0.4 if i in malicious else 1.0), 4) for i in range(nodes)]},
    }
    out = root / "study"
    (out / "gossip-1000-nodes").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"study": "bench", "description": "1,000 nodes, 100 rounds",
                                                  "manifest": {}, "runs": [run]}))
    with (out / "gossip-1000-nodes" / "metrics.jsonl").open("w") as fh:
        for r in range(1, rounds + 1):
            fh.write(json.dumps(_round(r, rng)) + "\n")
    return out


def _round(r: int, rng: random.Random) -> dict:
    return {"round": r, "accuracy": 0.1 + 0.7 * (1 - 0.97 ** r), "accuracy_min": 0.05, "accuracy_max": 0.9,
            "attack_success": 0.3 * 0.98 ** r, "detect_f1": min(1.0, r / 40), "availability": 1.0,
            "epsilon": 0.05 * r, "loss": 2.0 * 0.98 ** r, "consensus_distance": 1 / r, "alive": 1000,
            "participants": 1000, "wall_time_s": rng.random()}


REFERENCE = """async () => {
  const t0 = performance.now();
  let bytes = 0;
  for (const path of ["/api/overview", "/api/runs/0/metrics?start=0", "/api/runs/0/network"]) {
    const text = await (await fetch(path)).text();
    bytes += text.length;
    JSON.parse(text);
  }
  return [performance.now() - t0, bytes];
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dashboard.json")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    folder = synthetic_study(Path(tempfile.mkdtemp(prefix="phalanx-dash-bench-")), args.nodes, args.rounds)
    served = Served(folder, live=True)
    metrics = folder / "gossip-1000-nodes" / "metrics.jsonl"
    rng = random.Random(1)
    try:
        with sync_playwright() as p:
            context = launch(p, viewport=(1280, 1000))
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(served.url + "/")
            page.wait_for_selector("#phalanx-dashboard[data-updates]", timeout=60_000)
            first_load = time.perf_counter() - t0
            assert page.locator("#net-canvas").get_attribute("data-nodes") == str(args.nodes + 0)
            full, live, reference, wall = [], [], [], []
            rounds = args.rounds
            for _ in range(args.repeat):
                t = time.perf_counter()
                page.evaluate("() => window.phalanxRefresh(true)")
                wall.append(time.perf_counter() - t)
                full.append(page.evaluate("() => window.phalanxStats.lastUpdateMs"))
                ref_ms, ref_bytes = page.evaluate(REFERENCE)
                reference.append(ref_ms)
                rounds += 1
                with metrics.open("a") as fh:
                    fh.write(json.dumps(_round(rounds, rng)) + "\n")
                page.evaluate("() => window.phalanxRefresh(false)")
                live.append(page.evaluate("() => window.phalanxStats.lastUpdateMs"))
            shown = page.inner_text("#status")
            context.close()
    finally:
        served.close()
    med = statistics.median
    result = {
        "nodes": args.nodes, "rounds": args.rounds,
        "edges": len(json.loads((folder / "summary.json").read_text())["runs"][0]["graph"]["edges"]),
        "repeat": args.repeat, "first_load_s": round(first_load, 3),
        "full_update_ms": round(med(full), 1), "full_update_wall_ms": round(1000 * med(wall), 1),
        "live_update_ms": round(med(live), 1), "reference_fetch_parse_ms": round(med(reference), 1),
        "reference_bytes": ref_bytes, "ratio_full_to_reference": round(med(full) / med(reference), 2),
        "target_ms": 1000, "status_line": shown,
        "browser": "Debian chromium (headless), Playwright", "machine": "2 shared CPU cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.nodes} nodes, {result['edges']} edges, {args.rounds} rounds: full update {result['full_update_ms']} ms "
          f"(median of {args.repeat}), live update {result['live_update_ms']} ms; reference (fetch + JSON.parse of the "
          f"same {ref_bytes} bytes) {result['reference_fetch_parse_ms']} ms; ratio {result['ratio_full_to_reference']}; "
          f"target < 1000 ms per update; first load {result['first_load_s']} s")


if __name__ == "__main__":
    main()
