"""The distance-based rules: Krum, Multi-Krum, Bulyan and minimum diameter averaging (MDA).

Hand-worked examples on a line (the scores are sums of squared gaps, computable by hand), ties,
the per-receiver batched form against the single call, NaN in empty slots, the row conditions,
bad hyper-parameters, and float32 precision far from the origin.
"""

from __future__ import annotations

import itertools

import pydantic
import pytest
import torch

from phalanx.aggregate import AGGREGATORS, Context, InsufficientRows, get
from phalanx.aggregate.bulyan import mean_around_median
from phalanx.aggregate.krum import krum_order


def line(*values: float, dtype=torch.float64) -> torch.Tensor:
    """Rows on a line: one coordinate each."""
    return torch.tensor(values, dtype=dtype)[:, None]


# ----------------------------------------------------------------------------- Krum


def test_krum_picks_the_row_whose_two_nearest_are_nearest():
    # f = 1, n = 5: 2 neighbours. Scores: 0 -> 1+4, 1 -> 1+1, 2 -> 1+4, 4 -> 4+9, 10 -> 36+64
    rows = line(0, 1, 2, 4, 10)

    out = get("krum", f=1)(rows)

    assert out.tolist() == [1.0]


def test_krum_scores_are_the_sums_worked_by_hand():
    rows = line(0, 1, 2, 4, 10)[None]
    mask = torch.ones(1, 5, dtype=torch.bool)
    d2 = (rows - rows.transpose(1, 2)).pow(2)

    order, score = krum_order(d2, mask, torch.tensor([2]))

    assert score.tolist() == [[5.0, 2.0, 5.0, 13.0, 100.0]]
    # 0 and 2 tie at 5; their third-nearest distances are 16 and 4: row 2 (slot 2) ranks first
    assert order.tolist() == [[1, 2, 0, 3, 4]]


def test_krum_counts_n_minus_f_minus_2_neighbours_as_the_paper():
    # f = 0, n = 4: two neighbours. 0 -> 1+4, 1 -> 1+1, 2 -> 1+4: row 1. Counting n - f - 1 = 3
    # (ByzFL) would give 0 -> 1+4+100, 1 -> 1+1+81, 2 -> 1+4+64: row 2.
    out = get("krum", f=0)(line(0, 1, 2, 10))

    assert out.tolist() == [1.0]


def test_krum_tie_goes_to_the_smaller_next_nearest_distance():
    # rows 1 (slot 0) and 2 (slot 1) both score 1+1 = 2; their third-nearest distances tie at 4
    # and the fourth are 169 (1 to 14) and 144 (2 to 14): row 2 wins although its slot is
    # higher. (Small integers: the centred distances are exact, and so is the tie.)
    out = get("krum", f=1)(line(1, 2, 0, 3, 14))

    assert out.tolist() == [2.0]


def test_krum_closest_pair_tie_does_not_depend_on_the_order():
    # f = 0, n = 3: one neighbour, so the closest pair (4.3, 5.2) always ties; 4.3 is nearer
    # to the third row (2.4) and wins in every order
    rows = line(4.3, 2.4, 5.2)

    outs = {get("krum")(rows[list(p)]).item() for p in itertools.permutations(range(3))}

    assert outs == {4.3}


def test_krum_full_tie_goes_to_the_lowest_slot():
    # f = 0, q = 2: -1 and 1 both score 4+4 and both have 16 next: a mirror-image tie
    assert get("krum")(line(-3, -1, 1, 3)).tolist() == [-1.0]
    assert get("krum")(line(3, 1, -1, -3)).tolist() == [1.0]


