"""Governance (proposals, votes, what passes, what is in force), versions and fork IDs, admission at
the door, and the node's configuration files."""

from __future__ import annotations

import pytest

from phalanx.core.keys import SigningKey
from phalanx.governance import ForkError, ForkSchedule, Governance, Minimum, Upgrade, at_least, parse_version
from phalanx.governance.state import GovernanceError, check_proposal
from phalanx.governance.versions import VersionError
from phalanx.ledger import Admission, GovernanceActivation, GovernanceProposal, GovernanceVote, sign_entry
from phalanx.network import admission as adm
from phalanx.network.config import AdmissionSpec, ConfigError, Genesis, NodeKeys, load_config, load_genesis

ORIGIN = "test/log"
V = [SigningKey.derive(b"gov", i) for i in range(4)]
TARGET = SigningKey.derive(b"gov", "target").node_id


def gov(weights=(1, 1, 1, 1)) -> Governance:
    return Governance({k.node_id: float(w) for k, w in zip(V, weights)}, Minimum(1, "0.1.0", 1))


def feed(g: Governance, action: str, params: dict, voters: list[int], deadline: int = 5) -> int:
    """Log a proposal and yes votes from ``voters``; the proposal's index."""
    index = 10 + len(g.proposals) * 100
    g.observe(index, sign_entry(GovernanceProposal(action=action, params=params, title="t", deadline=deadline),
                                V[0], 0, ORIGIN), V[0].node_id)
    for i, v in enumerate(voters):
        g.observe(index + 1 + i, sign_entry(GovernanceVote(proposal=index, choice="yes"), V[v], 1, ORIGIN),
                  V[v].node_id)
    return index


def activate(g: Governance, index: int, round_: int) -> None:
    d = next(d for d in g.ready() if d.proposal == index)
    g.observe(index + 50, sign_entry(GovernanceActivation(proposal=index, votes=list(d.votes), round=round_),
                                     V[0], 2, ORIGIN), V[0].node_id)


def test_passes_with_more_than_two_thirds_of_the_weight():
    g = gov()
    two = feed(g, "quarantine", {"node": TARGET.hex()}, [0, 1])
    assert g.ready() == []  # 2 of 4: not more than two thirds
    three = feed(g, "quarantine", {"node": TARGET.hex()}, [0, 1, 2])
    assert [d.proposal for d in g.ready()] == [three] and two != three
    weighted = gov((3, 1, 1, 1))  # 3 + 1 of 6 = exactly two thirds: not more
    feed(weighted, "quarantine", {"node": TARGET.hex()}, [0, 1])
    assert weighted.ready() == []
    feed(weighted, "quarantine", {"node": TARGET.hex()}, [0, 1, 2])
    assert len(weighted.ready()) == 1


def test_votes_from_non_validators_or_after_the_deadline_do_not_count():
    g = gov()
    index = feed(g, "evict", {"node": TARGET.hex()}, [0, 1], deadline=3)
    outsider = SigningKey.derive(b"gov", "outsider")
    g.observe(index + 9, sign_entry(GovernanceVote(proposal=index, choice="yes"), outsider, 0, ORIGIN),
              outsider.node_id)
    assert g.ready() == []
    g.round = 4  # past the deadline
    g.observe(index + 10, sign_entry(GovernanceVote(proposal=index, choice="yes"), V[2], 1, ORIGIN), V[2].node_id)
    assert g.ready() == []


def test_quarantine_and_evict_bar_a_node_from_their_round():
    g = gov()
    activate(g, feed(g, "evict", {"node": TARGET.hex(), "evidence": "3,4"}, [0, 1, 2]), 4)
    assert g.barred(TARGET, 3) is None
    assert "evicted from round 4" in g.barred(TARGET, 4)
    assert g.decisions[0].evidence == [3, 4]


