"""The defense side of a round: declared f per receiver, rows that never reach a rule, claims
that are capped, FLTrust's root update and a rule's state, all through the real engine.

Test rules and attacks are defined here, so each test sees exactly one mechanism.
"""

from __future__ import annotations

import pytest
import torch
from test_engine import FULL_BATCH, TOL, gossip, local, logistic, make_sim

from phalanx.aggregate import Aggregator, Chain, Mean
from phalanx.attacks import UpdateAttack
from phalanx.defenses import cap_claims, finite_rows
from phalanx.network import Star
from phalanx.train import Shards


class Constant(UpdateAttack):
    """Send ``value`` in every coordinate and claim ``claim`` samples (None: the true count)."""

    knowledge = "own_data"

    def __init__(self, value: float, claim: float | None = None, shape=None):
        self.value, self.claim, self.shape = value, claim, shape

    def craft(self, view):
        n, d = view.own_updates.shape
        return torch.full(self.shape or (n, 1, d), self.value)

    def claims(self, view):
        return None if self.claim is None else torch.full((view.n_malicious,), self.claim)


class EchoRoot(Aggregator):
    """Returns the trusted root update itself."""

    label = "echo_root"
    needs_root = True
    bound = "none"

    def aggregate(self, rows, mask, weights=None, context=None):
        return context.root


class CountRounds(Aggregator):
    """Returns its previous output plus one: its state is the engine's to keep."""

    label = "count_rounds"
    stateful = True
    bound = "none"

    def aggregate(self, rows, mask, weights=None, context=None):
        prev = context.previous if context.previous is not None else torch.zeros_like(rows[:, 0])
        return prev + 1


class NeedsFive(Aggregator):
    """Needs n >= 2f + 5 rows; otherwise a plain mean (the bound is what the test checks)."""

    label = "needs_five"
    bound = "none"

    def min_rows(self, f):
        return 2 * f + 5

    def requirement(self):
        return "n >= 2f + 5"

    def aggregate(self, rows, mask, weights=None, context=None):
        return Mean().aggregate(rows, mask)


# ------------------------------------------------------------------------- hostile rows
def test_cap_claims_by_hand():
    w, capped = cap_claims(torch.tensor([2.0, 3.0, 1e9, float("nan"), -4.0]), 3.0)
    # median of [2, 3, 1e9, 0, 0] is 2 (torch takes the lower middle), cap 6
    assert w.tolist() == [2.0, 3.0, 6.0, 0.0, 0.0] and capped == 1
    same, none = cap_claims(torch.tensor([2.0, 1e9]), None)
    assert same.tolist() == [2.0, 1e9] and none == 0


def test_nan_rows_never_reach_the_rule_and_count_as_evidence(make_shards):
    sim = make_sim(make_shards([4, 4, 4, 4]), Star(4, 0), malicious=[2],
                   update_attack=Constant(float("nan")), weighting="uniform")
    g0 = sim.global_row.clone()
    record = next(sim.run(1))
    expected = sum(local(g0, sim.shards, i) for i in (0, 1, 3)) / 3  # the three honest rows
    torch.testing.assert_close(sim.global_row, expected, **TOL)
    assert record["rejected_rows"] == 1 and sim.rejected.tolist() == [0, 0, 1, 0]
    assert any(e["kind"] == "evidence" and e["target"] == [2] for e in sim.events)


def test_wrong_shape_rows_are_dropped_not_a_crash(make_shards):
    sim = make_sim(make_shards([4, 4, 4]), Star(3, 0), malicious=[0],
                   update_attack=Constant(1.0, shape=(1, 1, 7)))
    record = next(sim.run(1))
    assert record["rejected_rows"] == 1 and int(sim.rejected[0]) == 1
    assert "wrong-shape" in sim.events[-1]["text"]
    assert bool(finite_rows(sim.global_row[None])[0])


def test_gossip_nan_rows_are_dropped_per_receiver(make_shards):
    # complete graph on 4 nodes: node 3 is malicious and sends NaN to the 3 others
    sim = make_sim(make_shards([4, 4, 4, 4]), gossip(4, "complete"), malicious=[3],
                   update_attack=Constant(float("nan")))
    record = next(sim.run(1))
    assert record["rejected_rows"] == 3 and sim.rejected.tolist() == [0, 0, 0, 3]
    assert torch.isfinite(sim.rows[:3]).all()


# ------------------------------------------------------------------------- claimed weights
def _inflation_update(cap):
    shards = Shards.from_parts(*_pool(20), [torch.arange(i * 4, i * 4 + 4) for i in range(5)])
    sgd = type(FULL_BATCH)(epochs=1, batch_size=64, lr=1e-6)  # honest updates are ~0
    sim = make_sim(shards, Star(5, 0), malicious=[4], update_attack=Constant(100.0, claim=1e9),
                   sgd=sgd, weight_cap=cap)
    g0 = sim.global_row.clone()
    next(sim.run(1))
    return (sim.global_row - g0).mean().item()


