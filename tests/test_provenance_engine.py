"""The engine writes its ledger as it runs (phalanx.engine.provenance): what each round logs,
equivocation evidence, replay of every aggregate bit for bit, central DP up to the noise,
rollback, the engine's own audit checks, and a tampered run's ledger or private material failing."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_engine import gossip
from test_engine import make_sim as engine_sim
from test_engine_defense import Constant, PerReceiver
from test_ledger_audit import _check_flips

import ledger_sample as ls
from phalanx.aggregate import AGGREGATORS, PRE_AGGREGATORS, Chain
from phalanx.attacks import SignFlip
from phalanx.core.seeding import derive_seed
from phalanx.engine.provenance import LedgerRecorder, RecorderConfig, RollbackPlan
from phalanx.engine.provenance.checks import EngineChecks
from phalanx.engine.provenance.private import OPENINGS, tensor_hash
from phalanx.engine.provenance.replay import replay
from phalanx.ledger import Ledger, Policy, audit
from phalanx.ledger.trace import EQUIVOCATED, REJECTED, USED, LedgerIndex, format_trace, trace
from phalanx.network import Star
from phalanx.privacy.accounting import PrivacyLedger
from phalanx.privacy.counts import CountRelease
from phalanx.privacy.plan import PrivacyPlan


def make_sim(shards, topology, **kw):
    """The engine's test simulation, weighted as a logged star must be: uniform unless asked."""
    return engine_sim(shards, topology, **{"weighting": "uniform", **kw})


def chain_of(spec):
    name, params = spec[-1]
    return Chain([PRE_AGGREGATORS.build(n, **p) for n, p in spec[:-1]], AGGREGATORS.build(name, **params))


def recorded(sim, folder, rounds, chain=(("mean", {}),), **config):
    """Run ``sim`` for ``rounds`` with a ledger in ``folder``; (records, ledger summary)."""
    config = RecorderConfig(origin="phalanx.sim/test", seed=sim.seed, chain=list(chain), num_classes=3, **config)
    rec = LedgerRecorder(sim, folder, config)
    sim.observer = rec
    records = list(sim.run(rounds))
    return records, rec.close()


def entries(folder):
    with Ledger.open(folder / "ledger.db", readonly=True) as ledger:
        return list(ledger.entries())


def audited(folder):
    checks = EngineChecks()
    report = audit(folder / "ledger.db", policy=Policy.parse((folder / "policy.txt").read_text()),
                   checks=checks.checks())
    return report, checks


def assert_sound(folder):
    report, _ = audited(folder)
    assert report.ok, report.summary()
    assert report.uncheckpointed == 0
    replayed = replay(folder / "ledger.db", folder / "ledger-private")
    assert replayed.ok, replayed.summary()
    return replayed


# ------------------------------------------------------------------------------ what a run logs
def test_a_star_run_logs_registrations_commitments_aggregates_and_cosigned_checkpoints(make_shards, tmp_path):
    release = CountRelease(0.5, 4, 0, PrivacyLedger(1e-5))
    sim = make_sim(make_shards([3, 4, 5, 6]), Star(4, 0), weighting="noised", count_release=release)
    records, summary = recorded(sim, tmp_path, 3)
    log = entries(tmp_path)
    types = [e.type for _, e in log]
    # 4 nodes (registration + dataset), the server, 4 validators, the starting model; then per
    # round 4 update commitments and the server's aggregate record
    assert types[:14] == ["node_registration", "dataset_commitment"] * 4 + ["node_registration"] * 5 + \
        ["aggregate_record"]
    assert types[14:] == (["update_commitment"] * 4 + ["aggregate_record"]) * 3
    datasets = [e.body for _, e in log if e.type == "dataset_commitment"]
    assert all(d.samples is None and d.stats is not None for d in datasets)  # the count is hidden
    updates = [e.body for _, e in log if e.type == "update_commitment"]
    # FedAvg weights as used: the released counts (each node's count plus its one noise draw), never the counts
    released = (torch.tensor([3.0, 4.0, 5.0, 6.0], dtype=torch.float64) + 0.5 * release.draws).clamp(min=1)
    assert [u.weight for u in updates] == pytest.approx(released.float().tolist() * 3)
    assert not {u.weight for u in updates} & {3.0, 4.0, 5.0, 6.0}
    last = log[-1][1].body
    assert last.result == tensor_hash(sim.global_row) and summary["model"] == last.result.hex()
    assert last.params["topology"] == "star" and last.rule == "mean" and len(last.inputs) == 4
    assert summary["checkpoints"] == 4 and "equivocations" not in records[0]
    with Ledger.open(tmp_path / "ledger.db", readonly=True) as ledger:
        assert all(ledger.policy.is_final(c.format()) for c in ledger.checkpoints())
    assert_sound(tmp_path)


