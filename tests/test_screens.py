"""Screens (FoolsGold, FLAME, norm bounding, reputation), the validators' vote, admission and
provenance: hand-worked cases and the inputs where a wrong wiring would show."""

from __future__ import annotations

import pytest
import torch

from phalanx.core.commitment import hiding_commitment
from phalanx.defenses import (ADMISSION, READMISSION, SCREENS, Decision, Screening, ValidatorVote, audit,
                              beta_score, commit_stats, foolsgold_weights)
from phalanx.defenses.admission import ProofOfWork, Stake, Vouching, leading_zero_bits, solve, verify
from phalanx.defenses.flame import Flame, majority_cluster
from phalanx.defenses.norm_bound import NormBound
from phalanx.defenses.provenance import StatsOpening, histogram_divergence, stats_bytes
from phalanx.defenses.reputation import (Reputation, cosine_evidence, distance_evidence, forget_and_add,
                                         loss_evidence)

ALL = lambda m, k: torch.ones(m, k, dtype=torch.bool)  # noqa: E731


# ------------------------------------------------------------------------------------ FoolsGold
def test_foolsgold_worked_example():
    h = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [1, 1]]])
    assert foolsgold_weights(h, ALL(1, 4)).tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_foolsgold_ignores_masked_slots_even_when_they_hold_nan():
    h = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [float("nan"), 1]]])
    mask = torch.tensor([[True, True, True, False]])
    assert foolsgold_weights(h, mask).tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_foolsgold_screen_accumulates_history_so_repeated_collusion_shows():
    fg = SCREENS.build("foolsgold")
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(6, 40, generator=g)  # each honest node drifts its own way, every round
    state = {"history": torch.zeros(1, 9, 40)}
    for _ in range(5):
        sybil = torch.randn(40, generator=g) * 0.1 + torch.linspace(-1, 1, 40)  # one goal
        rows = torch.cat([honest + 0.3 * torch.randn(6, 40, generator=g),
                          sybil + 0.05 * torch.randn(3, 40, generator=g)])[None]
        screening, state = fg.screen(rows, ALL(1, 9), state)
    assert screening.flags[0].tolist() == [False] * 6 + [True] * 3
    assert bool((screening.weights[0, :6] > 0).all()) and bool((screening.weights[0, 6:] == 0).all())
    assert fg.topologies == ("star",)


# ------------------------------------------------------------------------------------ FLAME
def test_flame_keeps_the_majority_clips_to_the_median_and_sets_the_noise():
    g = torch.Generator().manual_seed(0)
    rows = torch.tensor([1.0, 0]) * torch.linspace(1, 3, 9)[:, None] + 0.01 * torch.randn(9, 2, generator=g)
    rows = torch.cat([rows, torch.tensor([[0.0, 5.0]])])[None]
    screening, _ = Flame(noise=0.01).screen(rows, ALL(1, 10), {})
    assert bool(screening.flags[0, 9]) and float(screening.weights[0, 9]) == 0
    median = rows[0].norm(dim=1).median()
    kept = screening.weights[0] > 0
    assert int(kept.sum()) >= 6  # a majority cluster (min_cluster_size = 6)
    assert bool((screening.rows[0][kept].norm(dim=1) <= median + 1e-5).all())
    assert float(screening.noise_std[0]) == pytest.approx(0.01 * float(median))


def test_majority_cluster_small_inputs_keep_everything():
    assert majority_cluster(torch.zeros(2, 2).numpy()).tolist() == [True, True]


# ------------------------------------------------------------------------------------ norm bounding
def test_norm_bound_worked_example():
    rows = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]])
    s, _ = NormBound(bound=1.0, noise=0.5).screen(rows, ALL(1, 2), {})
    assert torch.allclose(s.rows, torch.tensor([[[0.6, 0.8], [0.3, 0.4]]]))
    assert s.noise_std.tolist() == [0.5] and not bool(s.flags.any())


def test_screenings_chain_weights_multiply_flags_add_and_noise_adds_in_quadrature():
    a = Screening(torch.zeros(1, 2, 1), torch.tensor([[1.0, 0.5]]), torch.tensor([[False, True]]),
                  torch.tensor([3.0]))
    b = Screening(torch.ones(1, 2, 1), torch.tensor([[0.5, 1.0]]), torch.tensor([[True, False]]),
                  torch.tensor([4.0]))
    c = a.then(b)
    assert c.weights.tolist() == [[0.5, 0.5]] and c.flags.tolist() == [[True, True]]
    assert c.noise_std.tolist() == [5.0] and torch.equal(c.rows, b.rows)