def _pool(n):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_weight_inflation_is_capped():
    # trusted, the 1e9 claim makes the attacker's row the whole mean; capped at 3 x median (4
    # samples), it weighs 12 against the honest 4 x 4 = 16
    assert _inflation_update(None) == pytest.approx(100.0, rel=1e-5)
    assert _inflation_update(3.0) == pytest.approx(100.0 * 12 / 28, rel=1e-3)


# ------------------------------------------------------------------------- declared f
def test_gossip_declared_share_is_rounded_up_per_receiver(make_shards):
    sim = make_sim(make_shards([2] * 10), gossip(10, "random_regular", degree=4),
                   declared_share=0.3)
    assert sim.gossip_f.tolist() == [2] * 10  # ceil(0.3 * 4)
    sim = make_sim(make_shards([2] * 10), gossip(10, "random_regular", degree=4), declared_f=1)
    assert sim.gossip_f.tolist() == [1] * 10


def test_star_refuses_rows_below_the_rule_bound_and_says_which(make_shards):
    sim = make_sim(make_shards([3] * 6), Star(6, 0), aggregator=NeedsFive(), declared_f=1)
    g0 = sim.global_row.clone()
    record = next(sim.run(1))  # 6 rows < 2*1 + 5
    assert record["availability"] == 0.0 and torch.equal(sim.global_row, g0)
    assert "needs_five got 6 rows with f=1, needs n >= 2f + 5 (7 rows)" in sim.events[-1]["text"]


def test_gossip_receiver_below_its_bound_keeps_its_model(make_shards):
    # ring: 3 rows per receiver; needs_five with f=0 wants 5, so every node keeps its trained model
    sim = make_sim(make_shards([3] * 5), gossip(5, "ring"), aggregator=NeedsFive(), declared_f=0)
    g0 = sim.rows[0].clone()
    record = next(sim.run(1))
    torch.testing.assert_close(sim.rows[0], local(g0, sim.shards, 0), **TOL)
    assert record["availability"] == 0.0
    assert "node 0: needs_five got 3 rows with f=0" in sim.events[0]["text"]


# ------------------------------------------------------------------------- root and state
def test_star_root_update_is_the_server_training_on_its_root_data(make_shards):
    shards = make_shards([3, 3, 3])
    root = make_shards([5], seed=8)
    sim = make_sim(shards, Star(3, 0), aggregator=EchoRoot(), root_shards=root)
    g0 = sim.global_row.clone()
    next(sim.run(1))
    torch.testing.assert_close(sim.global_row, local(g0, root, 0), **TOL)


def test_a_rule_that_needs_a_root_refuses_a_star_without_root_data(make_shards):
    with pytest.raises(ValueError, match="root"):
        make_sim(make_shards([3, 3]), Star(2, 0), aggregator=EchoRoot())


def test_gossip_root_is_the_receiver_own_update(make_shards):
    # EchoRoot in gossip: each node's new model is its model before the round plus its own update,
    # i.e. exactly its locally trained model
    sim = make_sim(make_shards([3, 4, 5]), gossip(3, "complete"), aggregator=EchoRoot())
    g0 = sim.rows[0].clone()
    next(sim.run(1))
    for i in range(3):
        torch.testing.assert_close(sim.rows[i], local(g0, sim.shards, i), **TOL)


@pytest.mark.parametrize("topology", ["star", "gossip"])
def test_rule_state_is_kept_by_the_engine_across_rounds(make_shards, topology):
    topo = Star(3, 0) if topology == "star" else gossip(3, "complete")
    sim = make_sim(make_shards([3, 3, 3]), topo, aggregator=Chain([], CountRounds()))
    list(sim.run(3))
    assert torch.all(sim.previous == 3)


def test_logistic_helper_is_the_model_the_engine_trains():
    assert sum(p.numel() for p in logistic().parameters()) == 15


class PerReceiver(UpdateAttack):
    """Tell each receiver something different: receiver r gets the update ``r`` (its id) everywhere."""

    knowledge = "none"

    def craft(self, view):
        n, d = view.own_updates.shape
        ids = view.receivers.to(view.own_updates.dtype)
        return ids[None, :, None].expand(n, len(ids), d).clone()


def test_gossip_malicious_node_may_tell_each_neighbour_something_different(make_shards):
    shards = make_shards([3, 4, 5, 6])
    sim = make_sim(shards, gossip(4, "complete"), malicious=[3], update_attack=PerReceiver())
    g0 = sim.rows[0].clone()
    next(sim.run(1))
    trained = [local(g0, shards, i) for i in range(3)]
    for i in range(3):  # uniform mixing over the 4 slots; node 3 sent g0 + i to receiver i
        expected = (sum(trained) + g0 + i) / 4
        torch.testing.assert_close(sim.rows[i], expected, **TOL)


def test_finite_rows_in_chunks_equals_the_whole_check():
    from phalanx.defenses.validation import finite_rows

    x = torch.randn(50, 7, 300)
    x[3, 2, 5], x[40, 0, 299], x[49, 6, 0] = float("nan"), float("inf"), -float("inf")
    chunked = finite_rows(x, chunk_bytes=4000)  # about 3 rows a chunk
    assert chunked.shape == (50, 7) and torch.equal(chunked, torch.isfinite(x).all(-1))
    assert int((~chunked).sum()) == 3