def test_min_version_refuses_old_nodes_and_halts_a_stale_one_at_activation():
    g = gov()
    activate(g, feed(g, "min_version", {"software": "0.2.0", "protocol": 1, "at": 3}, [0, 1, 2]), 3)
    assert g.refuse_version("0.1.0", 1, 2) is None
    assert "below the minimum 0.2.0" in g.refuse_version("0.1.0", 1, 3)
    assert g.refuse_version("phalanx-0.2.0", 1, 3) is None
    halt = g.halts("0.1.9", 1, 3)
    assert halt.startswith("halting at round 3") and halt.endswith("upgrade")
    assert [u.round for u in g.upgrades()] == [3]


def test_rollback_takes_effect_at_its_round():
    g = gov()
    activate(g, feed(g, "rollback", {"round": 2, "at": 5}, [0, 1, 2, 3]), 5)
    assert g.rollback_at(4) is None and g.rollback_at(5)[0] == 2


@pytest.mark.parametrize("action,params,message", [
    ("launch", {}, "is not one of"),
    ("evict", {"node": "zz"}, "64-hex-digit"),
    ("evict", {"node": "a" * 64, "evidence": "1,x"}, "entry indices"),
    ("min_version", {"software": "latest"}, "dotted integers"),
    ("rollback", {"round": -1}, "rollback: round"),
    ("rollback", {"round": 1, "at": 0}, "at: 0"),
])
def test_proposals_that_make_no_sense_are_refused_in_one_line(action, params, message):
    with pytest.raises(GovernanceError, match=message):
        check_proposal(action, params)


def test_versions_compare_as_integers():
    assert parse_version("phalanx-0.10.2") == (0, 10, 2)
    assert at_least("0.10.0", "0.9.9") and not at_least("0.1", "0.1.1") and at_least("1.0", "1.0.0")
    with pytest.raises(VersionError):
        parse_version("1.x")


def test_fork_id_follows_eip_2124():
    genesis = b"g" * 32
    up = Upgrade(5, b"d" * 32)
    new, old = ForkSchedule(genesis, [up]), ForkSchedule(genesis)
    h0, next0 = new.fork_id(4)
    assert next0 == 5 and h0 == old.fork_id(4)[0]  # before the upgrade: same hash, the next one announced
    h1, next1 = new.fork_id(5)
    assert h1 != h0 and next1 == 0
    new.check(5, h1, 0)  # same hash
    new.check(5, h0, 5)  # remote before the upgrade, but it knows about it
    with pytest.raises(ForkError, match="stale"):
        new.check(5, h0, 0)  # remote never heard of the upgrade it should have activated
    old.check(4, h0, 5)  # the remote announces an upgrade ahead: compatible until then
    with pytest.raises(ForkError, match="this node is stale"):
        old.check(5, h0, 5)  # this node passed round 5 without the upgrade
    with pytest.raises(ForkError, match="unknown here"):
        new.check(5, b"zzzz", 0)
    other = ForkSchedule(genesis, [Upgrade(5, b"e" * 32)])  # another change at the same round
    assert other.fork_id(5)[0] != h1


# ------------------------------------------------------------------ admission at the door

NET = "testnet"
NEWCOMER = SigningKey.derive(b"adm", "newcomer").public.raw


def check(policy, admission, approved=(), members=None):
    adm.check(policy, admission, network=NET, key=NEWCOMER, founder=False,
              members=members or (lambda n: None), validators={V[0].node_id}, approved=set(approved))


def test_open_and_founders_pass():
    check(AdmissionSpec(name="open"), Admission(kind="open"))
    adm.check(AdmissionSpec(name="stake"), Admission(kind="genesis"), network=NET, key=NEWCOMER, founder=True,
              members=lambda n: None, validators=set(), approved=set())


def test_proof_of_work_is_bound_to_the_key_and_network():
    spec = AdmissionSpec(name="proof_of_work", bits=8)
    good = adm.proof_of_work(NET, NEWCOMER, 8)
    check(spec, good)
    other = adm.proof_of_work("othernet", NEWCOMER, 8)
    if other.evidence != good.evidence:  # work for another network is worth nothing here
        with pytest.raises(adm.AdmissionError, match="does not solve"):
            check(spec, other)
    with pytest.raises(adm.AdmissionError, match="by proof_of_work, not by open"):
        check(spec, Admission(kind="open"))