def test_krum_can_choose_a_bad_row_next_to_the_honest_ones_within_its_ball():
    # honest rows on the x axis; the bad row (1.5, 0.1) scores 0.26 + 0.26, the best honest
    # row 0.26 + 1: Krum returns it, off the honest hull, but within its ball
    honest = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    rows = torch.cat([honest, torch.tensor([[1.5, 0.1]])])
    rule = get("krum", f=1)

    out = rule(rows)

    assert torch.allclose(out, torch.tensor([1.5, 0.1]))
    radius = float((honest - honest.mean(0)).norm(dim=1).max())  # 1.5
    assert float((out - honest.mean(0)).norm()) <= rule.ball_factor(5, 1) * radius
    assert rule.ball_factor(5, 1) == pytest.approx(1 + 2 * 2**0.5)


def test_multi_krum_averages_the_n_minus_f_best():
    # scores 5, 2, 5, 13, 100: the best four are 1, 0, 2, 4
    out = get("multi_krum", f=1)(line(0, 1, 2, 4, 10))

    assert out.tolist() == [1.75]


def test_multi_krum_m_breaks_ties_and_is_capped_at_n():
    rows = line(0, 1, 2, 4, 13)  # the mean, 4, is exact: so are the distances and the tie

    two = get("multi_krum", f=1, m=2)(rows)  # 1 (score 2), then 2 (ties 0 at 5, nearer next)
    all_rows = get("multi_krum", f=1, m=50)(rows)  # min(50, 5) = 5 rows

    assert two.tolist() == [1.5]
    assert all_rows.tolist() == [4.0]


def test_krum_in_two_dimensions():
    # f = 1: 2 neighbours; the corner (0, 0) of a unit square has neighbours at 1 and 1
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.2], [9.0, 9.0]])

    out = get("krum", f=1)(rows)

    assert out.tolist() == [0.0, 0.0]


def test_krum_float32_far_from_the_origin_keeps_the_right_choice():
    # rows 6e5..1e6 + multiples of 1/16 (exact in float32): their squared norms are ~1e14, so a
    # Gram matrix of the raw rows cancels away every digit of the distances
    g = torch.Generator().manual_seed(0)
    d = 64
    offsets = torch.randint(-8, 9, (7, d), generator=g).double() / 16
    offsets[6] += 3.0
    base = (6e5 + 4e5 * torch.rand(d, generator=g, dtype=torch.float64)).round()
    rows = (base + offsets).float()
    assert torch.equal(rows.double() - base, offsets)  # the float32 rows are exact
    exact = get("krum", f=1)(offsets)

    out = get("krum", f=1)(rows)

    assert torch.equal(out.double() - base, exact)
    # the test bites: distances from the raw Gram matrix choose another row
    sq = rows.pow(2).sum(1)
    raw = (sq[:, None] + sq[None, :] - 2 * rows @ rows.T).clamp(min=0).double()
    naive, _ = krum_order(raw[None], torch.ones(1, 7, dtype=torch.bool), torch.tensor([4]))
    assert not torch.equal(offsets[naive[0, 0]], exact)


# ----------------------------------------------------------------------------- Bulyan


def test_bulyan_worked_example():
    # f = 1: theta = 5, beta = 3. Krum picks 3, 4, 1, 6, 10 in turn (see the module docstring);
    # the median of 1, 3, 4, 6, 10 is 4 and its three closest values 4, 3, 6 average to 13/3
    out = get("bulyan", f=1)(line(0, 1, 3, 4, 6, 10, 100))

    assert out.tolist() == [pytest.approx(13 / 3)]


def test_bulyan_does_not_depend_on_the_order_of_the_rows():
    rows = line(0, 1, 3, 4, 6, 10, 100)
    g = torch.Generator().manual_seed(0)

    outs = [get("bulyan", f=1)(rows[torch.randperm(7, generator=g)]).item() for _ in range(30)]

    assert outs == pytest.approx([13 / 3] * 30)


def test_bulyan_with_f_zero_is_the_mean():
    rows = torch.tensor([[0.0, 1.0], [2.0, 5.0], [4.0, 0.0]])

    out = get("bulyan", f=0)(rows)

    assert torch.allclose(out, torch.tensor([2.0, 2.0]))


