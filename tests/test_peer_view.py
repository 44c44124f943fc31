"""A deployed node's view (phalanx.network.view): a sampler of phalanx.network.sampling drives
which peers a gossip round talks to, peer scores drop a peer that sends invalid messages, the
config and ``phalanx up`` refuse bad choices in one line, and (real processes on loopback) a
Basalt network completes its rounds with views of the configured size."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml
from test_network_processes import network  # noqa: F401  (the fixture)
from typer.testing import CliRunner

from phalanx.cli import app
from phalanx.network.config import ConfigError, load_config
from phalanx.network.peers import AllPeers, Peer, PeerTable
from phalanx.network.view import SampledPeers
from phalanx.range import launcher


def node(i: int, ip: str) -> Peer:
    return Peer(node=hashlib.sha256(f"peer {i}".encode()).digest(), url=f"http://{ip}:{9000 + i}",
                name=f"p{i}", registered=True)


def table_of(peers: list[Peer]) -> PeerTable:
    table = PeerTable(b"\0" * 32)
    for p in peers:
        table.add(p)
    return table


def test_the_view_is_the_samplers_at_most_view_peers_and_moves_once_per_round():
    table = table_of([node(i, "127.0.0.1") for i in range(10)])
    view = SampledPeers("basalt", 3, b"me")
    first = view.sample(table, 1)
    assert 1 <= len(first) <= 3 and view.sample(table, 1) == first
    assert {p.node for p in first} == {view.nodes[i] for i in view.sampler.view if i >= 0}
    assert len({p.node for r in range(2, 12) for p in view.sample(table, r)}) > 3  # seed resets move it
    assert len(AllPeers().sample(table, 1)) == 10


@pytest.mark.parametrize("name", ["basalt", "brahms", "push_pull"])
def test_every_sampler_fills_a_view_from_the_table(name):
    table = table_of([node(i, f"10.0.{i}.1") for i in range(12)])
    view = SampledPeers(name, 4, b"me")
    for r in range(1, 4):
        got = view.sample(table, r)
        assert 1 <= len(got) <= 4 and all(p.registered for p in got)
        for p in got:
            view.heard(p)  # as their updates would
    assert view.describe(table)["slots"] == 4


def sybil_share(name: str, seed: bytes) -> float:
    honest = [node(i, f"10.{i}.0.1") for i in range(4)]
    sybils = [node(100 + i, "66.6.6.6") for i in range(40)]  # forty identities behind one address
    table = table_of(honest + sybils)
    view = SampledPeers(name, 8, seed)
    for r in range(1, 6):
        view.sample(table, r)
    slots = view.sampler.view
    return float(np.mean([view.nodes[i] in {s.node for s in sybils} for i in slots]))


def test_basalt_gives_identities_behind_one_address_the_slots_of_one_address():
    seeds = [bytes([k]) for k in range(6)]
    basalt = np.mean([sybil_share("basalt", s) for s in seeds])
    naive = np.mean([sybil_share("push_pull", s) for s in seeds])
    assert basalt <= 0.4 < 0.7 <= naive  # 1 address of 5 against 40 identities of 44


def test_a_peer_that_sends_invalid_messages_is_graylisted_out_of_the_view():
    peers = [node(i, f"10.0.{i}.1") for i in range(3)]
    table = table_of(peers)
    view = SampledPeers("basalt", 6, b"me")
    liar = view.sample(table, 1)[0]
    for _ in range(5):
        view.invalid(liar)  # -10 * 5^2 = -250, below the graylist (-50) for a few rounds of decay
    later = [view.sample(table, r) for r in range(2, 5)]
    assert all(liar not in got and got for got in later)


def test_a_bad_sampling_config_is_a_one_line_error(tmp_path):
    base = {"name": "n", "port": 9000}
    for sampling, problem in [({"name": "gossipsub"}, "sampling.name"), ({"name": "basalt", "view": 0}, "sampling.view"),
                              ({"name": "basalt", "size": 3}, "sampling.size")]:
        (tmp_path / "node.yaml").write_text(yaml.safe_dump({**base, "sampling": sampling}))
        with pytest.raises(ConfigError, match=problem) as e:
            load_config(tmp_path)
        assert "\n" not in str(e.value)


def test_up_refuses_bad_sampler_flags_in_one_line():
    runner = CliRunner()
    for args, problem in [(["--sampler", "gossipsub"], "--sampler 'gossipsub': all, basalt, brahms, push_pull"),
                          (["--view", "3"], "--view needs --sampler"),
                          (["--sampler", "basalt", "--mode", "star"], "peer sampling is for gossip")]:
        result = runner.invoke(app, ["up", *args])
        assert result.exit_code == 2 and problem in result.output, result.output


# ------------------------------------------------------------------ real processes on loopback

def test_a_basalt_gossip_network_completes_rounds_with_views_of_the_configured_size(network):  # noqa: F811
    net = network(nodes=5, rounds=4, timeout=8.0)
    for p in net.planned:
        net.edit(p.name, sampling={"name": "basalt", "view": 2})
    net.start()
    names = [p.name for p in net.planned]
    net.wait(lambda: net.all_done(names), 150, "4 rounds on every node")
    rows = []
    for name in names:
        st = net.status(name)
        assert st["view"]["sampler"] == "basalt" and st["view"]["size"] == 2 and st["view"]["slots"] == 2
        assert 1 <= len(st["view"]["peers"]) <= 2 < len(st["peers"]) == 4  # not every peer: its view
        mine = launcher._lines(net.by_name(name).folder / "metrics.jsonl")
        assert mine and mine[-1]["round"] == 4  # (a node that started late may catch up past round 1)
        assert all(r["sent"] <= 2 for r in mine)  # a round sends to the view, never to all 4 peers
        rows += mine
    # the view's peers, and whoever has the node in its own view, answer: updates flow every round
    assert sum(r["received"] >= 1 for r in rows) >= 0.8 * len(rows)
    assert all(a["ok"] for a in launcher.audit_logs(net.planned))  # every node's log still audits
