"""Peer sampling and scoring: Basalt's prefix-hierarchical ranks keep an attacker with many addresses
in few prefixes to a few slots where push-pull is taken over; gossipsub-style scores; the eclipse
study's gates (a fork accepted without the witness quorum, refused with it, the stall noticed)."""

from __future__ import annotations

import numpy as np

from phalanx.network.sampling import Basalt, PushPull, hierarchical_rank
from phalanx.network.scoring import PeerScores
from phalanx.range.eclipse import Checkpoints, addresses, run_one
from phalanx.range.scenario import EclipseSpec


def test_hierarchical_rank_orders_by_prefix_first():
    seeds = np.arange(64, dtype=np.uint64)
    a = np.array([(127 << 24) + (5 << 16) + 1, (127 << 24) + (5 << 16) + 2, (127 << 24) + (9 << 16) + 1], dtype=np.uint32)
    r = hierarchical_rank(seeds, a)
    # two addresses in one /16 tie on every prefix level above /24 ...
    one_16 = (r[:, 0] < r[:, 2]) == (r[:, 1] < r[:, 2])
    assert one_16.all()  # ... so they beat the third address together or lose together


def test_basalt_keeps_a_prefix_concentrated_attacker_to_few_slots_where_push_pull_falls():
    cfg = EclipseSpec(rounds=15, seeds=[0], samplers=["push_pull", "basalt"])
    cps = Checkpoints(4)
    naive = run_one(cfg, "push_pull", 0, cps)
    basalt = run_one(cfg, "basalt", 0, cps)
    assert naive["share"][-1] == 1.0 and naive["taken_at"] is not None
    assert max(basalt["share"]) <= 0.25 and basalt["taken_at"] is None
    # eclipsed, the naive gate accepts the fork every round; the witness quorum never does and notices
    assert naive["naive_forks"] >= 10 and naive["guarded_forks"] == 0 and naive["stall_noticed"] == cfg.stall_after


def test_attacker_addresses_sit_in_few_prefixes_of_127_8():
    a = addresses(EclipseSpec(), np.random.default_rng(0))
    assert (a >> 24 == 127).all()
    assert len(np.unique(a[200:] >> 16)) == 2 and len(np.unique(a[:200] >> 16)) == 200


def test_scores_punish_invalid_messages_colocation_and_behaviour_then_decay():
    a = np.array([(127 << 24) + (1 << 8) + i for i in range(5)] + [(127 << 24) + (9 << 16)], dtype=np.uint32)
    s = PeerScores(a)
    base = s.score()
    assert base[0] < base[5] and s.colocation()[0] == 5  # five peers in one /24
    s.invalid_message([5, 5])
    s.penalise([4], 3.0)
    s.deliver([3])
    sc = s.score()
    assert sc[5] == base[5] - 10 * 4 and sc[4] == base[4] - 10 * 4 and sc[3] == base[3] + 1
    for _ in range(60):
        s.decay()
    assert (s.invalid == 0).all() and (s.behaviour == 0).all()


def test_push_pull_draws_from_the_candidates():
    rng = np.random.default_rng(0)
    pp = PushPull(np.arange(10, dtype=np.uint32), 4, rng)
    view = pp.update(np.array([1, 2, 3]))
    assert set(view) <= {1, 2, 3}


def test_basalt_seed_resets_reopen_slots():
    rng = np.random.default_rng(0)
    b = Basalt(np.arange(100, dtype=np.uint32) + (127 << 24), 4, rng, resets=4, reset_every=1)
    first = b.update(np.arange(50)).copy()
    again = b.update(np.arange(50))
    assert not np.array_equal(first, again)  # every seed was redrawn
