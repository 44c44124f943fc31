"""Committee mode with real node processes on loopback: n = 4 validators (q = 3, f = 1) certify
every round with no coordinator; rounds go on with a validator killed (kill -9), and with the
launcher and the current sequencer killed mid-round; an equivocating sequencer gets at most one
of its conflicting proposals and checkpoints final and the pairs are kept; a censoring sequencer
is caught by its missed inclusion promise and rotated out; ``phalanx up --mode committee`` writes
the metrics, report and ledgers of a run, and the audit re-checks every round certificate.

Every process a test starts is killed by its ID when the test ends (the ``network`` fixture of
``test_network_processes``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO
from test_network_processes import SLOW, alive, network, phalanx, task_file  # noqa: F401 (network: a fixture)

from phalanx.core.keys import SigningKey, VerifyKey
from phalanx.engine.committee import Proposal, Signed, quorum
from phalanx.ledger import Ledger
from phalanx.network.config import load_genesis
from phalanx.range import launcher

COMMITTEE = {"name": "committee"}


def committee(network, rounds: int, timeout: float = 3.0, **topology):
    return network(nodes=4, rounds=rounds, mode="committee", timeout=timeout, topology={**COMMITTEE, **topology})


def ledger_of(net, name: str) -> list:
    with Ledger.open(str(net.by_name(name).folder / "ledger.db"), readonly=True) as ledger:
        return [e for _, e in ledger.entries()]


def certificates(entries) -> dict[int, bytes]:
    out = {}
    for e in entries:
        if e.type == "round_certificate":
            assert e.body.round not in out, f"two certificates for round {e.body.round} in one log"
            out[e.body.round] = e.body.value
    return out


def evidence(entries, kind: str) -> list:
    return [e.body for e in entries if e.type == "committee_evidence" and e.body.kind == kind]


def metrics(net, name: str) -> list[dict]:
    return launcher._lines(net.by_name(name).folder / "metrics.jsonl")


def audit_ok(path: Path) -> None:
    r = phalanx("audit", str(path), timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr


# ------------------------------------------------------------------ the audit's certificate check

def test_the_audit_rechecks_a_round_certificate_and_names_what_fails():
    import hashlib

    import torch

    from phalanx.aggregate import chain
    from phalanx.engine.committee import Recomputer, Validator
    from phalanx.engine.committee.ledger import certificate_entry, committee_origin
    from phalanx.engine.provenance.checks import EngineChecks

    log_origin = "phalanx.net/test/0123"
    origin = committee_origin(log_origin)
    assert origin == "phalanx.net/test/committee" and committee_origin("phalanx.sim/run") == "phalanx.sim/committee"
    signing = [SigningKey.derive("cmt-audit", i) for i in range(4)]
    public = [k.public for k in signing]
    rows = {hashlib.sha256(bytes([i])).digest(): torch.tensor([float(i), 1.0]) for i in range(4)}
    rc = Recomputer(rows, chain(["mean"]), f=1, round_=3)
    vals = [Validator(i, signing[i], public, origin, 3, rc) for i in range(4)]
    queue = list(vals[3].propose(sorted(rows)))
    while queue:
        s = queue.pop(0)
        for v in vals:
            if v.index != s.signer:
                queue.extend(v.receive(s))
    body = certificate_entry(vals[0].certificate, public)
    state = SimpleNamespace(current={k.node_id: k.raw for k in public})

    def check(b, origin_=log_origin, validators=4):
        engine = EngineChecks(origin=origin_)
        engine.index.roles = {k.node_id: ("trainer", "validator") for k in public[:validators]}
        return engine.committee(7, SimpleNamespace(type="round_certificate", body=b), state)

    assert check(body) is None
    forged = body.model_copy(update={"votes": [body.votes[1]] + body.votes[1:]})
    assert "does not verify" in check(forged)
    short = body.model_copy(update={"signers": body.signers[:2], "votes": body.votes[:2]})
    assert f"the quorum is {quorum(4)}" in check(short)
    assert "does not verify" in check(body, origin_="phalanx.net/other/0123")  # another committee's votes
    assert "origin was not given" in check(body, origin_=None)
    assert "not a validator" in check(body, validators=2)


def test_a_validator_relays_only_proposals_their_views_sequencer_signed():
    import hashlib

    import torch

    from phalanx.aggregate import chain
    from phalanx.engine.committee import Recomputer, Validator, sequencer, sign
    from phalanx.engine.node.committee import relayable

    origin = "phalanx.net/test/committee"
    signing = [SigningKey.derive("cmt-relay", i) for i in range(4)]
    public = [k.public for k in signing]
    rows = {hashlib.sha256(bytes([i])).digest(): torch.tensor([float(i), 1.0]) for i in range(4)}
    rc = Recomputer(rows, chain(["mean"]), f=1, round_=5)
    v = Validator(0, signing[0], public, origin, 5, rc)
    seq = sequencer(5, 0, list(range(4)))
    (genuine,) = [s for s in Validator(seq, signing[seq], public, origin, 5, rc).propose(sorted(rows))
                  if isinstance(s.statement, Proposal)]
    assert relayable(v, genuine)
    other = (seq + 1) % 4  # a validator, but not this view's sequencer
    assert not relayable(v, sign(genuine.statement, signing[other], other, origin))
    assert not relayable(v, Signed(genuine.statement, seq, bytes(64)))  # a forged signature
    assert not relayable(v, sign(genuine.statement, signing[seq], seq, "phalanx.net/other/committee"))
    later = Validator(0, signing[0], public, origin, 6, rc)
    assert not relayable(later, genuine)  # another round's


# ------------------------------------------------------------------ crashes

def test_rounds_certify_with_a_validator_killed_mid_run(network):
    rounds = 8
    net = committee(network, rounds)
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: all(net.round_of(n) >= 2 for n in names), 240, "round 2 everywhere")
    victim, rest = "node2", ["node0", "node1", "node3"]
    killed_at = max(net.round_of(n) for n in rest)
    net.kill9(victim)
    net.wait(lambda: net.all_done(rest), 180, "the other validators to finish")
    net.stop()
    certs = {n: certificates(ledger_of(net, n)) for n in rest}
    assert all(sorted(c) == list(range(1, rounds + 1)) for c in certs.values()), certs
    assert certs["node0"] == certs["node1"] == certs["node3"]  # one certified value per round
    later = [m for m in metrics(net, "node0") if m["round"] > killed_at + 1]
    assert later and all(m["certified"] and m["availability"] == 1.0 for m in later)
    # the dead validator's turns as sequencer were taken over by a view change
    turns = [m for m in later if load_genesis(net.out / "genesis.yaml").members[(m["round"]) % 4].name == victim]
    assert all(m["view"] >= 1 and m["sequencer"] != victim for m in turns)
    models = {m["round"]: m["model"] for m in metrics(net, "node0")}
    assert all({m["round"]: m["model"] for m in metrics(net, n)} == models for n in rest[1:])
    audit_ok(net.by_name("node1").folder / "ledger.db")


@SLOW
def test_rounds_certify_with_f_faults_counting_a_byzantine_validator(network):
    """n = 7 (q = 5, f = 2): one validator signs wrong digests throughout and another is killed
    mid-run; the five honest ones certify every round, and no certificate carries the Byzantine
    validator's vote."""
    rounds, n = 6, 7
    net = network(nodes=n, rounds=rounds, mode="committee", timeout=3.0,
                  topology={**COMMITTEE, "validators": n})
    net.edit("node1", committee_fault="wrong_hash")  # also round 1's view-0 sequencer
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: all(net.round_of(x) >= 2 for x in names), 300, "round 2 everywhere")
    net.kill9("node5")
    honest = ["node0", "node2", "node3", "node4", "node6"]
    net.wait(lambda: net.all_done(honest), 300, "the honest validators to finish")
    net.stop()
    genesis = load_genesis(net.out / "genesis.yaml")
    byzantine = bytes.fromhex(genesis.members[1].node)
    logs = {x: ledger_of(net, x) for x in honest}
    certs = {x: certificates(entries) for x, entries in logs.items()}
    assert all(sorted(c) == list(range(1, rounds + 1)) for c in certs.values()), certs
    assert all(c == certs["node0"] for c in certs.values())  # one certified value per round
    signers = [set(e.body.signers) for e in logs["node0"] if e.type == "round_certificate"]
    assert signers and all(byzantine not in s and len(s) >= quorum(n) for s in signers)
    first = metrics(net, "node0")[0]
    assert first["round"] == 1 and first["view"] >= 1 and first["sequencer"] != "node1"  # its proposal failed
    audit_ok(net.by_name("node3").folder / "ledger.db")


