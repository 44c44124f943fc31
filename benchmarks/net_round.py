"""A deployed gossip round against the wire's limit: 8 and 16 node processes on loopback exchanging
a 1M-parameter model, and the same bytes sent with no protocol at all.

- **The network**: ``n`` ``phalanx node start`` processes (gossip, complete graph, encryption off
  as on loopback), the 784-1258-10 MLP (1,000,120 parameters, 4 MB as float32), one batch of 32
  samples per node per round so that training is a small part of the round, trimmed mean. The
  round time is the network's period: the median over rounds 2..R of the time between the last
  node finishing round r - 1 and the last node finishing round r. Each round a node trains,
  commits (SHA-256 of its model, a signed log entry), sends its model to n - 1 peers in signed
  envelopes, checks every model it receives against the signed commitment, logs it, aggregates
  and logs its record; its witnesses cosign its checkpoint in the background.
- **The limit**: the same ``n`` processes' worth of traffic with no protocol: ``n`` processes on
  127.0.0.1, each turns the same tensor into bytes (``tensor.numpy().tobytes()``), sends them to
  every other over TCP, length-prefixed, one thread per peer, and turns what it receives back
  into tensors; the time is from a common start until the last process has all ``n - 1``. The
  median of ``--repeats`` exchanges.

The ratio is round time / limit (the issue's target: within 3x). Both run on the same machine and
cores; the network's figure also carries what the protocol does beyond moving bytes (hashing,
signatures, the log on disk, the aggregation). ``--keep-updates`` keeps every received model's
bytes on disk for the audit's replay (the default of ``phalanx up``); the benchmark's default is
hashes only, which is what the comparison with bare bytes is about.

    .venv/bin/python benchmarks/net_round.py                 # 8 and 16 nodes
    .venv/bin/python benchmarks/net_round.py --nodes 8 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path

import torch

HIDDEN = 1258  # 784 * 1258 + 1258 + 1258 * 10 + 10 = 1,000,120 parameters
RESULTS = Path(__file__).resolve().parent / "results" / "net_round.json"


# ------------------------------------------------------------------ the limit: bytes, no protocol

def _recv_exact(conn: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = conn.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed early")
        got += k
    return buf


def _peer(i: int, n: int, d: int, ports: list[int], start, done, times) -> None:
    torch.set_num_threads(1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", ports[i]))
    server.listen(n)
    model = torch.randn(d, generator=torch.Generator().manual_seed(i))
    received: list[torch.Tensor] = []

    def accept_all() -> None:
        for _ in range(n - 1):
            conn, _ = server.accept()
            with conn:
                (size,) = struct.unpack(">Q", _recv_exact(conn, 8))
                received.append(torch.frombuffer(_recv_exact(conn, size), dtype=torch.float32))

    def send(j: int) -> None:
        data = model.numpy().tobytes()
        with socket.create_connection(("127.0.0.1", ports[j])) as s:
            s.sendall(struct.pack(">Q", len(data)) + data)

    start.wait()
    t0 = time.perf_counter()
    receiver = threading.Thread(target=accept_all)
    receiver.start()
    senders = [threading.Thread(target=send, args=(j,)) for j in range(n) if j != i]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    receiver.join()
    assert len(received) == n - 1 and all(r.numel() == d for r in received)
    times[i] = time.perf_counter() - t0
    server.close()
    done.wait()


def limit(n: int, d: int, repeats: int) -> list[float]:
    """Seconds for n processes to exchange d float32 values all-to-all over loopback TCP."""
    from phalanx.range.launcher import free_ports

    ctx = mp.get_context("fork")
    out = []
    for _ in range(repeats):
        ports = free_ports(n)
        start, done = ctx.Barrier(n + 1), ctx.Barrier(n + 1)
        times = ctx.Array("d", n)
        procs = [ctx.Process(target=_peer, args=(i, n, d, ports, start, done, times)) for i in range(n)]
        for p in procs:
            p.start()
        time.sleep(0.5)  # every listener is up
        wall = time.perf_counter()
        start.wait()
        done.wait()
        wall = time.perf_counter() - wall
        for p in procs:
            p.join()
        out.append(max(max(times), 0.0) or wall)
    return out


# ------------------------------------------------------------------ the network

TASK = {
    "name": "net-round", "seed": 0, "rounds": 6,
    "data": {"dataset": "fashion_mnist", "partition": "iid", "nodes": 8, "test_samples": 200},
    "model": {"name": "mlp", "hidden": HIDDEN},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "strategy": "loop"},
    "aggregator": "trimmed_mean", "topology": {"name": "gossip", "graph": "complete"},
    "ledger": {"enabled": False},
}


def network_round(n: int, rounds: int, keep_updates: bool, folder: Path) -> dict:
    from phalanx.range import launcher
    from phalanx.range.scenario import Scenario

    task = json.loads(json.dumps(TASK))
    task["rounds"] = rounds
    task["data"]["nodes"] = n
    task["data"]["train_samples"] = 32 * n
    scenario = Scenario.model_validate(task)
    planned = launcher.plan(scenario, folder, mode="gossip", timeout_s=60.0, encryption="off",
                            keep_updates=keep_updates)
    procs = {p.name: launcher.spawn(p) for p in planned}
    try:
        end = time.time() + 600
        while time.time() < end:
            sts = [launcher.node_status(p.url) for p in planned]
            if all(s is not None and s["done"] for s in sts):
                break
            if any(proc.poll() is not None for proc in procs.values()):
                raise RuntimeError("a node process exited: " + "; ".join(
                    (p.folder / "node.log").read_text()[-300:] for p in planned if procs[p.name].poll() is not None))
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{n} nodes did not finish {rounds} rounds in 600 s")
    finally:
        launcher.stop([p.pid for p in procs.values()], grace=5.0)
    per = [launcher._lines(p.folder / "metrics.jsonl") for p in planned]
    finished = {r: max(m[r - 1]["time"] for m in per) for r in range(1, rounds + 1)}
    periods = [finished[r] - finished[r - 1] for r in range(2, rounds + 1)]
    parts = {k: statistics.median(m[r][k] for m in per for r in range(1, rounds))
             for k in ("train_commit_s", "send_s", "wait_s", "aggregate_log_s")}
    received = [m[r]["received"] for m in per for r in range(rounds)]
    return {"round_s": statistics.median(periods), "periods_s": [round(x, 3) for x in periods],
            "parts_median_s": {k: round(v, 4) for k, v in parts.items()},
            "received_min": min(received), "received_expected": n - 1}


def add_ratios(row: dict) -> None:
    """The round against the limit, and the exchange alone (a round's median send + wait: what the
    protocol adds to moving the bytes, without training and the aggregation rule)."""
    parts = row["parts_median_s"]
    row["ratio"] = round(row["round_s"] / row["limit_s"], 2)
    row["exchange_s"] = round(parts["send_s"] + parts["wait_s"], 4)
    row["exchange_ratio"] = round(row["exchange_s"] / row["limit_s"], 2)
    row["within_3x"] = row["ratio"] <= 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep-updates", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    d = 784 * HIDDEN + HIDDEN + HIDDEN * 10 + 10
    rows = []
    for n in args.nodes:
        ref = limit(n, d, args.repeats)
        folder = Path(tempfile.mkdtemp(prefix=f"net_round_{n}_"))
        try:
            net = network_round(n, args.rounds, args.keep_updates, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row = {"nodes": n, "parameters": d, "bytes_per_model": 4 * d, "limit_s": round(statistics.median(ref), 4),
               "limit_runs_s": [round(x, 4) for x in ref], **net}
        add_ratios(row)
        rows.append(row)
        print(f"{n:>3} nodes: round {net['round_s']:.3f} s, limit (bytes over loopback, no protocol) "
              f"{row['limit_s']:.3f} s, ratio {row['ratio']:.2f}x; the exchange alone (send + wait) "
              f"{row['exchange_ratio']:.2f}x; parts {net['parts_median_s']}", flush=True)
    result = {"benchmark": "net_round", "keep_updates": args.keep_updates, "rounds": args.rounds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
