"""Seven rules: median, trimmed_mean, sign_majority, geometric_median, centered_clipping,
clipped_gossip, fltrust. Hand-worked examples, batched-vs-single equality with ragged masks and
per-receiver f, NaN in empty slots, hyper-parameter validation and row conditions."""

from __future__ import annotations

import math
import re

import pydantic
import pytest
import torch

from phalanx.aggregate import AGGREGATORS, Context, InsufficientRows, get

RULES = ["median", "trimmed_mean", "sign_majority", "geometric_median", "centered_clipping",
         "clipped_gossip", "fltrust"]


def t(*values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# -- registration and contract --------------------------------------------------------------------
@pytest.mark.parametrize("name", RULES)
def test_registered_under_its_label(name):
    rule = get(name)
    assert AGGREGATORS.get(name) is type(rule)
    assert rule.label == name


def test_declared_contracts():
    table = {name: (get(name).bound, get(name).accepts_weights, get(name).translation_equivariant)
             for name in RULES}
    assert table == {
        "median": ("box", False, True),
        "trimmed_mean": ("box", False, True),
        "sign_majority": ("sign", False, False),
        "geometric_median": ("ball", True, True),
        "centered_clipping": ("radius", False, False),
        "clipped_gossip": ("none", True, False),  # adaptive tau (the default)
        "fltrust": ("radius", False, False),
    }
    assert get("clipped_gossip", tau=1.0).bound == "radius"
    assert get("centered_clipping").stateful and get("fltrust").needs_root


# -- median ---------------------------------------------------------------------------------------
def test_median_odd_and_even_counts():
    rows = t([1, 8], [2, 0], [9, 5])
    assert torch.equal(get("median")(rows), t(2, 5))
    # even: the mean of the two middle values, as torch.quantile(q=0.5) (ByzFL 0.0.11)
    rows4 = torch.cat([rows, t([4, 6])])
    assert torch.equal(get("median")(rows4), t(3, 5.5))
    assert torch.allclose(get("median")(rows4), torch.quantile(rows4, 0.5, dim=0))


def test_median_ignores_a_minority_of_huge_rows():
    rows = t([1.0], [2.0], [3.0], [1e30], [-1e30])
    assert get("median", f=2)(rows).item() == 2.0


# -- trimmed mean ---------------------------------------------------------------------------------
def test_trimmed_mean_drops_f_per_side_per_coordinate():
    rows = t([1, 8], [2, 0], [9, 5], [4, 6])
    # coordinate 0 keeps 2, 4; coordinate 1 keeps 5, 6
    assert torch.equal(get("trimmed_mean", f=1)(rows), t(3, 5.5))
    assert torch.equal(get("trimmed_mean", f=0)(rows), t(4, 4.75))


def test_trimmed_mean_per_receiver_n_and_f_in_one_call():
    nan = float("nan")
    rows = t([[0.0], [1.0], [2.0], [1000.0]],
             [[5.0], [nan], [7.0], [nan]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    out = get("trimmed_mean").aggregate(rows, mask, None, Context(f=torch.tensor([1, 0])))
    assert torch.equal(out, t([1.5], [6.0]))  # (1 + 2) / 2 and (5 + 7) / 2


# -- sign majority --------------------------------------------------------------------------------
def test_sign_majority_votes_and_ties_give_zero():
    rows = t([3, -1, 2], [-5, -2, 0], [1, 4, -7])
    assert torch.equal(get("sign_majority")(rows), t(1, -1, 0))
    assert torch.equal(get("sign_majority", scale=0.5)(rows), t(0.5, -0.5, 0))
    assert torch.equal(get("sign_majority")(t([2.0, 0.0], [-7.0, 0.0])), t(0, 0))


# -- geometric median -----------------------------------------------------------------------------
def test_geometric_median_first_step_is_the_mean_when_all_rows_are_within_nu():
    rows = t([0, 0], [1, 0], [0, 1])
    out = get("geometric_median", nu=1.0, iterations=1)(rows)
    assert torch.allclose(out, t(1 / 3, 1 / 3))


def test_geometric_median_matches_byzfl_documented_output():
    # ByzFL 0.0.11's GeometricMedian() (nu=0.1, T=3, start at 0) documents this example's output
    rows = t([1, 2, 3], [4, 5, 6], [7, 8, 9])
    out = get("geometric_median", nu=0.1, iterations=3, tol=0.0, start="zero")(rows)
    assert torch.allclose(out, t(3.78788764, 4.78788764, 5.78788764), rtol=1e-7, atol=0)
    # from the default start, the coordinate-wise median (4, 5, 6), which is already the answer
    assert torch.allclose(get("geometric_median")(rows), t(4, 5, 6))


def test_geometric_median_of_two_rows_is_their_midpoint_wherever_they_are():
    # every point between two rows is a geometric median; the median start picks the midpoint
    rows = t([4.0, 1.0], [2.0, 5.0])
    for shift in (0.0, -3.0, 1e3):
        assert torch.allclose(get("geometric_median")(rows + shift), t(3.0, 3.0) + shift)
    assert get("geometric_median").translation_equivariant
    assert not get("geometric_median", start="zero").translation_equivariant


def test_geometric_median_on_a_line_is_the_median():
    # stationarity at z = 1: (1-0)/1 + 0 + (1-10)/9 = 0, so 1 is the fixed point
    out = get("geometric_median", nu=1e-3, iterations=500, tol=1e-12)(t([0.0], [1.0], [10.0]))
    assert out.item() == pytest.approx(1.0, abs=1e-9)


def test_geometric_median_weights_move_it_to_a_heavy_row():
    # weight 3 at 10 against 1 + 1: smoothed stationarity 3 (z - 10) / nu + 2 = 0
    nu = 1e-3
    out = get("geometric_median", nu=nu, iterations=2000, tol=0.0)(t([0.0], [1.0], [10.0]), t(1, 1, 3))
    assert out.item() == pytest.approx(10 - 2 * nu / 3, abs=1e-9)


def test_geometric_median_ball_factor_is_minskers_constant():
    rule = get("geometric_median")
    assert rule.ball_factor(5, 0) == 1.0
    assert rule.ball_factor(3, 1) == pytest.approx(2 / math.sqrt(3))
    assert rule.ball_factor(10, 3) == pytest.approx((1 - 0.3) / math.sqrt(1 - 0.6))
    with pytest.raises(ValueError, match="2f < n"):
        rule.ball_factor(4, 2)


@pytest.mark.parametrize("n, f", [(3, 1), (7, 3), (10, 2)])
def test_geometric_median_stays_in_its_ball_under_attack(n, f):
    g = torch.Generator().manual_seed(n + f)
    rule = get("geometric_median", iterations=2000, tol=1e-10, f=f)
    honest = torch.randn(n - f, 5, generator=g, dtype=torch.float64)
    rows = torch.cat([honest, 1e3 * torch.randn(f, 5, generator=g, dtype=torch.float64) + 500])
    mu = honest.mean(0)
    r = (honest - mu).norm(dim=1).max()
    distance = (rule(rows) - mu).norm()
    assert distance <= max(rule.ball_factor(n, f) * r, r + rule.ball_slack) + 1e-6


def test_geometric_median_huge_rows_do_not_loosen_the_stopping_rule():
    g = torch.Generator().manual_seed(7)
    honest = torch.randn(5, 4, generator=g, dtype=torch.float64)
    rows = torch.cat([honest, 1e12 * torch.randn(4, 4, generator=g, dtype=torch.float64)])
    rule = get("geometric_median", f=4)
    exact = get("geometric_median", f=4, iterations=3000, tol=0.0)(rows)
    spread = (honest - honest.mean(0)).norm(dim=1).max()
    assert (rule(rows) - exact).norm() <= 1e-5 * spread


def test_geometric_median_stops_a_receiver_once_its_step_is_small():
    # from 0 with nu = 0.1: betas (10, 1, 0.1) / 3, so z_1 = 2 / 11.1, a move of 0.18 against the
    # median distance 1: with tol = 0.2 the receiver stops there
    near = t([0.0], [1.0], [10.0])
    far = t([5.0], [6.0], [7.0])  # its first step, 3 / (1/5 + 1/6 + 1/7) = 5.89, goes on
    rule = get("geometric_median", tol=0.2, start="zero")
    assert rule(near).item() == pytest.approx(2 / 11.1, rel=1e-12)
    both = rule.aggregate(torch.stack([near, far]), torch.ones(2, 3, dtype=torch.bool))
    assert both[0].item() == pytest.approx(2 / 11.1, rel=1e-12)
    assert both[1] == rule(far) and both[1].item() > 5.95  # past its first step


@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_geometric_median_gram_steps_equal_the_direct_steps(tol):
    # Arrange: 3 receivers with 6 slots each, ragged masks with NaN in the empty slots, weights,
    # and Byzantine rows far away; enough steps that the stopping rule ends some receivers early
    from phalanx.aggregate.geometric_median import weiszfeld, weiszfeld_in_span

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 40, generator=g, dtype=torch.float64)
    x[0, 4:] += 1e3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    x = torch.where(mask[..., None], x, torch.nan)
    a = torch.rand(3, 6, generator=g, dtype=torch.float64) * mask
    a = a / a.sum(1, keepdim=True)
    z0 = torch.zeros(3, 40, dtype=torch.float64)
    filled = torch.where(mask[..., None], x, 0.0)

    # Act
    direct = weiszfeld(filled, mask, a, z0, nu=0.1, tol=tol, iterations=25)
    span = weiszfeld_in_span(filled, mask, a, z0, nu=0.1, tol=tol, iterations=25)

    # Assert: the same iterate (a receiver that stops early stops at the same step in both)
    assert torch.allclose(direct, span, rtol=0, atol=1e-9)
    assert not torch.allclose(direct, weiszfeld(filled, mask, a, z0, nu=0.1, tol=tol, iterations=24),
                              rtol=0, atol=1e-9) or tol > 0


# -- centered clipping ----------------------------------------------------------------------------
def test_centered_clipping_one_step_from_zero():
    rows = t([0.5, 0], [0, 4])
    out = get("centered_clipping", tau=1.0)(rows)
    assert torch.allclose(out, t(0.25, 0.5))


def test_centered_clipping_threads_its_state_through_previous():
    rule = get("centered_clipping", tau=1.0)
    rows = t([0.5, 0], [0, 4])
    first = rule(rows)
    second = rule(rows, context=Context(previous=first))
    # from v = (0.25, 0.5): (0.25, -0.5) has norm < 1 and is kept; (-0.25, 3.5) is clipped to 1
    far = math.hypot(-0.25, 3.5)
    expected = t(0.25 + (0.25 - 0.25 / far) / 2, 0.5 + (-0.5 + 3.5 / far) / 2)
    assert torch.allclose(second, expected)
    assert not torch.allclose(second, first)


def test_centered_clipping_moves_at_most_iterations_times_tau():
    rule = get("centered_clipping", tau=0.5, iterations=3)
    rows = t([[100.0, 0.0], [0.0, -50.0], [80.0, 80.0]])  # (1, 3, 2): one receiver
    previous = t([1.0, 1.0])  # (1, 2)
    out = rule.aggregate(rows, torch.ones(1, 3, dtype=torch.bool), None, Context(previous=previous))
    radius = rule.radius(Context(previous=previous))
    assert radius.shape == (1,) and radius.item() == pytest.approx(1.5)
    assert (out - rule.center(Context(previous=previous), 1, 2, "cpu")).norm() <= radius + 1e-12
    assert torch.equal(get("centered_clipping").center(None, 2, 3, "cpu"), torch.zeros(2, 3))


# -- clipped gossip -------------------------------------------------------------------------------
def test_clipped_gossip_fixed_tau():
    rows = t([0, 0], [0.5, 0], [0, 4])
    assert torch.allclose(get("clipped_gossip", tau=1.0)(rows), t(1 / 6, 1 / 3))
    # mixing weights 2, 1, 1: ((0, 0) * 2 + (0.5, 0) + (0, 1)) / 4
    assert torch.allclose(get("clipped_gossip", tau=1.0)(rows, t(2, 1, 1)), t(0.125, 0.25))
    assert torch.equal(get("clipped_gossip", tau=2.0).radius(Context(f=torch.tensor([0, 1]))),
                       torch.full((2,), 2.0))


def test_clipped_gossip_adaptive_tau_is_the_f_plus_first_largest_norm():
    rows = t([0, 0], [0.5, 0], [0, 4])
    assert torch.allclose(get("clipped_gossip", f=1)(rows), t(1 / 6, 1 / 6))  # tau = 0.5
    assert torch.allclose(get("clipped_gossip", f=0)(rows), rows.mean(0))  # nothing clipped
    with pytest.raises(ValueError, match="adaptive"):
        get("clipped_gossip").radius(None)


def test_clipped_gossip_adaptive_output_is_within_the_largest_honest_norm():
    g = torch.Generator().manual_seed(3)
    honest = torch.cat([torch.zeros(1, 4, dtype=torch.float64),
                        torch.randn(5, 4, generator=g, dtype=torch.float64)])
    bad = 1e4 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    out = get("clipped_gossip", f=2)(torch.cat([honest, bad]))
    assert out.norm() <= honest.norm(dim=1).max() + 1e-12


def test_clipped_gossip_adaptive_is_no_ball_bound():
    # honest p, p and a Byzantine -10 p: tau = ||p||, out = p / 3 although the honest spread is 0
    p = t(1.0, 2.0)
    out = get("clipped_gossip", f=1)(torch.stack([p, p, -10 * p]))
    assert torch.allclose(out, p / 3)


# -- fltrust --------------------------------------------------------------------------------------
def test_fltrust_worked_example():
    rows = t([0, 1], [3, 3], [0, -5])
    out = get("fltrust")(rows, context=Context(root=t(0, 2)))
    s = math.sqrt(2)
    assert torch.allclose(out, t(2 - s, 6 - 3 * s))
    assert out.norm() <= 2.0


def test_fltrust_no_trust_gives_zeros_and_a_zero_row_gets_none():
    root = t(1.0, 0.0)
    assert torch.equal(get("fltrust")(t([-1, 0], [0, 3]), context=Context(root=root)), t(0, 0))
    out = get("fltrust")(t([0, 0], [5, 0]), context=Context(root=root))
    assert torch.equal(out, t(1, 0))


def test_fltrust_without_root_raises():
    with pytest.raises(ValueError, match="root"):
        get("fltrust")(t([1.0, 0.0]))
    with pytest.raises(ValueError, match="root"):
        get("fltrust").radius(Context(f=torch.tensor([0])))


def test_fltrust_radius_is_the_root_norm():
    assert torch.allclose(get("fltrust").radius(Context(root=t([3, 4], [0, 1]))), t(5, 1))


# -- batched form ---------------------------------------------------------------------------------
def _batch(dtype):
    """4 receivers, up to 6 rows of 3 coordinates, ragged masks, NaN rows and weights in the empty
    slots."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 6, 3, generator=g, dtype=dtype) * 3
    rows[:, 0] = 0  # a receiver's own slot in the gossip frame
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0], [1, 1, 1, 0, 1, 0]],
                        dtype=torch.bool)
    rows[~mask] = float("nan")
    weights = torch.rand(4, 6, generator=g, dtype=dtype) + 0.1
    weights[~mask] = float("nan")  # an empty slot's weight is part of the slot
    f = torch.tensor([2, 2, 1, 1])  # 2f + 1 <= 6, 5, 3, 4
    root = torch.randn(4, 3, generator=g, dtype=dtype)
    previous = torch.randn(4, 3, generator=g, dtype=dtype)
    return rows, mask, weights, f, root, previous


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, params", [
    ("median", {}), ("trimmed_mean", {}), ("sign_majority", {}), ("geometric_median", {}),
    ("centered_clipping", {"tau": 1.0, "iterations": 3}), ("clipped_gossip", {}),
    ("clipped_gossip", {"tau": 0.7}), ("fltrust", {})])
def test_batched_equals_single_per_receiver(name, params, dtype):
    rows, mask, weights, f, root, previous = _batch(dtype)
    rule = get(name, **params)
    w = weights if rule.accepts_weights else None
    out = rule.aggregate(rows, mask, w, Context(f=f, root=root, previous=previous))
    assert out.shape == (4, 3) and out.dtype == dtype and torch.isfinite(out).all()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for r in range(4):
        single = rule(rows[r][mask[r]], None if w is None else w[r][mask[r]],
                      Context(f=int(f[r]), root=root[r], previous=previous[r]))
        torch.testing.assert_close(out[r], single, **tol)


@pytest.mark.parametrize("name", RULES)
def test_a_receivers_output_depends_only_on_its_own_real_rows(name):
    rows, mask, weights, f, root, previous = _batch(torch.float64)
    rule = get(name)
    w = weights if rule.accepts_weights else None
    ctx = Context(f=f, root=root, previous=previous)
    out = rule.aggregate(rows, mask, w, ctx)
    changed = rows * 7 + 1  # every other receiver's rows change
    changed[2] = torch.where(mask[2, :, None], rows[2], float("inf"))  # receiver 2: inf, not NaN
    again = rule.aggregate(changed, mask, w, ctx)
    assert torch.equal(again[2], out[2])
    assert not torch.equal(again[0], out[0])


# -- hyper-parameters and row conditions ----------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("median", {"f": -1}), ("trimmed_mean", {"f": -1}), ("trimmed_mean", {"f": 1.5}),
    ("sign_majority", {"scale": 0.0}), ("sign_majority", {"f": -2}),
    ("geometric_median", {"nu": 0.0}), ("geometric_median", {"iterations": 0}),
    ("geometric_median", {"tol": -1e-3}), ("geometric_median", {"start": "mean"}),
    ("centered_clipping", {"tau": 0.0}),
    ("centered_clipping", {"iterations": 0}), ("clipped_gossip", {"tau": -1.0}),
    ("clipped_gossip", {"f": -1}), ("fltrust", {"tau": 1.0})])
def test_bad_hyper_parameters_are_refused_at_construction(name, params):
    with pytest.raises(pydantic.ValidationError):
        get(name, **params)
    with pytest.raises((pydantic.ValidationError, TypeError)):
        AGGREGATORS.get(name)(**params)


@pytest.mark.parametrize("name, params, n, formula", [
    ("median", {"f": 1}, 2, "n >= 2f + 1"),
    ("trimmed_mean", {"f": 2}, 4, "n >= 2f + 1"),
    ("sign_majority", {"f": 1}, 2, "n >= 2f + 1"),
    ("geometric_median", {"f": 3}, 6, "n >= 2f + 1"),
    ("clipped_gossip", {"f": 2}, 2, "n >= f + 1")])
def test_too_few_rows_name_the_formula(name, params, n, formula):
    rule = get(name, **params)
    with pytest.raises(InsufficientRows, match=rf"{name}: got {n} rows .*{re.escape(formula)}"):
        rule(torch.zeros(n, 2))
    rule(torch.zeros(n + 1, 2))  # one more row is enough


def test_row_conditions_are_vectorised_over_receivers_and_read_context_f():
    counts = torch.tensor([3, 3, 5, 1])
    f = torch.tensor([1, 2, 2, 0])
    for name in ["median", "trimmed_mean", "sign_majority", "geometric_median"]:
        assert get(name).admissible(counts, f).tolist() == [True, False, True, True]
    assert get("clipped_gossip").admissible(counts, f).tolist() == [True, True, True, True]
    assert get("clipped_gossip", tau=1.0).admissible(counts, torch.tensor([9, 9, 9, 9])).all()
    with pytest.raises(InsufficientRows, match="f=1"):
        get("median")(torch.zeros(2, 2), context=Context(f=torch.tensor([1])))


@pytest.mark.parametrize("f", [1, torch.tensor(1)])
def test_single_call_accepts_a_scalar_f(f):
    with pytest.raises(InsufficientRows, match="f=1"):
        get("median")(torch.zeros(2, 2), context=Context(f=f))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", RULES)
def test_on_the_gpu_as_on_the_cpu(name):
    rows, mask, weights, f, root, previous = _batch(torch.float64)
    rule = get(name)
    w = weights if rule.accepts_weights else None
    cpu = rule.aggregate(rows, mask, w, Context(f=f, root=root, previous=previous))
    on = lambda x: None if x is None else x.cuda()
    gpu = rule.aggregate(rows.cuda(), mask.cuda(), on(w), Context(f=f.cuda(), root=root.cuda(),
                                                                 previous=previous.cuda()))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