def test_bulyan_mean_around_median_by_hand():
    # selection 0, 1, 2, 4, 10 (slot 5 not chosen): median 2, distances 2, 1, 0, 2, 8; three
    # closest: 2, 1, then 0 and 4 tie at 2 and the smaller value 0 goes first
    x = torch.tensor([[10.0], [4.0], [0.0], [2.0], [1.0], [-50.0]])[None]
    chosen = torch.tensor([[True, True, True, True, True, False]])

    out = mean_around_median(x, chosen, torch.tensor([3]))

    assert out.tolist() == [[1.0]]


def test_bulyan_median_of_an_even_count_is_the_middle_mean():
    # values 0, 1, 3, 10: median 2; the two closest are 1 and 3
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])[None]

    out = mean_around_median(x, torch.ones(1, 4, dtype=torch.bool), torch.tensor([2]))

    assert out.tolist() == [[2.0]]


def reference_bulyan(rows: torch.Tensor, f: int) -> torch.Tensor:
    """The paper's Bulyan with plain loops, for comparison."""
    n = rows.shape[0]
    remaining, selected = list(range(n)), []
    for _ in range(n - 2 * f):
        q = max(len(remaining) - f - 2, 0)
        keys = []
        for i in remaining:
            dists = sorted(float((rows[i] - rows[j]).pow(2).sum()) for j in remaining if j != i)
            dists += [float("inf")] * 2
            keys.append((sum(dists[:q]), dists[q], dists[q + 1], i))
        pick = min(keys)[3]
        remaining.remove(pick)
        selected.append(pick)
    s = rows[sorted(selected)]
    beta = len(selected) - 2 * f
    out = []
    for c in range(rows.shape[1]):
        values = sorted(s[:, c].tolist())
        med = (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2
        closest = sorted(values, key=lambda v: abs(v - med))[:beta]  # stable: smaller first
        out.append(sum(closest) / beta)
    return torch.tensor(out, dtype=rows.dtype)


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (12, 2), (8, 0)])
def test_bulyan_matches_a_loop_reference(n, f):
    g = torch.Generator().manual_seed(n * 10 + f)
    rows = torch.randn(n, 5, generator=g, dtype=torch.float64)
    rows[:f] = rows[:f] * 30 + 10  # f far-off rows

    out = get("bulyan", f=f)(rows)

    assert torch.allclose(out, reference_bulyan(rows, f), rtol=1e-12, atol=1e-12)


def test_bulyan_median_stage_does_not_depend_on_row_order_even_with_ties():
    # per coordinate, ties in distance to the median go to the smaller value, not the lower slot
    x = torch.tensor([[10.0, 1.0], [4.0, 3.0], [0.0, 2.0], [2.0, 0.0], [1.0, 4.0]])
    chosen = torch.ones(1, 5, dtype=torch.bool)
    beta = torch.tensor([2])

    outs = [mean_around_median(x[list(p)][None], chosen, beta)
            for p in itertools.permutations(range(5))]

    # coordinate 0: values 0, 1, 2, 4, 10, median 2, nearest 2 then 1: (2 + 1) / 2; coordinate
    # 1: values 0..4, median 2, then 1 and 3 tie: the smaller goes first, (2 + 1) / 2, not 2.5
    assert all(torch.equal(o, torch.tensor([[1.5, 1.5]])) for o in outs)


# ----------------------------------------------------------------------------- MDA


def test_mda_worked_example():
    # subsets of three: {0,1,3}: 3, {0,1,10}: 10, {0,3,10}: 10, {1,3,10}: 9
    out = get("mda", f=1)(line(0, 1, 3, 10))

    assert out.tolist() == [pytest.approx(4 / 3)]


def test_mda_full_tie_goes_to_the_first_subset_in_combination_order():
    # {0, 1} and {1, 2} (rows 0, 1 and 1, 2) both have diameter 1 and spread 1: the first is kept
    out = get("mda", f=1)(line(0, 1, 2))

    assert out.tolist() == [0.5]