def test_the_ledger_changes_nothing_the_round_computes(make_shards, tmp_path):
    def make(topology):
        topo = Star(5, 0) if topology == "star" else gossip(5, "complete")
        return make_sim(make_shards([3, 4, 5, 6, 2]), topo, malicious=[4], update_attack=PerReceiver())

    for topology in ("star", "gossip"):
        plain, logged = make(topology), make(topology)
        without = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in plain.run(3)]
        with_, _ = recorded(logged, tmp_path / topology, 3)
        assert without == [{k: v for k, v in r.items() if not k.endswith("_s") and k != "equivocations"}
                           for r in with_]
        assert torch.equal(plain.rows, logged.rows)


def test_the_same_seed_writes_the_same_ledger_byte_for_byte(make_shards, tmp_path):
    roots = []
    for i in range(2):
        sim = make_sim(make_shards([3, 4, 5]), gossip(3, "complete"))
        recorded(sim, tmp_path / str(i), 2)
        with Ledger.open(tmp_path / str(i) / "ledger.db", readonly=True) as ledger:
            roots.append((ledger.root(), [c.format() for c in ledger.checkpoints()]))
    assert roots[0] == roots[1]


# ------------------------------------------------------------------------------ replay
RULES = [
    [("mean", {})],
    [("median", {})],
    [("trimmed_mean", {})],
    [("krum", {})],
    [("geometric_median", {"iterations": 5})],
    [("centered_clipping", {"tau": 0.5})],  # stateful: its previous output is opened from the log
    [("bucketing", {"s": 2}), ("mean", {})],  # consumes the round's generator
    [("arc", {}), ("nnm", {}), ("trimmed_mean", {})],
    [("clipped_gossip", {})],
]


@pytest.mark.parametrize("topology", ["star", "gossip"])
@pytest.mark.parametrize("spec", RULES, ids=lambda s: "+".join(n for n, _ in s))
def test_replay_reruns_every_aggregate_bit_for_bit(make_shards, tmp_path, topology, spec):
    n = 7
    topo = Star(n, 0) if topology == "star" else gossip(n, "complete")
    sim = make_sim(make_shards([3, 4, 5, 6, 2, 3, 4]), topo, aggregator=chain_of(spec), declared_f=1,
                   malicious=[6], update_attack=SignFlip())
    sim.memory_budget_bytes = 15 * 3 * 7 * 4 * 3  # gossip: receivers in chunks of 3, so the layout matters
    recorded(sim, tmp_path, 3, chain=spec)
    replayed = assert_sound(tmp_path)
    assert replayed.records == (3 if topology == "star" else 3 * n)


def test_replay_runs_the_rule_with_the_engines_thread_count(tmp_path):
    # a parallel reduction's order depends on torch's threads: the record names them
    data = {"dataset": "digits", "nodes": 10, "partition": "iid", "train_samples": 400, "test_samples": 50}
    sim = digits_sim(model="mlp", aggregator=["arc", "nnm", "trimmed_mean"], declared_f=1, data=data)
    spec = [("arc", {}), ("nnm", {}), ("trimmed_mean", {})]
    torch.set_num_threads(2)
    try:
        recorded(sim, tmp_path, 2, chain=spec)
    finally:
        torch.set_num_threads(1)
    record = LedgerIndex.build(entries(tmp_path)).records[-1]
    assert record.body.params["threads"] == 2
    assert_sound(tmp_path)


def test_replay_with_a_root_update_and_weights(make_shards, tmp_path):
    root = make_shards([5], seed=8)
    sim = make_sim(make_shards([3, 4, 5, 6]), Star(4, 0), aggregator=chain_of([("fltrust", {})]), root_shards=root)
    recorded(sim, tmp_path / "star", 2, chain=[("fltrust", {})])
    assert_sound(tmp_path / "star")
    sim = make_sim(make_shards([3, 4, 5, 6]), gossip(4, "ring"), aggregator=chain_of([("fltrust", {})]))
    recorded(sim, tmp_path / "gossip", 2, chain=[("fltrust", {})])
    assert_sound(tmp_path / "gossip")


