"""The guard in the round: screens, reputation, quarantine, audits, Sybil swarms and the attack
success rate, through the real engine and the runner."""

from __future__ import annotations

import pytest
import torch

from phalanx.aggregate import Mean
from phalanx.attacks import UpdateAttack
from phalanx.defenses import Reputation, ValidatorVote
from phalanx.defenses.foolsgold import FoolsGold
from phalanx.engine import FaultSchedule, Simulation
from phalanx.engine.guard import Guard
from phalanx.engine.swarm import NEVER
from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.network import Gossip, Star
from phalanx.range.runner import build
from phalanx.range.scenario import Scenario, ScenarioError, check_plugins, with_plugin_defaults
from phalanx.train import SGDConfig, Shards

SHAPE, CLASSES = (1, 2, 2), 3
SGD = SGDConfig(epochs=1, batch_size=64, lr=0.5)


def logistic():
    return MODELS.build("logistic", SHAPE, CLASSES)


class Constant(UpdateAttack):
    """Every malicious node sends ``value`` in every coordinate (NaN for invalid rows)."""

    knowledge = "none"

    def __init__(self, value: float):
        self.value = value

    def craft(self, view):
        return torch.full((view.n_malicious, 1, view.own_updates.shape[1]), self.value,
                          dtype=view.own_updates.dtype)


def learnable(make_shards, n: int):
    """Shards of one learnable task (labels from a fixed linear map), so honest updates agree."""
    shards = make_shards([12] * n, SHAPE, CLASSES)
    w = torch.randn(4, CLASSES, generator=torch.Generator().manual_seed(1))
    return Shards.from_parts(shards.x, (shards.x.flatten(1) @ w).argmax(1),
                             [shards.index[i, : int(shards.sizes[i])] for i in range(n)])


def star_sim(make_shards, n=8, malicious=(6, 7), attack=None, screens=(), rounds_to_quarantine=NEVER,
             decisions=None, diverse=False, **guard_kw):
    shards = make_shards([12] * n, SHAPE, CLASSES) if diverse else learnable(make_shards, n)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(malicious)] = True
    g = torch.Generator().manual_seed(9)
    sim = Simulation(flat_model=FlatModel(logistic()), initial=initial_row(logistic, 0), shards=shards,
                     test_x=torch.randn(30, *SHAPE, generator=g), test_y=torch.randint(0, CLASSES, (30,), generator=g),
                     topology=Star(n, 0), aggregator=Mean(), malicious=bad, faults=FaultSchedule([], n), sgd=SGD,
                     seed=0, update_attack=attack)
    rep = next((s for s in screens if isinstance(s, Reputation)), None)
    vote = ValidatorVote(n, threshold=rep.threshold if rep else 0.3, rounds=rounds_to_quarantine)
    sim.guard = Guard(list(screens), bad, "star", sim.events, vote, dim=int(sim.rows.shape[1]),
                      on_decision=None if decisions is None else decisions.append, **guard_kw)
    return sim


def records(sim, rounds):
    return list(sim.run(rounds))


def test_foolsgold_zeroes_identical_sybils_and_detection_is_perfect(make_shards):
    # honest nodes with unrelated data (random labels) drift apart, as FoolsGold assumes
    sim = star_sim(make_shards, attack=Constant(0.3), screens=[FoolsGold()], diverse=True)
    last = records(sim, 3)[-1]
    assert last["flagged"] == 2 and last["detect_f1"] == 1.0 and last["false_flags"] == 0
    # the two sybils' rows carried weight 0: the global model moved by the honest mean alone
    assert float(sim.global_row.abs().max()) < 5


def test_quarantine_after_k_rounds_is_a_decision_passed_to_the_hook(make_shards):
    decisions = []
    sim = star_sim(make_shards, attack=Constant(50.0), screens=[Reputation(forgetting=0.9, threshold=0.3, reference="median")],
                   rounds_to_quarantine=2, decisions=decisions)
    recs = records(sim, 5)
    assert sorted(d.node for d in decisions) == [6, 7]
    assert all(d.action == "quarantine" and d.voters == (-1,) for d in decisions)
    assert recs[-1]["participants"] == 6 and recs[-1]["quarantined"] == 2
    assert recs[-1]["honest_quarantined"] == 0 and recs[-1]["detect_f1"] == 1.0
    assert [d.as_dict() for d in decisions] == sim.guard.summary()["decisions"]
    kinds = [e["kind"] for e in sim.events]
    assert kinds.count("quarantine") == 2