def test_mda_diameter_tie_goes_to_the_smaller_spread_unless_ties_first():
    # without 6 or without 0 the diameter is 5 either way; {5, 2, 1, 0} has the smaller sum of
    # squared distances (56 against 68), {6, 5, 2, 1} comes first in combination order (ByzFL)
    rows = line(6, 5, 2, 1, 0)

    spread = get("mda", f=1)(rows)
    first = get("mda", f=1, ties="first")(rows)

    assert spread.tolist() == [2.0] and first.tolist() == [3.5]
    assert get("mda", f=1, ties="first").permutation_invariant is False
    assert get("mda", f=1).permutation_invariant is True


def test_mda_does_not_depend_on_the_order_of_the_rows():
    # five random rows with f = 1: two subsets share the smallest diameter (the property tests'
    # first counterexample to slot-order ties)
    rows = torch.tensor([[1.7312, 0.4406, 1.1244, 3.0254], [1.1462, 1.1854, -1.0064, 1.6516],
                         [0.7350, 1.1203, 0.7795, 2.9202], [0.9682, 1.9076, 0.0917, 0.9953],
                         [2.3776, 0.5568, -0.4576, 1.2132]], dtype=torch.float64)
    expected = rows[[1, 2, 3, 4]].mean(0)  # diameter 2.7313 like {0, 1, 2, 4}, smaller spread

    outs = [get("mda", f=1)(rows[list(p)]) for p in itertools.permutations(range(5))]

    assert all(torch.allclose(o, expected, rtol=1e-12) for o in outs)


def test_mda_ignores_a_far_row_in_two_dimensions():
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [50.0, 50.0]])

    out = get("mda", f=1)(rows)

    assert out.tolist() == [0.5, 0.5]


def test_mda_too_many_subsets_names_the_count():
    rows = torch.randn(10, 2, dtype=torch.float64)

    with pytest.raises(ValueError, match=r"C\(10, 3\) = 120 .*max_subsets=100"):
        get("mda", f=3, max_subsets=100)(rows)
    assert get("mda", f=3, max_subsets=120)(rows).shape == (2,)