def _change(line: str, key: str) -> str:
    row = json.loads(line)
    row[key] = ("00" if row[key][:2] != "00" else "11") + row[key][2:]
    return json.dumps(row)


def test_replay_finds_a_changed_blob_and_a_changed_salt(make_shards, tmp_path):
    sim = make_sim(make_shards([3, 4, 5]), Star(3, 0))
    recorded(sim, tmp_path, 2)
    private = tmp_path / "ledger-private"
    lines = (private / OPENINGS).read_text().splitlines()
    update = next(i for i, line in enumerate(lines) if "blob" in json.loads(line))  # round 1's first update
    blob = json.loads(lines[update])["blob"]
    path = private / "blobs" / blob[:2] / blob[2:]
    original = path.read_bytes()
    path.write_bytes(original[:5] + bytes([original[5] ^ 1]) + original[6:])
    report = replay(tmp_path / "ledger.db", private)
    assert not report.ok and report.summary().startswith("replay failed: round 1:")
    assert "no longer hash to its name" in report.findings[0]
    path.write_bytes(original)
    assert replay(tmp_path / "ledger.db", private).ok
    (private / OPENINGS).write_text("\n".join([*lines[:update], _change(lines[update], "salt"),
                                               *lines[update + 1:]]) + "\n")
    report = replay(tmp_path / "ledger.db", private)
    assert not report.ok and "does not open it (salt or blob changed)" in report.findings[0]


@pytest.mark.parametrize("key,value,finding", [
    ("k", 10**9, "parameter k is 1000000000, not an integer in [1, 6]"),
    ("slots", "0,1,99", "its slots do not match its inputs"),
    ("seed", -1, "parameter seed is -1"),
    ("threads", 0, "parameter threads is 0"),
    ("device", "cuda", "ran on cuda; replay runs on the CPU"),
])
def test_a_signed_but_hostile_record_is_refused_not_run(make_shards, tmp_path, monkeypatch, key, value, finding):
    # the log's signatures hold, yet a record may still ask replay for absurd work
    written = LedgerRecorder._gossip_records

    def hostile(self, sim, r, index):
        items = written(self, sim, r, index)
        body, signer = items[0]
        return [(body.model_copy(update={"params": {**body.params, key: value}}), signer), *items[1:]]

    monkeypatch.setattr(LedgerRecorder, "_gossip_records", hostile)
    sim = make_sim(make_shards([3, 4, 5, 6, 2]), gossip(5, "complete"))
    recorded(sim, tmp_path, 1)
    assert audited(tmp_path)[0].ok
    report = replay(tmp_path / "ledger.db", tmp_path / "ledger-private")
    assert not report.ok and "\n" not in report.summary() and finding in report.summary()


def test_replay_without_kept_updates_says_so(make_shards, tmp_path):
    sim = make_sim(make_shards([3, 4]), Star(2, 0))
    _, summary = recorded(sim, tmp_path, 1, keep_updates=False)
    assert summary["private"] is None and not (tmp_path / "ledger-private").exists()
    assert audited(tmp_path)[0].ok
    report = replay(tmp_path / "ledger.db", tmp_path / "ledger-private")
    assert not report.ok and "keep_updates" in report.findings[0]


# ------------------------------------------------------------------------------ equivocation
def test_a_node_that_tells_each_neighbour_something_different_is_caught(make_shards, tmp_path):
    # complete graph on 5: node 4 sends receiver r the update r; it commits to one message (its
    # first neighbour's, node 0's), so the 3 other honest receivers each hold evidence, every round
    sim = make_sim(make_shards([3, 4, 5, 6, 2]), gossip(5, "complete"), malicious=[4], update_attack=PerReceiver())
    records, summary = recorded(sim, tmp_path, 2)
    assert [r["equivocations"] for r in records] == [3, 3]
    assert summary["equivocation"] == {"4": 6}
    log = entries(tmp_path)
    evidence = [(i, e) for i, e in log if e.type == "update_equivocation"]
    receivers = {LedgerIndex.build(log).label(e.node_id) for _, e in evidence}
    assert len(evidence) == 6 and receivers == {"node1", "node2", "node3"}
    assert {e.body.node for _, e in evidence} == {sim.observer.ids.node(4).node_id}
    index = LedgerIndex.build(log)
    _, grid = trace(index, next(r for r in index.records if index.label(r.node) == "node1").body.result).matrix()
    assert grid[0][4] == EQUIVOCATED and grid[0][0] == USED
    assert any(ev["kind"] == "evidence" and "equivocation" in ev["text"] and ev["target"] == [4]
               for ev in sim.events)
    assert_sound(tmp_path)  # the audit re-checks each envelope; replay uses what each receiver got
    # a receiver that forges the evidence (its own signature as the envelope) fails the audit
    ledger = Ledger.open(tmp_path / "ledger.db")
    body = evidence[0][1].body
    receiver = next(k for k in map(sim.observer.ids.node, range(5)) if k.node_id == evidence[0][1].node_id)
    ledger.submit(body.model_copy(update={"envelope": receiver.sign(b"not the sender's")}), receiver)
    ledger.close()
    report, _ = audited(tmp_path)
    assert not report.ok and "envelope signature does not verify" in report.summary()