def test_invalid_rows_are_evidence_in_reputation_and_never_crash(make_shards):
    sim = star_sim(make_shards, attack=Constant(float("nan")), screens=[Reputation(distance=0, cosine=0)])
    recs = records(sim, 2)
    assert recs[0]["rejected_rows"] == 2
    rep_state = sim.guard.state[0]
    # 5 per dropped row, twice; honest slots, with no check on, gather half an observation a round
    assert rep_state["beta"][0, 6] >= 10 and rep_state["beta"][0, 0] < 1
    assert recs[-1]["flagged"] == 2


def test_gossip_with_reputation_and_flame_runs_and_measures(make_shards):
    n = 10
    shards = learnable(make_shards, n)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[[0, 5]] = True
    g = torch.Generator().manual_seed(9)
    topo = Gossip(n, 0, graph="complete", graph_params={})
    sim = Simulation(flat_model=FlatModel(logistic()), initial=initial_row(logistic, 0), shards=shards,
                     test_x=torch.randn(30, *SHAPE, generator=g), test_y=torch.randint(0, CLASSES, (30,), generator=g),
                     topology=topo, aggregator=Mean(), malicious=bad, faults=FaultSchedule([], n), sgd=SGD, seed=0,
                     update_attack=Constant(30.0))
    from phalanx.defenses.flame import Flame
    sim.guard = Guard([Flame(), Reputation()], bad, "gossip", sim.events, ValidatorVote(n, rounds=2),
                      table_index=sim.table_index, dim=int(sim.rows.shape[1]))
    recs = records(sim, 4)
    assert recs[-1]["detect_recall"] == 1.0 and recs[-1]["quarantined"] == 2
    honest = ~bad
    assert float(sim.rows[honest].abs().max()) < 10  # the attackers' 30s never got in



def scenario(**over) -> Scenario:
    base = {"name": "t", "seed": 0, "rounds": 3, "model": "logistic",
            "data": {"dataset": "digits", "nodes": 8, "partition": "iid", "test_samples": 200},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.1, "strategy": "loop"}}
    from phalanx.range.scenario import deep_merge
    s = Scenario.model_validate(deep_merge(base, over))
    check_plugins(s)
    return with_plugin_defaults(s)


def run(s: Scenario):
    b = build(s)
    return b, list(b.simulation.run(s.rounds))


def test_foolsgold_in_gossip_is_a_one_line_scenario_error():
    with pytest.raises(ScenarioError, match="foolsgold: runs in star only"):
        build(scenario(topology={"name": "gossip", "graph": "ring"}, screens=["foolsgold"]))


def test_sybils_join_at_their_arrival_and_a_stake_budget_buys_identities():
    s = scenario(adversary={"sybils": {"budget": 350, "admission": {"name": "stake", "stake": 100}, "max": 5,
                                       "arrival": 2, "data": {"classes": [1], "samples": 30}}},
                 screens=["foolsgold"])
    b, recs = run(s)
    assert [r["participants"] for r in recs] == [8, 11, 11]
    assert b.malicious == [8, 9, 10, 11, 12]
    swarm = b.simulation.guard.summary()["swarm"]
    assert swarm["identities_initial"] == 3 and swarm["left"] == 50 and swarm["unit"] == "stake units"
    # every identity trains on a copy of the adversary's one shard: the digits 1
    shards = b.simulation.shards
    ys = shards.y[shards.index[8, : int(shards.sizes[8])]]
    assert set(ys.tolist()) == {1} and int(shards.sizes[12]) == 30


def test_respawn_rebuys_a_quarantined_identity_from_what_is_left():
    s = scenario(rounds=5, adversary={
        "update_attack": {"name": "gaussian", "std": 100.0},
        "sybils": {"budget": 350, "admission": {"name": "stake", "stake": 100}, "max": 2, "respawn": 3,
                   "data": {"samples": 30}}},
        screens=[{"name": "reputation"}], quarantine={"rounds": 1})
    b, recs = run(s)
    assert len(b.malicious) == 5  # 2 at once, 3 replacement slots
    swarm = b.simulation.guard.summary()["swarm"]
    assert swarm["identities_initial"] == 2 and swarm["identities_bought"] == 3
    assert swarm["slashed"] == 300 and swarm["left"] == 50
    assert any(e["kind"] == "swarm" and "buys node" in e["text"] for e in b.simulation.events)


