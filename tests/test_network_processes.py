"""Real node processes on loopback (127.0.0.1 only): the network runs with no coordinator, refuses
hostile messages while it keeps serving, survives crashes and its launcher, catches a lying star
server, gates versions, and loses no update under load.

Every process a test starts is killed by its ID when the test ends. The heavier fault and load
tests run when PHALANX_SLOW_TESTS=1 (.ci/run sets it).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import REPO

from phalanx.core.encoding import decode, encode
from phalanx.ledger import Ledger, StorageError
from phalanx.range import launcher
from phalanx.range.scenario import load_study

SLOW = pytest.mark.skipif(not os.environ.get("PHALANX_SLOW_TESTS"), reason="set PHALANX_SLOW_TESTS=1 (.ci/run does)")

TASK = """\
name: net
seed: 0
rounds: 3
data: {dataset: digits, nodes: 4, partition: iid, train_samples: 400, test_samples: 100}
model: logistic
train: {epochs: 1, batch_size: 16, lr: 0.1, strategy: loop}
aggregator: trimmed_mean
topology: {name: gossip, graph: complete}
ledger: {enabled: false}
"""


def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(TASK)
    return path


def scenario(tmp_path: Path, **overrides):
    _, _, runs = load_study(task_file(tmp_path), overrides)
    return runs[0]


class Net:
    """A planned network in ``out`` and the processes this test started (killed at the end)."""

    def __init__(self, out: Path, planned: list[launcher.Planned]):
        self.out, self.planned = out, planned
        self.procs: dict[str, subprocess.Popen] = {}

    def by_name(self, name: str) -> launcher.Planned:
        return next(p for p in self.planned if p.name == name)

    def edit(self, name: str, **fields) -> None:
        path = self.by_name(name).folder / "node.yaml"
        config = yaml.safe_load(path.read_text())
        config.update(fields)
        path.write_text(yaml.safe_dump(config))

    def start(self, *names: str) -> None:
        for p in self.planned:
            if not names or p.name in names:
                self.procs[p.name] = launcher.spawn(p)
        launcher.write_network(self.out, self.planned, self.procs, "net")

    def status(self, name: str) -> dict | None:
        return launcher.node_status(self.by_name(name).url)

    def wait(self, condition, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if condition():
                return
            time.sleep(0.3)
        tails = {n: (self.by_name(n).folder / "node.log").read_text(errors="replace")[-1500:] for n in self.procs}
        raise AssertionError(f"timed out waiting for {what}; node logs:\n" + "\n".join(
            f"--- {n}\n{t}" for n, t in tails.items()))

    def round_of(self, name: str) -> int:
        st = self.status(name)
        return -1 if st is None else st["round"]

    def all_done(self, names) -> bool:
        return all((st := self.status(n)) is not None and st["done"] for n in names)

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        launcher.stop([p.pid for p in self.procs.values()], grace=5.0)

    def events(self, name: str) -> list[dict]:
        return launcher._lines(self.by_name(name).folder / "events.jsonl")


@pytest.fixture
def network(tmp_path):
    nets: list[Net] = []

    def make(nodes: int = 4, rounds: int = 3, mode: str = "gossip", timeout: float = 6.0, **overrides) -> Net:
        overrides.setdefault("data", {})["nodes"] = nodes
        s = scenario(tmp_path, rounds=rounds, **overrides)
        out = tmp_path / f"net{len(nets)}"
        net = Net(out, launcher.plan(s, out, mode=mode, timeout_s=timeout, encryption="off"))
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.stop()


def phalanx(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phalanx.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def alive(pid: int) -> bool:
    return launcher._alive(pid)


# ------------------------------------------------------------------ phalanx up, status, down

def test_up_encrypted_runs_rounds_with_no_coordinator_then_status_and_down(tmp_path):
    out = tmp_path / "up"
    r = phalanx("up", "--nodes", "4", "--rounds", "3", "--task", str(task_file(tmp_path)), "--encryption", "on",
                "--timeout", "8", "--out", str(out), "--keep")
    pids = [n["pid"] for n in json.loads((out / "network.json").read_text())["nodes"]]
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "logs audited: 4/4 pass" in r.stderr
        summary = json.loads((out / "summary.json").read_text())
        run = summary["runs"][0]
        assert run["network"]["encryption"] == "on" and run["final"]["round"] == 3
        records = [json.loads(line) for line in (out / "net" / "metrics.jsonl").read_text().splitlines()]
        assert [m["round"] for m in records] == [1, 2, 3] and all(m["availability"] == 1.0 for m in records)
        assert (out / "report.html").exists() and "real processes" in (out / "report.html").read_text()
        for folder in (out / "nodes").iterdir():
            assert yaml.safe_load((folder / "node.yaml").read_text())["encryption"] == "on"
        st = phalanx("status", "--out", str(out), timeout=60)
        assert st.returncode == 0 and [line.split()[1] for line in st.stdout.splitlines()[1:]] == ["yes"] * 4
        assert st.stdout.count("3/3") == 4
        snapshot = json.loads((out / "status.json").read_text())  # what the dashboard reads
        assert [n["name"] for n in snapshot["nodes"]] == ["node0", "node1", "node2", "node3"]
        ids = {n["id"] for n in snapshot["nodes"]}
        assert all(set(n["peers"]) == ids - {n["id"]} and n["up"] for n in snapshot["nodes"])
        assert sum(n["role"] == "validator" for n in snapshot["nodes"]) == 4
        audit = phalanx("audit", str(out / "nodes" / "node0" / "ledger.db"), timeout=120)
        assert audit.returncode == 0 and audit.stdout.startswith("ok:"), audit.stdout + audit.stderr
    finally:
        down = phalanx("down", "--out", str(out), timeout=60)
    assert down.returncode == 0 and "stopped 4" in down.stdout
    assert not any(alive(p) for p in pids)
    st = phalanx("status", "--out", str(out), timeout=60)
    assert [line.split()[1] for line in st.stdout.splitlines()[1:]] == ["no"] * 4


def test_bad_flags_are_one_line_errors(tmp_path):
    r = phalanx("up", "--mode", "ring", "--out", str(tmp_path / "x"), timeout=60)
    assert r.returncode == 2 and "--mode 'ring'" in r.stderr and "Traceback" not in r.stderr
    r = phalanx("up", "--malicious", "2", "--task", str(task_file(tmp_path)), "--out", str(tmp_path / "x"),
                timeout=60)
    assert r.returncode == 2 and "--malicious needs --attack" in r.stderr
    r = phalanx("status", "--out", str(tmp_path / "nowhere"), timeout=60)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = phalanx("propose", "launch", "--out", str(tmp_path / "nowhere"), timeout=60)
    assert r.returncode == 2 and "is not one of admit" in r.stderr and "Traceback" not in r.stderr
    r = phalanx("node", "start", str(tmp_path / "nowhere"), timeout=60)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_node_init_makes_an_identity_and_never_overwrites_it(tmp_path):
    r = phalanx("node", "init", str(tmp_path / "a"), "--port", "9001", timeout=60)
    assert r.returncode == 0, r.stderr
    keys = json.loads((tmp_path / "a" / "node.keys").read_text())
    import hashlib

    from phalanx.core.keys import SigningKey

    assert hashlib.sha256(SigningKey(bytes.fromhex(keys["identity"])).public.raw).hexdigest() == keys["node"]
    assert f"node ID   {keys['node']}" in r.stdout
    again = phalanx("node", "init", str(tmp_path / "a"), "--port", "9001", timeout=60)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert json.loads((tmp_path / "a" / "node.keys").read_text()) == keys


def test_a_node_keeps_its_log_in_postgresql(network, pg_url):
    net = network(nodes=2, rounds=2, timeout=6.0)
    net.edit("node0", ledger=pg_url)
    net.start()
    net.wait(lambda: net.all_done(["node0", "node1"]), 240, "both nodes to finish")
    net.stop()
    assert not (net.by_name("node0").folder / "ledger.db").exists()
    r = phalanx("audit", pg_url, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr
    with Ledger.open(pg_url, readonly=True) as ledger:
        rounds = [e.body.round for _, e in ledger.entries() if e.type == "aggregate_record"]
    assert rounds == [0, 1, 2]


def test_a_newcomer_joins_only_with_the_admission_policys_proof(network):
    from phalanx.core.encoding import encode
    from phalanx.network.config import NodeKeys
    from phalanx.range.network import init_node

    net = network(nodes=2, rounds=400, timeout=3.0)
    genesis_path = net.out / "genesis.yaml"
    genesis = yaml.safe_load(genesis_path.read_text())
    genesis["admission"] = {"name": "proof_of_work", "bits": 16}
    genesis_path.write_text(yaml.safe_dump(genesis, sort_keys=False))
    node0 = next(m for m in genesis["members"] if m["name"] == "node0")
    bootstrap = f"{node0['url']}#{node0['node']}#{node0['xk']}"
    ports = launcher.free_ports(2)
    newcomers = []
    for name, port in zip(("worker", "cheat"), ports):
        folder = net.out / "nodes" / name
        keys = init_node(folder, name, port)
        config = yaml.safe_load((folder / "node.yaml").read_text())
        config.update(genesis=str(genesis_path.resolve()), peers=[bootstrap], encryption="off")
        if name == "cheat":  # claims a proof of work it never did
            config["admission_evidence"] = encode({"kind": "proof_of_work", "evidence": bytes(8)}).hex()
        (folder / "node.yaml").write_text(yaml.safe_dump(config))
        p = launcher.Planned(name, folder, f"http://127.0.0.1:{port}", False, "trainer", -1, keys.node.hex())
        net.planned.append(p)
        newcomers.append((p, NodeKeys.read(folder)))
    net.start()

    def registered_in_node0() -> set[bytes]:
        try:  # node0 may be creating its log right now
            with Ledger.open(str(net.by_name("node0").folder / "ledger.db"), readonly=True) as ledger:
                return {e.node_id for _, e in ledger.entries() if e.type == "node_registration"}
        except StorageError:
            return set()

    worker, cheat = newcomers[0][1].node, newcomers[1][1].node
    net.wait(lambda: worker in registered_in_node0(), 180, "the worker to be admitted")
    evidence = net.by_name("node0").folder / "evidence.jsonl"
    net.wait(lambda: evidence.exists() and "proof of work does not solve" in evidence.read_text(), 120,
             "the cheat to be refused")
    assert cheat not in registered_in_node0()
    with Ledger.open(str(net.by_name("node0").folder / "ledger.db"), readonly=True) as ledger:
        kinds = {e.node_id: e.body.admission.kind for _, e in ledger.entries() if e.type == "node_registration"}
    assert kinds[worker] == "proof_of_work" and kinds[bytes.fromhex(node0["node"])] == "genesis"
    refusal = [json.loads(x) for x in evidence.read_text().splitlines() if "proof of work" in x][0]
    assert refusal["status"] == 403 and refusal["sender"] == cheat.hex()


# ------------------------------------------------------------------ hostile messages

def test_hostile_messages_are_refused_and_logged_while_the_node_keeps_serving(network):
    from phalanx.core.keys import SigningKey
    from phalanx.ledger import KeyRevocation, rotate_key, sign_entry
    from phalanx.network.client import PeerRefused, Transport
    from phalanx.network.config import NodeKeys, load_genesis
    from phalanx.network.envelope import Fork, Identity, seal
    from phalanx.network.messages import make, read
    from phalanx.network.peers import Peer

    net = network(nodes=2, rounds=200, timeout=3.0)
    net.start("node0")  # node1 never starts: the test speaks with its keys
    net.wait(lambda: net.status("node0") is not None, 120, "node0 to serve")
    genesis = load_genesis(net.out / "genesis.yaml")
    target = genesis.members[0]
    url = target.url
    peer = Peer(node=bytes.fromhex(target.node), url=url, xk=bytes.fromhex(target.xk))
    keys = NodeKeys.read(net.by_name("node1").folder)
    me = Identity(keys.node, keys.identity, keys.xkey)
    st = net.status("node0")
    fork = Fork(genesis.protocol, bytes.fromhex(st["fork"]["hash"]), st["fork"]["next"])
    t = Transport(lambda: me, lambda: fork, encryption="on")

    def post(endpoint: str, data: bytes) -> httpx.Response:
        return httpx.post(f"{url}/v1/{endpoint}", content=data, timeout=10)

    seq_body = make("empty")
    # an unknown sender (node1 has not handshaken yet) is refused
    r = post("seq", seal(me, peer.node, "seq", seq_body, fork))
    assert r.status_code == 401 and "unknown sender" in r.text
    # the handshake registers node1 in node0's log; then it may talk
    hello = {"network": genesis.network, "genesis": genesis.digest(), "software": "0.1.0", "proto": 1,
             "url": "http://127.0.0.1:9", "roles": ["trainer", "witness"], "round": 0,
             "log": keys.log.public.raw.hex(), "witness": keys.witness.public.raw.hex(), "entries": [], "seq": 0,
             "mode": "gossip"}
    from phalanx.ledger import Admission, NodeRegistration

    reg = NodeRegistration(software="phalanx-0.1.0", admission=Admission(kind="genesis"), roles=["trainer", "witness"])
    hello["entries"] = [sign_entry(reg, keys.identity, 0, genesis.origin(peer.node)).encoding]
    read("hello", t.call(peer, "handshake", make("hello", **hello)), 1 << 20)
    assert read("seq_reply", t.call(peer, "seq", seq_body), 1024)["seq"] == 1
    # replayed
    good = seal(me, peer.node, "seq", seq_body, fork)
    assert post("seq", good).status_code == 200
    r = post("seq", good)
    assert r.status_code == 409 and "replayed" in r.text
    # forged: the signature zeroed
    (n,) = struct.unpack(">I", good[:4])
    outer = decode(good[4:4 + n])
    outer["sig"] = bytes(64)
    forged = encode(outer)
    r = post("seq", struct.pack(">I", len(forged)) + forged)
    assert r.status_code == 401 and r.text.startswith("forged")
    # signed by another key that claims node1's ID
    liar = Identity(keys.node, SigningKey.generate(), keys.xkey)
    r = post("seq", seal(liar, peer.node, "seq", seq_body, fork))
    assert r.status_code == 401 and "current key" in r.text
    # misdirected: to another node, to another endpoint
    r = post("seq", seal(me, keys.node, "seq", seq_body, fork))
    assert r.status_code == 421 and "meant for node" in r.text
    r = post("seq", seal(me, peer.node, "submit", seq_body, fork))
    assert r.status_code == 421 and "endpoint 'submit'" in r.text
    # oversized: refused from its declared length, before it is read
    r = post("update", b"\0" * (65 << 20))
    assert r.status_code == 413
    # malformed: garbage, a good envelope with a body of the wrong shape, an unknown endpoint
    assert post("update", b"\x00\x00\x00\x05hello").status_code == 400
    r = post("update", seal(me, peer.node, "update", encode({"round": "x"}), fork))
    assert r.status_code == 400 and "malformed update body" in r.text
    assert post("nothing", good).status_code == 404
    # the node kept serving through all of it, and logged each refusal as evidence
    assert read("seq_reply", t.call(peer, "seq", seq_body), 1024)["seq"] == 1
    lines = [json.loads(x) for x in (net.by_name("node0").folder / "evidence.jsonl").read_text().splitlines()]
    assert {x["status"] for x in lines} >= {400, 401, 404, 409, 413, 421}
    assert all(x["reason"] for x in lines)
    refused = net.status("node0")["refused"]
    assert refused["409"] >= 1 and refused["421"] >= 2

    # key rotation is a log entry, and the node honours it: the old key is refused afterwards
    new = SigningKey.generate()
    rotation = rotate_key(keys.identity, new, 1, genesis.origin(peer.node))
    assert read("submit_reply", t.call(peer, "submit", make("submit", entry=rotation.encoding)), 1024)["index"] > 0
    with pytest.raises(PeerRefused) as e:
        t.call(peer, "seq", seq_body)  # still signing with the rotated-away key
    assert e.value.status == 401 and "rotated away" in e.value.reason
    me = Identity(keys.node, new, keys.xkey)
    assert read("seq_reply", t.call(peer, "seq", seq_body), 1024)["seq"] == 0  # sequence numbers are per key
    # revocation: the node revokes its own key; from then on everything it sends is refused
    revoke = sign_entry(KeyRevocation(node=keys.node, reason="key lost"), new, 0, genesis.origin(peer.node))
    t.call(peer, "submit", make("submit", entry=revoke.encoding))
    with pytest.raises(PeerRefused) as e:
        t.call(peer, "seq", seq_body)
    assert e.value.status == 403 and "revoked" in e.value.reason
    t.close()
    assert net.status("node0") is not None
    net.stop()
    with Ledger.open(str(net.by_name("node0").folder / "ledger.db"), readonly=True) as ledger:
        types = [e.type for _, e in ledger.entries()]
    assert "key_rotation" in types and "key_revocation" in types


# ------------------------------------------------------------------ crashes (slow)

@SLOW
def test_gossip_survives_kill_9_of_a_third_and_a_restarted_node_catches_up(network):
    rounds = 40  # rounds here take well under a second: room to crash, go on and catch up
    net = network(nodes=6, rounds=rounds, timeout=4.0)
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: all(net.round_of(n) >= 2 for n in names), 240, "round 2 everywhere")
    victims, rest = names[:2], names[2:]
    at = max(net.round_of(n) for n in rest)
    for v in victims:
        net.kill9(v)
    net.wait(lambda: all(net.round_of(n) >= min(at + 2, rounds) for n in rest), 120,
             "the rest to go on past the crash")
    net.start(victims[0])
    net.wait(lambda: net.all_done(rest + victims[:1]), 240, "every live node to finish")
    events = net.events(victims[0])
    restarts = [e for e in events if e["kind"] == "restart"]
    catchups = [e for e in events if e["kind"] == "catchup" and "consistent with size" in e["text"]]
    assert restarts and catchups, events[-10:]
    net.stop()
    with Ledger.open(str(net.by_name(victims[0]).folder / "ledger.db"), readonly=True) as ledger:
        records = [e.body for _, e in ledger.entries() if e.type == "aggregate_record" and e.body.rule == "catchup"]
    assert records and records[0].params["size"] > 0
    for n in names:
        r = phalanx("audit", str(net.by_name(n).folder / "ledger.db"), timeout=120)
        assert r.returncode == 0, (n, r.stdout, r.stderr)


@SLOW
def test_killing_the_launcher_mid_round_leaves_the_network_running(tmp_path):
    out = tmp_path / "up"
    launcher_proc = subprocess.Popen(
        [sys.executable, "-m", "phalanx.cli", "up", "--nodes", "4", "--rounds", "12", "--task",
         str(task_file(tmp_path)), "--timeout", "6", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    pids: list[int] = []
    try:
        end = time.time() + 240
        nodes = []
        while time.time() < end:
            if (out / "network.json").exists():
                nodes = json.loads((out / "network.json").read_text())["nodes"]
                sts = [launcher.node_status(n["url"]) for n in nodes]
                if all(s is not None and s["round"] >= 1 for s in sts):
                    break
            time.sleep(0.3)
        pids = [n["pid"] for n in nodes]
        os.kill(launcher_proc.pid, signal.SIGKILL)
        launcher_proc.wait(10)
        end = time.time() + 240
        while time.time() < end:
            sts = [launcher.node_status(n["url"]) for n in nodes]
            if all(s is not None and s["done"] for s in sts):
                break
            time.sleep(0.5)
        assert all(s is not None and s["round"] == 12 for s in sts), sts
        assert all(alive(p) for p in pids)
    finally:
        if launcher_proc.poll() is None:
            os.kill(launcher_proc.pid, signal.SIGKILL)
        launcher.stop(pids, grace=5.0)


# ------------------------------------------------------------------ a lying star server (slow)

@SLOW
def test_star_server_showing_two_views_is_caught_and_its_failure_stops_the_star(network):
    net = network(nodes=4, rounds=30, mode="star", timeout=3.0)
    net.edit("server", server_behaviour="split_view")
    net.start()
    trainers = [p.name for p in net.planned if p.role == "trainer"]

    def caught() -> bool:
        return any((net.by_name(n).folder / "evidence").exists()
                   and any((net.by_name(n).folder / "evidence").glob("split_view-*.txt")) for n in trainers)

    net.wait(caught, 240, "a node to catch the split view")
    evidence = next(f for n in trainers for f in (net.by_name(n).folder / "evidence").glob("split_view-*.txt"))
    from phalanx.ledger.equivocation import Equivocation, verify_equivocation
    from phalanx.network.config import load_genesis

    genesis = load_genesis(net.out / "genesis.yaml")
    pair = Equivocation.from_json(evidence.read_text())
    verify_equivocation(pair, [genesis.log_verifier(genesis.server())])  # two roots, one key, one size
    # the centralized baseline's single point of failure: without its server no node learns
    net.kill9("server")
    before = {n: net.round_of(n) for n in trainers}
    net.wait(lambda: all(net.round_of(n) >= before[n] + 1 for n in trainers), 120, "the rounds to time out")
    metrics = launcher._lines(net.by_name(trainers[0]).folder / "metrics.jsonl")
    assert metrics[-1]["availability"] == 0.0 and metrics[-1]["received"] == 0


# ------------------------------------------------------------------ versions (slow)

@SLOW
def test_an_old_node_is_refused_and_a_stale_node_halts_at_activation(network):
    net = network(nodes=5, rounds=2000, timeout=3.0)  # stopped long before: rounds here take ~0.1 s
    for p in net.planned:
        net.edit(p.name, software="0.2.0")
    net.edit("node4", software="0.0.9")  # below the genesis minimum 0.1.0: every peer refuses it
    net.edit("node3", software="0.1.0")  # fine today, stale once 0.2.0 is required
    net.start()
    live = ["node0", "node1", "node2", "node3"]
    net.wait(lambda: all(net.round_of(n) >= 1 for n in live), 240, "round 1")
    net.procs["node4"].wait(120)
    assert net.procs["node4"].returncode == 3
    log4 = (net.by_name("node4").folder / "node.log").read_text()
    assert "every peer refused this node" in log4 and "software 0.0.9 is below the minimum 0.1.0" in log4
    at = max(net.round_of(n) for n in live) + 150  # time to log the proposal and 4 votes in 4 logs
    r = phalanx("propose", "min_version", "--param", "software=0.2.0", "--param", "protocol=1", "--param",
                f"at={at}", "--deadline", str(at), "--out", str(net.out), timeout=120)
    assert r.returncode == 0 and r.stdout.count("proposal at entry") == 4, r.stdout + r.stderr
    net.procs["node3"].wait(240)
    assert net.procs["node3"].returncode == 3
    log3 = (net.by_name("node3").folder / "node.log").read_text()
    assert f"halting at round {at}" in log3 and "below the minimum 0.2.0" in log3 and "upgrade" in log3
    net.wait(lambda: all(net.round_of(n) >= at + 1 for n in live[:3]), 120, "the upgraded nodes to go on")
    events = net.events("node0")
    assert any(e["kind"] == "governance" and "min_version" in e["text"] for e in events)
    # restarted on its old software, the stale node is refused in the handshake (426)
    net.start("node3")
    net.procs["node3"].wait(120)
    assert net.procs["node3"].returncode == 3
    evidence = (net.by_name("node0").folder / "evidence.jsonl").read_text()
    assert "426" in evidence or "software 0.1.0 is below the minimum 0.2.0" in evidence


@SLOW
def test_a_voted_quarantine_shuts_a_node_out_from_its_round(network):
    net = network(nodes=4, rounds=2000, timeout=3.0)  # stopped long before: rounds here take ~0.1 s
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: all(net.round_of(n) >= 1 for n in names), 240, "round 1")
    target = net.by_name("node3").node
    at = max(net.round_of(n) for n in names) + 150
    r = phalanx("propose", "quarantine", "--param", f"node={target}", "--param", "evidence=1", "--param",
                f"at={at}", "--deadline", str(at), "--out", str(net.out), timeout=120)
    assert r.returncode == 0 and r.stdout.count("proposal at entry") == 4, r.stdout + r.stderr
    net.wait(lambda: all(net.round_of(n) >= at + 3 for n in names[:3]), 240, "rounds past the activation")
    net.stop()
    for name in names[:3]:
        with Ledger.open(str(net.by_name(name).folder / "ledger.db"), readonly=True) as ledger:
            entries = list(ledger.entries())
        quarantines = [e.body for _, e in entries if e.type == "quarantine"]
        assert quarantines and quarantines[0].node.hex() == target and quarantines[0].round == at, name
        assert quarantines[0].evidence == [1]
        senders = {e.body.round: set() for _, e in entries if e.type == "update_commitment"}
        for _, e in entries:
            if e.type == "update_commitment":
                senders[e.body.round].add(e.node_id.hex())
        assert target in senders[at - 1] and all(target not in senders[r] for r in range(at, at + 3)), name
    evidence = (net.by_name("node0").folder / "evidence.jsonl").read_text()
    assert f"is quarantined since round {at}" in evidence


# ------------------------------------------------------------------ load (slow)

@SLOW
def test_load_no_update_is_lost_or_duplicated(network):
    n, rounds = 8, 10
    net = network(nodes=n, rounds=rounds, timeout=15.0)
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: net.all_done(names), 600, "every node to finish")
    net.stop()
    for name in names:
        with Ledger.open(str(net.by_name(name).folder / "ledger.db"), readonly=True) as ledger:
            entries = list(ledger.entries())
        node_of = {}
        per_round: dict[int, list[bytes]] = {}
        for _, e in entries:
            if e.type == "node_registration":
                node_of[e.key] = e.node_id
            if e.type == "update_commitment":
                per_round.setdefault(e.body.round, []).append(e.node_id)
        assert sorted(per_round) == list(range(1, rounds + 1)), name
        for r, senders in per_round.items():
            assert len(senders) == n and len(set(senders)) == n, (name, r, len(senders))
        records = [e.body for _, e in entries if e.type == "aggregate_record" and e.body.rule != "initial"
                   and e.key == entries[0][1].key]
        assert [len(rec.inputs) for rec in records] == [n] * rounds, name