def test_mda_scores_subsets_in_chunks_like_one_pass(monkeypatch):
    from phalanx.aggregate import mda

    g = torch.Generator().manual_seed(3)
    rows = torch.randn(3, 9, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    whole = get("mda", f=3).aggregate(rows, mask)

    monkeypatch.setattr(mda, "_CHUNK_ELEMENTS", 50)  # 1 subset per chunk at 3 x 15 pairs
    chunked = get("mda", f=3).aggregate(rows, mask)

    assert torch.equal(whole, chunked)


def reference_mda(rows: torch.Tensor, f: int, ties: str = "spread") -> torch.Tensor:
    n = rows.shape[0]
    best, best_key = None, (float("inf"), float("inf"))
    for subset in itertools.combinations(range(n), n - f):
        dist = [float((rows[i] - rows[j]).norm()) for i, j in itertools.combinations(subset, 2)]
        key = (max(dist, default=0.0), sum(x * x for x in dist) if ties == "spread" else 0.0)
        if key < best_key:
            best, best_key = subset, key
    return rows[list(best)].mean(0)


@pytest.mark.parametrize("ties", ["spread", "first"])
@pytest.mark.parametrize("n,f", [(5, 2), (8, 3), (6, 1), (1, 0), (5, 1)])
def test_mda_matches_a_loop_reference(n, f, ties):
    g = torch.Generator().manual_seed(n + 100 * f)
    rows = torch.randn(n, 3, generator=g, dtype=torch.float64)

    out = get("mda", f=f, ties=ties)(rows)

    assert torch.allclose(out, reference_mda(rows, f, ties), rtol=1e-12)


# ----------------------------------------------------------------------------- all four

RULES = [("krum", {}), ("multi_krum", {}), ("multi_krum", {"m": 3}), ("bulyan", {}), ("mda", {})]


def ragged(dtype=torch.float64, seed=0):
    """Receivers with different row counts, holes in the slots, NaN and inf in empty slots."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(4, 12, 3, generator=g, dtype=dtype) * 2
    rows[:, :2] += 40  # a couple of far rows, wherever they are real
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[0, [3, 7]] = False  # 10 rows, with holes
    mask[1, 9:] = False  # 9 rows
    mask[2, ::2] = False  # 6 rows
    mask[3, 11] = False  # 11 rows
    rows[~mask] = float("nan")
    rows[0, 3, 0] = float("inf")
    f = torch.tensor([1, 2, 0, 2])
    return rows, mask, f


@pytest.mark.parametrize("name,params", RULES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_call_equals_single_calls_per_receiver(name, params, dtype):
    rows, mask, f = ragged(dtype)
    rule = get(name, **params)

    out = rule.aggregate(rows, mask, None, Context(f=f))

    assert out.dtype == dtype and out.shape == (4, 3)
    assert torch.isfinite(out).all()  # no NaN from the empty slots
    for r in range(4):
        if not bool(rule.admissible(mask[r].sum()[None], f[r][None])[0]):
            continue
        single = rule(rows[r][mask[r]], context=Context(f=f[r : r + 1]))
        assert torch.allclose(out[r], single, rtol=1e-5 if dtype == torch.float32 else 1e-12), r


@pytest.mark.parametrize("name,params", RULES)
def test_a_receiver_below_its_bound_does_not_break_the_others(name, params):
    rows, mask, f = ragged()
    mask[1, 2:] = False  # 2 rows: below every rule's bound for f = 2
    rule = get(name, **params)

    out = rule.aggregate(rows, mask, None, Context(f=f))

    assert not bool(rule.admissible(torch.tensor([2]), torch.tensor([2]))[0])
    assert torch.isfinite(out).all()
    assert torch.allclose(out[3], rule(rows[3][mask[3]], context=Context(f=f[3:4])))


@pytest.mark.parametrize("name,params", RULES)
def test_rules_output_one_of_or_within_the_far_free_rows(name, params):
    # f far-away rows are ignored: the output stays within the box of the near rows
    g = torch.Generator().manual_seed(7)
    near = torch.rand(9, 2, generator=g, dtype=torch.float64)
    rows = torch.cat([near, torch.tensor([[1e3, -1e3], [-1e4, 5e3]], dtype=torch.float64)])

    out = get(name, f=2, **params)(rows)

    assert bool((out >= near.min(0).values).all() and (out <= near.max(0).values).all())


@pytest.mark.parametrize("name,formula,n,f", [
    ("krum", "n >= 2f + 3", 4, 1), ("multi_krum", "n >= 2f + 3", 6, 2),
    ("bulyan", "n >= 4f + 3", 6, 1), ("mda", "n >= 2f + 1", 4, 2),
])
def test_too_few_rows_raise_with_the_formula(name, formula, n, f):
    rows = torch.randn(n, 2)

    with pytest.raises(InsufficientRows) as err:
        get(name, f=f)(rows)

    assert str(err.value).startswith(f"{name}: got {n} rows with f={f}, needs {formula}")


def test_the_bound_counts_per_receiver():
    f = torch.tensor([0, 1, 2, 3])

    assert get("krum").min_rows(f).tolist() == [3, 5, 7, 9]
    assert get("bulyan").min_rows(f).tolist() == [3, 7, 11, 15]
    assert get("mda").min_rows(f).tolist() == [1, 3, 5, 7]
    assert get("krum", f=1)(line(0, 1, 2, 3, 4)).shape == (1,)  # 2f + 3 rows are enough


@pytest.mark.parametrize("name,params", [
    ("krum", {"f": -1}), ("krum", {"f": 1.5}), ("multi_krum", {"m": 0}), ("bulyan", {"f": -2}),
    ("mda", {"max_subsets": 0}), ("mda", {"f": -1}), ("krum", {"m": 3}), ("mda", {"ties": "last"}),
])
def test_bad_hyper_parameters_are_refused(name, params):
    with pytest.raises(pydantic.ValidationError):
        get(name, **params)


def test_contract_attributes():
    for name in ("krum", "multi_krum", "bulyan", "mda"):
        rule = AGGREGATORS.get(name)
        assert rule.bound == "ball" and rule.accepts_weights is False, name
        assert rule.translation_equivariant and rule.permutation_invariant, name


def test_ball_factors():
    assert get("krum").ball_factor(7, 1) == pytest.approx(1 + 2 * 2)  # q = 4
    assert get("multi_krum").ball_factor(7, 1) == pytest.approx(5.0)
    assert get("multi_krum", m=6).ball_factor(7, 1) == pytest.approx(5.0)  # m <= n - f
    assert get("multi_krum", m=7).ball_factor(7, 1) == float("inf")  # a bad row is averaged
    assert get("bulyan").ball_factor(9, 1) == pytest.approx(9.0)  # 3 sqrt(n)
    assert get("mda").ball_factor(9, 4) == 3.0


def test_weights_are_ignored():
    rows = line(0, 1, 2, 4, 10)
    w = torch.tensor([5.0, 0.0, 1.0, 1.0, 9.0])

    for name in ("krum", "multi_krum", "mda"):
        assert torch.equal(get(name, f=1)(rows, w), get(name, f=1)(rows)), name


@pytest.mark.parametrize("f", [1, torch.tensor(1)])
def test_single_call_accepts_a_scalar_f_in_the_context(f):
    out = get("krum")(line(0, 1, 2, 4, 10), context=Context(f=f))

    assert out.tolist() == [1.0]


# ----------------------------------------------------------------------------- robust centre


def test_krum_float32_keeps_small_honest_distances_beside_huge_byzantine_rows():
    # Arrange: honest 0, 0.01, 0.02, 0.04, 0.1 and two Byzantine rows near 1e4; f = 2, so each
    # row scores its n - f - 2 = 3 nearest others (units of 1e-4): 0 -> 1+4+16 = 21,
    # 0.01 -> 1+1+9 = 11, 0.02 -> 1+4+4 = 9, 0.04 -> 4+9+16 = 29, 0.1 -> 36+64+81 = 181.
    # Centred on the mean (about 2857) the honest rows' distances round to 0, 2, 8, ... in float32.
    rows = torch.tensor([[0.0], [0.01], [0.02], [0.04], [0.1], [1e4], [1e4 + 1]])

    # Act
    chosen = get("krum", f=2)(rows)

    # Assert: the lowest score, 9e-4, is the row 0.02 (float64 gets it right)
    assert get("krum", f=2)(rows.double()).item() == pytest.approx(0.02)
    assert chosen.item() == pytest.approx(0.02)


def test_pairwise_distances_stay_precise_per_receiver_beside_huge_rows():
    # Arrange: receiver 0 has two huge rows that drag its mean 3e3 away from five honest rows
    # 1e-2 apart; receiver 1's rows are the same honest rows with no outlier (one slot empty)
    from phalanx.aggregate.base import medoid, pairwise_sq_distances

    honest = torch.tensor([0.0, 0.01, 0.02, 0.04, 0.1])
    r0 = torch.cat([honest, torch.tensor([1e4, 1e4 + 1])])[:, None]
    r1 = torch.cat([honest, torch.tensor([0.05, float("nan")])])[:, None]
    rows = torch.stack([r0, r1])
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 6] = False

    # Act
    d2 = pairwise_sq_distances(rows, mask)
    exact = (rows.double() - rows.double().transpose(1, 2)) ** 2

    # Assert: every honest pair of both receivers to float32's precision of the differences
    # (relative 1e-5), and the medoid of receiver 0 is an honest row
    h = slice(0, 5)
    assert torch.allclose(d2[:, h, h].double(), exact[:, h, h], rtol=1e-5, atol=1e-12)
    assert d2[1, 6].isinf().all() and d2[1, :, 6].isinf().all()  # the empty slot
    slot, _ = medoid(d2, mask)
    assert int(slot[0]) < 5