@SLOW
def test_killing_the_launcher_and_the_current_sequencer_leaves_the_committee_running(tmp_path):
    out = tmp_path / "up"
    rounds = 10
    launcher_proc = subprocess.Popen(
        [sys.executable, "-m", "phalanx.cli", "up", "--mode", "committee", "--nodes", "4", "--rounds", str(rounds),
         "--task", str(task_file(tmp_path)), "--timeout", "3", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    pids: list[int] = []
    try:
        end, nodes, sts = time.time() + 240, [], []
        while time.time() < end:
            if (out / "network.json").exists():
                nodes = json.loads((out / "network.json").read_text())["nodes"]
                sts = [launcher.node_status(n["url"]) for n in nodes]
                if all(s is not None and s["round"] >= 2 for s in sts):
                    break
            time.sleep(0.2)
        pids = [n["pid"] for n in nodes]
        st = launcher.node_status(nodes[0]["url"])
        seq = st["committee"]["sequencer"]  # of the round now open
        at = st["round"]
        victim = next(n for n in nodes if n["name"] == seq)
        os.kill(launcher_proc.pid, signal.SIGKILL)
        os.kill(victim["pid"], signal.SIGKILL)
        launcher_proc.wait(10)
        rest = [n for n in nodes if n is not victim]
        end = time.time() + 240
        while time.time() < end:
            sts = [launcher.node_status(n["url"]) for n in rest]
            if all(s is not None and s["done"] for s in sts):
                break
            time.sleep(0.5)
        assert all(s is not None and s["round"] == rounds for s in sts), sts
        assert all(alive(n["pid"]) for n in rest) and not alive(victim["pid"])
        for n in rest:
            ms = launcher._lines(Path(n["folder"]) / "metrics.jsonl")
            assert [m["round"] for m in ms] == list(range(1, rounds + 1))
            assert all(m["certified"] for m in ms if m["round"] > at), (n["name"], ms)
            assert any(m["sequencer"] != seq and m["view"] >= 1 for m in ms if m["round"] > at)
    finally:
        if launcher_proc.poll() is None:
            os.kill(launcher_proc.pid, signal.SIGKILL)
        launcher.stop(pids, grace=5.0)


# ------------------------------------------------------------------ Byzantine sequencers

def test_an_equivocating_sequencer_gets_at_most_one_of_its_pairs_final_and_the_pairs_are_kept(network):
    from phalanx.ledger import Policy
    from phalanx.ledger.equivocation import Equivocation, verify_equivocation
    from phalanx.ledger.policy import Group

    net = committee(network, rounds=3)
    net.edit("node1", committee_fault="equivocate")  # the sequencer of round 1's view 0
    net.start()
    honest = ["node0", "node2", "node3"]
    net.wait(lambda: net.all_done(honest), 180, "the honest validators to finish")
    net.stop()
    genesis = load_genesis(net.out / "genesis.yaml")
    culprit = genesis.members[1]
    keys = [VerifyKey(bytes.fromhex(m.key)) for m in genesis.members]
    origin = f"phalanx.net/{genesis.network}/committee"
    certs = {n: certificates(ledger_of(net, n)) for n in honest}
    assert certs["node0"] == certs["node2"] == certs["node3"] and sorted(certs["node0"]) == [1, 2, 3]
    for n in honest:
        (pair,) = [e for e in evidence(ledger_of(net, n), "equivocating_proposal") if e.round == 1]
        assert pair.node.hex() == culprit.node
        a, b = (Signed.decode(s) for s in pair.statements)
        assert isinstance(a.statement, Proposal) and isinstance(b.statement, Proposal)
        assert (a.statement.round, a.statement.view) == (b.statement.round, b.statement.view) == (1, 0)
        assert a.statement.value != b.statement.value and a.signer == b.signer == 1
        for s in (a, b):
            keys[1].verify(s.signature, s.statement.message(origin))
        # at most one of them was certified. Which, if any, depends on timing: a relayed copy that
        # reaches a third validator first gives one half its q echoes, and a value prepared in view
        # 0 is certified there or re-proposed by the next view's sequencer (PBFT's view change)
        won = [s for s in (a, b) if certs[n][1] == s.statement.value]
        assert len(won) <= 1
    first = metrics(net, "node0")[0]
    if not won:  # neither half: view 0 stalled, and a later view's sequencer proposed anew
        assert first["round"] == 1 and first["sequencer"] != "node1" and first["view"] >= 1
    # its two checkpoints of one size: kept by every honest validator, at most one final
    others = {genesis.witness_name(bytes.fromhex(m.node)): genesis.witness_verifier(m)
              for m in genesis.members if m is not culprit}
    group = Group("validators", quorum(4) - 1, tuple(others))
    policy = Policy([genesis.log_verifier(culprit)], others, {group.name: group}, group.name)
    for n in honest:
        files = sorted((net.by_name(n).folder / "evidence").glob("checkpoint_equivocation-*.txt"))
        assert files, n
        pair = Equivocation.from_json(files[0].read_text())
        verify_equivocation(pair, [genesis.log_verifier(culprit)])
        assert sum(policy.is_final(x) for x in (pair.first, pair.second)) <= 1


def test_a_censoring_sequencer_is_caught_by_its_missed_promise_and_rotated_out(network):
    rounds = 6
    net = committee(network, rounds, censor=1)  # the scenario's censor: validator 1, round 1's sequencer
    assert yaml.safe_load((net.by_name("node1").folder / "node.yaml").read_text())["committee_fault"] == "censor"
    assert net.by_name("node1").malicious
    net.start()
    honest = ["node0", "node2", "node3"]
    net.wait(lambda: net.all_done(honest), 180, "the honest validators to finish")
    net.stop()
    genesis = load_genesis(net.out / "genesis.yaml")
    origin = f"phalanx.net/{genesis.network}/committee"
    for n in honest:
        entries = ledger_of(net, n)
        batch1 = next(e.body.batch for e in entries if e.type == "round_certificate" and e.body.round == 1)
        (missed,) = evidence(entries, "missed_promise")
        assert missed.node.hex() == genesis.members[1].node and missed.round == 1
        promise = Signed.decode(missed.statements[0])
        assert promise.statement.KIND == "promise" and promise.signer == 1
        assert promise.statement.update not in batch1  # promised, and dropped
        VerifyKey(bytes.fromhex(genesis.members[1].key)).verify(promise.signature, promise.statement.message(origin))
        ms = metrics(net, n)
        assert ms[0]["sequencer"] == "node1" and ms[0]["rows"] == 3  # round 1: one update dropped
        assert all(m["sequencer"] != "node1" and m["rows"] == 4 for m in ms[2:])  # from round 3: rotated out
        assert all(m["certified"] for m in ms)
    st = metrics(net, "node0")[-1]
    assert st["rotated_out"] == ["node1"]


# ------------------------------------------------------------------ phalanx up --mode committee

def test_up_in_committee_mode_writes_the_run_and_every_log_passes_the_audit(tmp_path):
    """Five nodes: four validators and one that is not, which takes the certified model."""
    out = tmp_path / "up"
    r = phalanx("up", "--mode", "committee", "--nodes", "5", "--rounds", "3", "--task", str(task_file(tmp_path)),
                "--timeout", "4", "--encryption", "off", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "logs audited: 5/5 pass" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    assert run["topology"] == "committee (real processes)" and run["final"]["round"] == 3
    records = [json.loads(line) for line in (out / "net" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in records] == [1, 2, 3] and all(m["availability"] == 1.0 for m in records)
    assert all(m["consensus_distance"] == 0.0 for m in records)  # one certified model everywhere
    assert (out / "report.html").exists()
    genesis = load_genesis(out / "genesis.yaml")
    assert [("validator" in m.roles) for m in genesis.members] == [True] * 4 + [False]
    for folder in sorted((out / "nodes").iterdir()):
        with Ledger.open(str(folder / "ledger.db"), readonly=True) as ledger:
            entries = [e for _, e in ledger.entries()]
        assert sorted(certificates(entries)) == [1, 2, 3], folder.name
    audit_ok(out / "nodes" / "node4" / "ledger.db")


def test_committee_mode_refuses_what_is_misdirected(network):
    from phalanx.network.client import PeerRefused, Transport
    from phalanx.network.config import NodeKeys
    from phalanx.network.envelope import Fork, Identity
    from phalanx.network.messages import make
    from phalanx.network.peers import Peer

    net = committee(network, rounds=200, timeout=3.0)
    net.start("node0", "node1")
    net.wait(lambda: net.status("node0") is not None and net.status("node1") is not None, 120, "two nodes to serve")
    genesis = load_genesis(net.out / "genesis.yaml")
    keys = NodeKeys.read(net.by_name("node1").folder)
    st = net.status("node0")
    t = Transport(lambda: Identity(keys.node, keys.identity, keys.xkey),
                  lambda: Fork(genesis.protocol, bytes.fromhex(st["fork"]["hash"]), st["fork"]["next"]), encryption="off")
    target = genesis.members[0]
    peer = Peer(node=bytes.fromhex(target.node), url=target.url, xk=bytes.fromhex(target.xk))
    net.wait(lambda: (net.status("node0") or {}).get("round", 0) >= 0 and "node1" in [
        p["name"] for p in net.status("node0")["peers"] if p["registered"]], 60, "node1 registered at node0")
    try:
        with pytest.raises(PeerRefused) as e:  # round 2's sequencer is node2, not node0
            t.call(peer, "promise", make("promise", round=2, update=bytes(32)))
        assert e.value.status == 421 and "sequencer of round 2 is node2" in e.value.reason
        with pytest.raises(PeerRefused) as e:  # node0 is round 4's sequencer but holds no such update
            t.call(peer, "promise", make("promise", round=4, update=bytes(32)))
        assert e.value.status == 404 and "no valid round-4 update" in e.value.reason
        with pytest.raises(PeerRefused) as e:
            t.call(peer, "committee", make("committee", round=1, statements=[b"\x00garbage"], notes=[], aggregate=b""))
        assert e.value.status == 400 and "committee:" in e.value.reason
        assert net.status("node0") is not None  # it kept serving
    finally:
        t.close()