# ------------------------------------------------------------------------------------ reputation
def test_beta_score_and_forgetting_worked_example():
    a, b = torch.zeros(1), torch.zeros(1)
    seen = torch.ones(1, dtype=torch.bool)
    assert float(beta_score(a, b)) == 0.5
    for pos, neg in ((1, 0), (1, 0), (0, 1)):
        a, b = forget_and_add(a, b, torch.tensor([float(pos)]), torch.tensor([float(neg)]), 0.5, seen)
    assert float(a) == 0.75 and float(b) == 1.0
    assert float(beta_score(a, b)) == pytest.approx(1.75 / 3.75)
    # a slot not seen this round keeps its evidence: no decay without an observation
    a2, b2 = forget_and_add(a, b, torch.ones(1), torch.ones(1), 0.5, ~seen)
    assert float(a2) == float(a) and float(b2) == float(b)


def test_evidence_sources_by_hand():
    rows = torch.tensor([[[1.0, 0], [1.1, 0], [0.9, 0], [-5.0, 0]]])
    ref = torch.tensor([[1.0, 0.0]])
    assert distance_evidence(rows, ALL(1, 4), ref, 2.0).tolist() == [[1, 1, 1, 0]]
    assert cosine_evidence(rows, ALL(1, 4), ref, 0.0).tolist() == [[1, 1, 1, 0]]
    losses = torch.tensor([[1.0, 1.1, 0.9, 9.0]])
    assert loss_evidence(losses, ALL(1, 4), 3.0).tolist() == [[1, 1, 1, 0]]


def test_reputation_drops_a_persistent_outlier_only_at_the_receiver_that_saw_it():
    rep = Reputation(forgetting=0.9, threshold=0.3)
    state = {"alpha": torch.zeros(2, 4, dtype=torch.float64), "beta": torch.zeros(2, 4, dtype=torch.float64)}
    good = torch.tensor([[1.0, 0], [1.1, 0], [0.9, 0], [1.0, 0.1]])
    bad = good.clone()
    bad[3] = torch.tensor([-5.0, 0])
    rows = torch.stack([good, bad])  # receiver 0 gets an honest slot 3, receiver 1 a hostile one
    for _ in range(3):
        state = rep.observe(rows, ALL(2, 4), rows[:, :3].mean(1), state)
    screening, _ = rep.screen(rows, ALL(2, 4), state)
    assert screening.flags.tolist() == [[False] * 4, [False, False, False, True]]
    assert screening.weights[1, 3] == 0 and bool((screening.weights[0] == 1).all())


def test_reputation_with_similarity_evidence_catches_identical_senders():
    rep = Reputation(distance=0, cosine=0, similarity=1)
    assert "history" in rep.state_shapes(3)
    state = {"alpha": torch.zeros(1, 4, dtype=torch.float64), "beta": torch.zeros(1, 4, dtype=torch.float64),
             "history": torch.zeros(1, 4, 3)}
    rows = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]]])
    for _ in range(3):
        state = rep.observe(rows, ALL(1, 4), rows.mean(1), state)
    assert (rep.scores(state)[0] < 0.3).tolist() == [False, False, True, True]


def test_reputation_root_loss_needs_losses():
    rep = Reputation(root_loss=1)
    with pytest.raises(ValueError, match="root"):
        rep.observe(torch.zeros(1, 2, 2), ALL(1, 2), torch.zeros(1, 2),
                    {"alpha": torch.zeros(1, 2), "beta": torch.zeros(1, 2)})


# ------------------------------------------------------------------------------------ the vote
def test_validator_vote_worked_example():
    vote = ValidatorVote(4, threshold=0.3, rounds=2, quorum=2 / 3)
    seen = torch.ones(3, 4, dtype=torch.bool)
    against = torch.zeros(3, 4, dtype=torch.bool)
    against[:2, 1] = True  # two of three validators against node 1
    scores = torch.full((3, 4), 0.5)
    flagged, decided = vote.step(4, against, seen, scores, [10, 11, 12])
    assert flagged.tolist() == [False, True, False, False] and decided == []
    flagged, decided = vote.step(5, against, seen, scores, [10, 11, 12])
    assert [d.node for d in decided] == [1] and decided[0].action == "quarantine"
    assert decided[0].votes == (10, 11) and decided[0].voters == (10, 11, 12)
    assert bool(vote.quarantined[1]) and bool(flagged[1])
    entry = decided[0].entry()
    assert entry["action"] == "quarantine" and entry["evidence"]["votes"] == [10, 11]


def test_one_vote_short_resets_the_streak():
    vote = ValidatorVote(2, rounds=2, quorum=2 / 3)
    seen = torch.ones(3, 2, dtype=torch.bool)
    two = torch.zeros(3, 2, dtype=torch.bool)
    two[:2, 0] = True
    one = torch.zeros(3, 2, dtype=torch.bool)
    one[0, 0] = True
    vote.step(1, two, seen, torch.zeros(3, 2), [0, 1, 2])
    vote.step(2, one, seen, torch.zeros(3, 2), [0, 1, 2])
    _, decided = vote.step(3, two, seen, torch.zeros(3, 2), [0, 1, 2])
    assert decided == [] and not bool(vote.quarantined[0])