def test_a_node_that_sends_everyone_the_same_attack_leaves_no_evidence(make_shards, tmp_path):
    sim = make_sim(make_shards([3, 4, 5, 6, 2]), gossip(5, "complete"), malicious=[4], update_attack=SignFlip())
    records, summary = recorded(sim, tmp_path, 2)
    assert [r["equivocations"] for r in records] == [0, 0] and summary["equivocation"] == {}
    assert not any(e.type == "update_equivocation" for _, e in entries(tmp_path))
    assert_sound(tmp_path)


# ------------------------------------------------------------------------------ rejections
@pytest.mark.parametrize("topology", ["star", "gossip"])
def test_rejected_rows_are_logged_with_the_reason(make_shards, tmp_path, topology):
    topo = Star(4, 0) if topology == "star" else gossip(4, "complete")
    sim = make_sim(make_shards([4, 4, 4, 4]), topo, malicious=[3], update_attack=Constant(float("nan")))
    recorded(sim, tmp_path, 2)
    index = LedgerIndex.build(entries(tmp_path))
    record = next(r for r in reversed(index.records) if index.label(r.node) in ("server", "node0"))
    assert [x.reason for x in record.body.rejected] == ["non-finite"]
    assert index.label(index.commitments[record.body.rejected[0].entry].node) == "node3"
    assert_sound(tmp_path)
    rounds, grid = trace(index, record.body.result).matrix()
    assert grid[-1][3] == REJECTED and grid[-1][0] == USED


def test_a_receiver_below_its_bound_logs_that_it_kept_its_model(make_shards, tmp_path):
    from test_engine_defense import NeedsFive

    if "needs_five" not in AGGREGATORS:  # replay rebuilds the rule by its registered name
        AGGREGATORS.register("needs_five", NeedsFive)
    sim = make_sim(make_shards([3] * 5), gossip(5, "ring"), aggregator=NeedsFive(), declared_f=0)
    recorded(sim, tmp_path, 1, chain=[("needs_five", {})])
    record = LedgerIndex.build(entries(tmp_path)).records[-1]
    assert "needs_five got 3 rows" in record.body.params["refused"]
    assert replay(tmp_path / "ledger.db", tmp_path / "ledger-private").refused == 5


# ------------------------------------------------------------------------------ privacy
def _plan(mechanism, n, **kw):
    return PrivacyPlan.build(mechanism, sizes=torch.tensor([4] * n), epochs=1, batch_size=64, rounds=3, clip=0.5,
                             delta=1e-5, noise_multiplier=1.0, **kw)


def digits_sim(**fields):
    """A real run of the range on scikit-learn's digits (logistic model, d = 650)."""
    from phalanx.range.runner import build
    from phalanx.range.scenario import Scenario

    base = {"rounds": 2, "model": "logistic", "train": {"batch_size": 16, "lr": 0.1, "strategy": "loop"},
            "data": {"dataset": "digits", "nodes": 20, "partition": "iid", "train_samples": 400, "test_samples": 50}}
    return build(Scenario.model_validate({**base, **fields})).simulation


def test_central_dp_is_replayed_up_to_the_noise_and_no_noise_seed_is_kept(tmp_path):
    sim = digits_sim(privacy={"mechanism": "central", "noise_multiplier": 1.0, "clip": 0.5})
    records, _ = recorded(sim, tmp_path, 2)
    log = entries(tmp_path)
    budgets = [e.body for _, e in log if e.type == "privacy_budget"]
    assert len(budgets) == 40 and budgets[-1].total_epsilon > budgets[0].total_epsilon
    record = LedgerIndex.build(log).records[-1].body
    assert record.pre_noise is not None and record.released is not None and record.params["dp"] == "central"
    replayed = assert_sound(tmp_path)
    assert replayed.noised == 2
    seeds = {derive_seed(0, "round", r, label) for r in (1, 2) for label in ("central-dp", "local-dp", "dp-sgd-noise")}
    stored = (tmp_path / "ledger.db").read_bytes() + (tmp_path / "ledger-private" / OPENINGS).read_bytes()
    for seed in seeds:
        for form in (str(seed).encode(), seed.to_bytes(8, "big"), seed.to_bytes(8, "little")):
            assert form not in stored
    params = [v for _, e in log if e.type == "aggregate_record" for v in e.body.params.values()]
    assert not seeds & set(params)