def test_a_malformed_commitment_is_refused_at_registration_and_audits_catch_flipped_labels():
    s = scenario(rounds=4, adversary={"malicious": 2, "data_attack": {"name": "label_flip", "mode": "all_to_one"}},
                 provenance={"audits": 8, "corrupt": [3]}, screens=["reputation"])
    b, recs = run(s)
    events = b.simulation.events
    refused = [e for e in events if "refused at registration" in e["text"]]
    assert len(refused) == 1 and refused[0]["target"] == 3 and "32-byte" in refused[0]["text"]
    assert all(r["participants"] == 7 for r in recs)
    failed = {n for e in events if e["text"].startswith("audit failed") for n in e["target"]}
    assert failed == set(b.malicious)
    assert "label histogram diverges" in next(e["text"] for e in events if e["text"].startswith("audit failed"))


def test_attack_success_is_measured_with_and_without_attackers():
    attack = {"name": "badnets", "target": 0, "fraction": 0.5, "size": 2}
    _, clean = run(scenario(adversary={"data_attack": attack}))
    _, hit = run(scenario(adversary={"malicious": 4, "data_attack": attack}, rounds=4))
    assert 0 <= clean[-1]["attack_success"] <= 1 and "attack_success_max" in clean[-1]
    assert hit[-1]["attack_success"] > clean[-1]["attack_success"]


def test_free_rider_delta_reads_the_global_models_last_change():
    b, recs = run(scenario(adversary={"malicious": 2, "update_attack": {"name": "free_rider", "mode": "delta"}}))
    assert recs[-1]["accuracy"] is not None and b.simulation.last_delta is not None


def test_run_summary_keeps_the_guard_and_names_the_screens(tmp_path):
    from phalanx.range.runner import run_study
    # the chain is the plain mean, which the attackers' noise swamps: reputation reads the median
    s = scenario(adversary={"malicious": 2, "update_attack": {"name": "gaussian", "std": 50.0}},
                 screens=[{"name": "reputation", "reference": "median"}], quarantine={"rounds": 1})
    summary = run_study("t", "", [s], tmp_path, progress=False)
    run = summary["runs"][0]
    assert run["defense"] == "reputation -> mean"
    assert {d["node"] for d in run["guard"]["decisions"]} == set(run["malicious"])
    assert run["guard"]["detection"]["malicious_detected"] == 2
    assert (tmp_path / "report.html").read_text().count("Detection") >= 1


def test_grid_cells_with_sybils_or_a_measured_clean_baseline_validate_run_and_keep_the_guard(tmp_path, write_yaml):
    from phalanx.range.grid import load_grid, run_cell

    path = write_yaml("""
        grid: g
        base:
          rounds: 2
          data: {dataset: digits, nodes: 6, partition: iid, test_samples: 100}
          model: logistic
          train: {epochs: 1, batch_size: 32, lr: 0.1, strategy: loop}
        defenses: [{label: fg, screens: [foolsgold], aggregator: mean}]
        attacks:
          - {label: "k=2", data_attack: {name: label_flip}, sybils: {count: 2, data: {classes: [1], samples: 20}}}
          - {label: clean rate, malicious: 0, data_attack: {name: badnets, size: 2}}
        seeds: [0]
        """, "g.yaml")
    grid = load_grid(path, {}, {})
    assert [c.attack for c in grid.cells] == ["k=2", "clean rate"]
    result = run_cell(grid.cells[0].scenario.model_dump(mode="json"), str(tmp_path))
    assert result["status"] == "ok" and result["guard"]["swarm"]["identities_initial"] == 2
    assert "attack_success" in result["final"]


def test_malformed_updates_have_the_shapes_and_values_validation_refuses():
    from phalanx.attacks import UPDATE_ATTACKS, AttackView
    from phalanx.defenses import finite_rows, shape_ok

    view = AttackView(round=1, own_updates=torch.zeros(2, 5), receivers=torch.tensor([-1]),
                      generator=torch.Generator())
    assert not bool(finite_rows(UPDATE_ATTACKS.build("malformed", mode="nan").craft(view)).any())
    assert not bool(finite_rows(UPDATE_ATTACKS.build("malformed", mode="inf").craft(view)).any())
    assert not shape_ok(UPDATE_ATTACKS.build("malformed", mode="wrong_size").craft(view), (2, 1, 5))


def test_a_mistaken_quarantine_keeps_counting_as_a_false_flag():
    bad = torch.tensor([False, False, True])
    guard = Guard([], bad, "star", [], ValidatorVote(3))
    guard.vote.since[0] = 1  # honest node 0 was quarantined in round 1
    guard.present(2, torch.ones(3, dtype=torch.bool))
    out = guard.close_round(2)
    assert out["false_flags"] == 1 and out["detect_precision"] == 0.0 and out["detect_recall"] == 0.0
    assert out["quarantined"] == 1