def test_readmission_after_rounds():
    vote = ValidatorVote(1, rounds=1, readmit=READMISSION.build("after", rounds=3))
    seen = against = torch.ones(1, 1, dtype=torch.bool)
    _, d1 = vote.step(2, against, seen, torch.zeros(1, 1), [0])
    quiet = torch.zeros(1, 1, dtype=torch.bool)
    _, d2 = vote.step(4, quiet, quiet, torch.zeros(1, 1), [0])
    _, d3 = vote.step(5, quiet, quiet, torch.zeros(1, 1), [0])
    assert [d.action for d in d1 + d2 + d3] == ["quarantine", "release"] and d3[0].round == 5
    assert isinstance(d3[0], Decision) and not bool(vote.quarantined[0])


# ------------------------------------------------------------------------------------ admission
def test_hashcash_solves_and_verifies():
    nonce, tries = solve(b"challenge", 8)
    assert verify(b"challenge", nonce, 8) and tries == nonce + 1
    assert not verify(b"other", nonce, 30)
    assert leading_zero_bits(bytes([0, 0x0F]) + bytes(30)) == 12


def test_proof_of_work_costs_two_to_the_bits_on_average():
    pow_ = ProofOfWork(bits=6)
    bought = pow_.buy(64_000, 100_000, torch.Generator().manual_seed(0))
    assert sum(bought.costs) <= 64_000 and bought.left == 64_000 - sum(bought.costs)
    assert bought.identities == pytest.approx(1000, rel=0.1)  # 64,000 / 2^6
    assert pow_.honest_cost() == 64


def test_stake_and_open_and_vouching_worked_examples():
    g = torch.Generator()
    assert Stake(stake=10).buy(100, 50, g).identities == 10
    assert Stake(stake=10).buy(100, 4, g).identities == 4
    assert ADMISSION.build("open").buy(0, 7, g).identities == 7
    v = Vouching(vouches=2, insiders=0, bribe=20).buy(100, 5, g)
    assert v.costs == [40.0, 20.0, 0.0, 0.0, 0.0] and v.left == 40
    assert Vouching(vouches=2, insiders=0, bribe=20).buy(30, 5, g).identities == 0


# ------------------------------------------------------------------------------------ provenance
def opening(count=4, hist=(2, 2), salt=b"s" * 32, commitment=None):
    return StatsOpening(commitment or commit_stats(count, hist, salt), count, hist, salt)


def test_stats_commitment_is_a_hiding_commitment_over_cbor():
    assert commit_stats(3, [1, 2], b"k" * 32) == hiding_commitment(b"k" * 32, stats_bytes(3, [1, 2]))
    assert stats_bytes(3, [1, 2]).hex() == "a265636f756e740369686973746f6772616d820102"


def test_audit_passes_a_true_commitment_and_fails_a_divergent_one():
    assert audit(opening(), torch.tensor([0, 0, 1, 1]), 2).ok
    got = audit(opening(100, (50, 50)), torch.tensor([0] * 90 + [1] * 10), 2, tolerance=0.1)
    assert not got.ok and "diverges" in got.reason and got.divergence == pytest.approx(0.4)
    assert histogram_divergence([50, 50], [90, 10]) == pytest.approx(0.4)


def test_audit_checks_claimed_counts_against_the_commitment():
    got = audit(opening(), torch.tensor([0, 0, 1, 1]), 2, claims=[400.0])
    assert not got.ok and "claimed 400" in got.reason


@pytest.mark.parametrize("bad,reason", [
    (StatsOpening(b"x" * 31, 4, (2, 2), b"s" * 32), "32 bytes"),
    (opening(count=-1, hist=(2, 2), commitment=b"c" * 32), "integer >= 0"),
    (opening(hist=(2, 1, 1)), "3 classes"),
    (opening(count=5, hist=(2, 2), commitment=b"c" * 32), "sums to 4"),
    (StatsOpening(commit_stats(4, (2, 2), b"s" * 32), 4, (3, 1), b"s" * 32), "does not open"),
    (StatsOpening(commit_stats(4, (2, 2), b"s" * 32), 4, (2, 2), b"short"), "salt"),
    (StatsOpening(commit_stats(4, (2, 2), b"s" * 32), 4, (2.0, 2), b"s" * 32), "not an integer"),
    (object(), "lacks a field"),
])
def test_malformed_openings_are_refused_with_their_reason_never_raised(bad, reason):
    got = audit(bad, torch.tensor([0, 0, 1, 1]), 2)
    assert not got.ok and got.reason.startswith("malformed commitment") and reason in got.reason