def test_a_server_that_claims_noise_it_did_not_add_fails_the_replay(tmp_path, monkeypatch):
    import phalanx.engine.simulation as simulation

    sim = digits_sim(privacy={"mechanism": "central", "noise_multiplier": 1.0, "clip": 0.5})
    monkeypatch.setattr(simulation, "gaussian", lambda shape, std, g, like: torch.zeros(shape, dtype=like.dtype))
    recorded(sim, tmp_path, 1)
    report = replay(tmp_path / "ledger.db", tmp_path / "ledger-private")
    assert not report.ok and "noise has standard deviation" in report.summary()
    assert "not the declared 0.5" in report.summary()


def test_local_dp_in_gossip_replays_with_each_receivers_own_unnoised_model(make_shards, tmp_path):
    sim = make_sim(make_shards([4] * 4), gossip(4, "complete"), privacy=_plan("local", 4))
    recorded(sim, tmp_path, 2)
    record = LedgerIndex.build(entries(tmp_path)).records[-1]
    assert "own" in record.body.params  # it sent a noised model and aggregated its own
    assert_sound(tmp_path)


# ------------------------------------------------------------------------------ rollback
@pytest.mark.parametrize("topology", ["star", "gossip"])
def test_a_scheduled_rollback_is_voted_logged_and_resumed_from(make_shards, tmp_path, topology):
    topo = Star(4, 0) if topology == "star" else gossip(4, "complete")
    sim = make_sim(make_shards([3, 4, 5, 6]), topo)
    kept = {}
    rec = LedgerRecorder(sim, tmp_path, RecorderConfig(origin="phalanx.sim/test", seed=0, chain=[("mean", {})],
                                                       num_classes=3, rollback=RollbackPlan(4, 2, "round 3 was bad")))
    sim.observer = rec
    for record in sim.run(5):
        kept[record["round"]] = (sim.global_row if topology == "star" else sim.rows).clone()
    summary = rec.close()
    assert summary["rollbacks"][0]["reverted"] == [3]
    types = [e.type for _, e in entries(tmp_path)]
    start = types.index("governance_proposal")
    assert types[start:start + 7] == ["governance_proposal"] + ["governance_vote"] * 4 + \
        ["governance_activation", "rollback"]
    report, checks = audited(tmp_path)
    assert report.ok, report.summary()
    (line,) = checks.reverted()
    assert line.startswith("reverted: round 3, by rollback entry")
    assert line.endswith("approved by 4 of 4 validators: round 3 was bad")
    assert_sound(tmp_path)
    # round 4 trained from round 2's model: its updates name that model as their base
    index = LedgerIndex.build(entries(tmp_path))
    round4 = [c for c in index.commitments.values() if c.body.round == 4]
    round2 = [r for r in index.records if r.body.round == 2]
    assert {c.body.base_model for c in round4} == {r.body.result for r in round2}
    assert any(e["kind"] == "rollback" for e in sim.events)
    final = trace(index, index.records[-1].body.result)
    assert 3 not in final.rounds and {4, 2, 1, 0} <= set(final.rounds)
    assert "reverted: round 3" in format_trace(final)


def _governance_ledger(tmp_path, votes: int, model=None, action="rollback"):
    """A real star run, then a hand-made rollback of round 1 with ``votes`` validator votes."""
    from phalanx.ledger import GovernanceActivation, GovernanceProposal, GovernanceVote, Rollback

    sim = make_sim(ls_shards(), Star(3, 0))
    rec = LedgerRecorder(sim, tmp_path, RecorderConfig(origin="phalanx.sim/test", seed=0, chain=[("mean", {})],
                                                       num_classes=3))
    sim.observer = rec
    list(sim.run(2))
    ids, ledger = rec.ids, rec.ledger
    round1 = [r for r in LedgerIndex.build(ledger.entries()).records if r.body.round == 1][0]
    model = model or round1.body.result
    v = [ids.validator(j) for j in range(4)]
    _, p = ledger.submit(GovernanceProposal(action=action, params={"round": 1, "model": model.hex()}, title="t",
                                            deadline=3), v[0])
    cast = [ledger.submit(GovernanceVote(proposal=p, choice="yes"), v[j])[1] for j in range(votes)]
    _, a = ledger.submit(GovernanceActivation(proposal=p, votes=cast, round=3), v[0])
    ledger.submit(Rollback(activation=a, round=1, model=model, checkpoint=round1.index + 1, reason="t"), v[0])
    rec.close()
    return audited(tmp_path)[0]