def test_stake_needs_a_validators_receipt_for_enough():
    spec = AdmissionSpec(name="stake", stake=100)
    check(spec, adm.stake_receipt(NET, NEWCOMER, 100.0, V[0]))
    with pytest.raises(adm.AdmissionError, match="below the 100 required"):
        check(spec, adm.stake_receipt(NET, NEWCOMER, 50.0, V[0]))
    with pytest.raises(adm.AdmissionError, match="not signed by a validator"):
        check(spec, adm.stake_receipt(NET, NEWCOMER, 100.0, V[1]))
    with pytest.raises(adm.AdmissionError, match="malformed evidence"):
        check(spec, Admission(kind="stake", evidence=b"\xff"))


def test_vouching_counts_distinct_current_members():
    spec = AdmissionSpec(name="vouching", vouches=2)
    members = {k.node_id: k.public.raw for k in V[:3]}.get
    two = adm.vouches([adm.vouch(NET, NEWCOMER, V[0]), adm.vouch(NET, NEWCOMER, V[1])])
    check(spec, two, members=members)
    twice = adm.vouches([adm.vouch(NET, NEWCOMER, V[0]), adm.vouch(NET, NEWCOMER, V[0])])
    with pytest.raises(adm.AdmissionError, match="1 member"):
        check(spec, twice, members=members)
    outsider = adm.vouches([adm.vouch(NET, NEWCOMER, V[0]), adm.vouch(NET, NEWCOMER, V[3])])
    with pytest.raises(adm.AdmissionError, match="1 member"):
        check(spec, outsider, members=members)


def test_approval_needs_a_passed_admit_proposal():
    spec = AdmissionSpec(name="approval")
    from phalanx.core.keys import node_id

    with pytest.raises(adm.AdmissionError, match="no passed admit proposal"):
        check(spec, Admission(kind="approval"))
    check(spec, Admission(kind="approval"), approved={node_id(NEWCOMER)})


# ------------------------------------------------------------------ the node's files

def test_config_errors_are_one_line_naming_file_and_field(tmp_path):
    (tmp_path / "node.yaml").write_text("name: a\nport: 99999\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'node.yaml'}: port: ") and "\n" not in str(e.value)
    (tmp_path / "node.yaml").write_text("name: a\nport: 80\nencryption: maybe\n")
    with pytest.raises(ConfigError, match="encryption"):
        load_config(tmp_path)
    (tmp_path / "node.yaml").write_text("name: a\nport: 80\ncolour: red\n")
    with pytest.raises(ConfigError, match="colour: unknown key"):
        load_config(tmp_path)
    (tmp_path / "node.yaml").write_text("name: [a\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing")


def test_genesis_checks_members(tmp_path):
    keys = NodeKeys.generate()
    member = {"name": "a", "node": keys.node.hex(), "key": keys.identity.public.raw.hex(), "xk": keys.xk.hex(),
              "url": "http://127.0.0.1:1", "log": keys.log.public.raw.hex(),
              "witness": keys.witness.public.raw.hex(), "roles": ["trainer", "validator"]}
    Genesis(network="n", members=[member])
    with pytest.raises(ValueError, match="is not SHA-256 of key"):
        Genesis(network="n", members=[{**member, "node": "0" * 64}])
    with pytest.raises(ValueError, match="no member is a validator"):
        Genesis(network="n", members=[{**member, "roles": ["trainer"]}])
    (tmp_path / "g.yaml").write_text("network: n\nmembers: []\n")
    with pytest.raises(ConfigError, match="members: "):
        load_genesis(tmp_path / "g.yaml")


def test_keys_round_trip_and_stay_private(tmp_path):
    keys = NodeKeys.generate()
    path = keys.write(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    again = NodeKeys.read(tmp_path)
    assert again.node == keys.node and again.xk == keys.xk and again.identity.public == keys.identity.public
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a phalanx.node-keys/v1 file"):
        NodeKeys.read(tmp_path)