def ls_shards():
    from conftest import synthetic_shards

    return synthetic_shards([3, 4, 5])


def test_governance_checks_need_two_thirds_and_the_right_model(tmp_path):
    assert _governance_ledger(tmp_path / "ok", 3).ok
    few = _governance_ledger(tmp_path / "few", 2)
    assert "carries 2 yes votes of 4 validators" in few.summary()
    wrong = _governance_ledger(tmp_path / "wrong", 4, model=ls.h("another model"))
    assert "but the log's model after that round is" in wrong.summary()


def _quarantined(folder, approving_votes: int):
    """A sample log where node 2 is quarantined from round 1, by a proposal with that many of the
    three validators' yes votes (0: no proposal at all), then sends its round-1 update."""
    from phalanx.ledger import GovernanceActivation, GovernanceProposal, GovernanceVote

    sample = ls.build(folder / "ledger.db", everything=False, rounds=1)
    ledger, nodes, target = sample.ledger, sample.nodes, sample.nodes[2].node_id
    evidence = []
    if approving_votes:
        _, p = ledger.submit(GovernanceProposal(action="quarantine", params={"node": target.hex(), "round": 1},
                                                title="NaN", deadline=1), nodes[0])
        cast = [ledger.submit(GovernanceVote(proposal=p, choice="yes"), nodes[j])[1] for j in range(approving_votes)]
        evidence = [ledger.submit(GovernanceActivation(proposal=p, votes=cast, round=1), nodes[0])[1]]
    ledger.submit(ls.Quarantine(node=target, round=1, action="quarantine", reason="NaN", evidence=evidence),
                  nodes[0])
    ls.round_entries(ledger, nodes, 1, sample.salt)
    ledger.checkpoint(sample.witnesses)
    ledger.close()
    return audit(folder / "ledger.db", checks=EngineChecks().checks()).summary()


def test_the_engine_check_refuses_updates_from_a_quarantined_node(tmp_path):
    assert "not_quarantined: update of round 1 from node" in _quarantined(tmp_path / "passed", 3)


def test_a_quarantine_without_a_passed_proposal_is_refused(tmp_path):
    assert "not_quarantined: quarantine of node" in _quarantined(tmp_path / "none", 0)
    assert "cites no passed governance proposal to quarantine it" in _quarantined(tmp_path / "none2", 0)
    assert "carries 2 yes votes of 3 validators" in _quarantined(tmp_path / "two_of_three", 2)


# ------------------------------------------------------------------------------ tampering
def _simulated_ledger(make_shards, folder):
    """A real run's ledger with every kind of entry the engine writes: equivocation evidence,
    local DP (own slots, privacy budgets), a rollback with its governance."""
    sim = make_sim(make_shards([3, 4, 5, 6, 2]), gossip(5, "complete"), malicious=[4],
                   update_attack=PerReceiver(), privacy=_plan("local", 5))
    recorded(sim, folder, 3, rollback=RollbackPlan(3, 1))
    policy = Policy.parse((folder / "policy.txt").read_text())
    assert audit(folder / "ledger.db", policy=policy).ok
    assert {"update_equivocation", "privacy_budget", "rollback"} <= {e.type for _, e in entries(folder)}
    return policy


def test_any_byte_flipped_in_a_simulated_runs_ledger_fails_the_audit(make_shards, tmp_path):
    policy = _simulated_ledger(make_shards, tmp_path)
    assert _check_flips(tmp_path / "ledger.db", policy, per_column=4, seed=1) >= 40


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PHALANX_SLOW_TESTS"), reason="set PHALANX_SLOW_TESTS=1 (.ci/run does)")
def test_many_more_byte_flips_in_a_simulated_runs_ledger(make_shards, tmp_path):
    policy = _simulated_ledger(make_shards, tmp_path)
    total = sum(_check_flips(tmp_path / "ledger.db", policy, per_column=30, seed=s) for s in range(3))
    assert total >= 600
