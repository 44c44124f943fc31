"""Property tests generated from the aggregation contract (:mod:`phalanx.aggregate.base`).

Nothing here names a rule's behaviour by hand: every test is parametrised over
``AGGREGATORS.names()`` / ``PRE_AGGREGATORS.names()`` and reads what each plug-in declares
(``bound``, ``translation_equivariant``, ``permutation_invariant``, ``accepts_weights``,
``needs_root``, ``stateful``, ``min_rows``, ``ball_factor``, ``center``, ``radius``), so a newly
registered plug-in is covered the moment it is imported. The exceptions are the two definitions
checked against a brute-force computation (NNM) and the ``arc -> nnm -> trimmed_mean`` chain's
bound, which are about those plug-ins by name.

A case that fails because a plug-in is wrong stays here, marked ``xfail(strict=True)`` in
:data:`KNOWN` with the reason; a strict xfail turns into a failure the day it is fixed.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from aggregate_cases import (
    DTYPE,
    HUGE_ATTACKS,
    NEAR_ATTACKS,
    REL_TOL,
    attacked,
    bait,
    batched_context,
    build,
    chain_spec,
    check_bound,
    context_rows,
    feasible_fs,
    gen,
    ids_of,
    min_rows,
    nnm_brute_force,
    plain_rows,
    rule_tolerance,
    single_context,
    spec,
    takes,
    unit,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.aggregate import (
    AGGREGATORS,
    PRE_AGGREGATORS,
    Aggregator,
    Chain,
    Context,
    InsufficientRows,
    PreAggregator,
    chain,
)

RULES = ids_of(AGGREGATORS)
PRES = ids_of(PRE_AGGREGATORS)
STAGES = RULES + PRES
BOUNDS = ("hull", "box", "ball", "radius", "sign", "none")

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(PROPERTY, max_examples=12)

#: (test, case id) -> why that case is expected to fail; each is a strict xfail
KNOWN: dict[tuple[str, str], str] = {}


def cases(test: str, ids) -> list:
    """``ids`` as pytest params, the ones listed in :data:`KNOWN` for ``test`` marked strict xfail."""
    out = []
    for i in ids:
        reason = KNOWN.get((test, i))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(i, id=i, marks=marks))
    return out


def declares(case_id: str, attribute: str):
    """What the configured plug-in declares (an instance may refine its class, as clipped_gossip's
    bound does with its adaptive tau)."""
    return getattr(build(case_id), attribute, None)


def is_rule(case_id: str) -> bool:
    return spec(case_id)[0] in AGGREGATORS


def close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, factor: float = 1.0, msg: str = "") -> None:
    tol = REL_TOL * factor * max(1.0, scale)
    torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"{msg}\n{m}")


def run_single(stage, rows, f: int, root=None, previous=None, weights=None, seed: int = 0):
    """The single-receiver call with declared ``f`` in the context (and root/previous as needed)."""
    return stage(rows, weights, single_context(f, root, previous, seed))


def requirement_as_python(text: str) -> str | None:
    """``"n >= 2f + 1"`` as ``"n >= 2*f + 1"``; ``None`` for text that is not such a formula."""
    expr = re.sub(r"(\d)\s*([nf(])", r"\1*\2", text)
    if not re.fullmatch(r"[nf0-9+\-*/ ()<>=,maxin]+", expr) or "n" not in expr:
        return None
    try:
        compile(expr, "<requirement>", "eval")
    except SyntaxError:
        return None
    return expr


def draws_randomness(case_id: str) -> bool:
    """Whether the stage's output depends on ``Context.generator`` (bucketing's shuffle): probed
    on fixed rows with two seeds."""
    stage = build(case_id)
    f = feasible_fs(stage)[0]
    n = max(min_rows(stage, f), 6)
    rows = torch.randn(1, n, 3, generator=gen(0), dtype=DTYPE)
    mask = torch.ones(1, n, dtype=torch.bool)
    root, previous = context_rows(stage, gen(1), 1, 3)
    outs = []
    for seed in (0, 1):
        ctx = Context(f=torch.tensor([f]), root=root, previous=previous, generator=gen(seed))
        outs.append(stage.aggregate(rows, mask, None, ctx) if is_rule(case_id)
                    else stage.apply(rows, mask, None, ctx)[0])
    return not torch.equal(outs[0], outs[1])


def count_preserving(stage: PreAggregator) -> bool:
    counts = torch.arange(1, 16)
    return bool((stage.out_counts(counts) == counts).all())


# -- the declared contract is well formed -----------------------------------------------------

@pytest.mark.parametrize("name", cases("contract", STAGES))
def test_declared_contract_is_well_formed(name):
    stage = build(name)
    kind = type(stage)
    assert kind.label == spec(name)[0], f"{kind.__name__}.label is {kind.label!r}, registered as {name!r}"
    assert isinstance(stage.permutation_invariant, bool) and isinstance(stage.translation_equivariant, bool)
    fs = torch.arange(0, 6)
    need = stage.min_rows(fs)
    assert need.dtype == torch.int64 and need.shape == fs.shape, "min_rows must be vectorised over f"
    assert [int(stage.min_rows(fs[i : i + 1])[0]) for i in range(6)] == need.tolist()
    assert bool((need >= 1).all()), "a stage needs at least one row"
    assert bool((need[1:] >= need[:-1]).all()), "a larger declared f cannot need fewer rows"
    assert isinstance(stage.requirement(), str) and stage.requirement()
    formula = requirement_as_python(stage.requirement())
    if formula is not None:  # the formula the error message names is the condition checked
        for f in range(6):
            for n in range(40):
                said = eval(formula, {"__builtins__": {}, "max": max, "min": min}, {"n": n, "f": f})
                assert said == (n >= int(need[f])), (stage.requirement(), n, f, int(need[f]))
    if not is_rule(name):
        assert isinstance(stage, PreAggregator)
        return
    assert isinstance(stage, Aggregator)
    assert stage.bound in BOUNDS
    for flag in ("accepts_weights", "needs_root", "stateful"):
        assert isinstance(getattr(stage, flag), bool), flag
    if stage.bound in ("hull", "box", "ball"):
        # with n <= 2f, f identical bad rows and f honest ones are indistinguishable from the
        # reverse, so no rule can stay near the honest rows: the bound needs an honest majority
        for f in range(1, 4):
            assert min_rows(stage, f) > 2 * f, (
                f"{name} declares {stage.bound!r} but admits n = {min_rows(stage, f)} rows with f = {f}")
    if stage.bound == "ball":
        for f in feasible_fs(stage):
            n = min_rows(stage, f)
            factor = stage.ball_factor(n, f)  # may be inf: no bound for that configuration
            assert factor >= 1.0, (n, f, factor)
    if stage.bound == "radius":
        root, previous = context_rows(stage, gen(0), 2, 3)
        ctx = Context(f=torch.tensor([0, 1]), root=root, previous=previous)
        assert stage.center(ctx, 2, 3, torch.device("cpu")).shape == (2, 3)
        r = torch.as_tensor(stage.radius(ctx))
        assert bool((r >= 0).all()) and bool(torch.isfinite(r).all())
    if stage.bound == "sign":
        assert float(stage.scale) > 0


# -- 1. permutation invariance ----------------------------------------------------------------

@pytest.mark.parametrize("name", cases("permutation", [n for n in STAGES if declares(n, "permutation_invariant")]))
@PROPERTY
@given(data=st.data())
def test_reordering_rows_does_not_change_the_output(name, data):
    """Rules: the same output. Pre-aggregators that keep one row per input row: the same rows,
    reordered alike (equivariance); the others: the same set of rows."""
    stage = build(name)
    case = data.draw(attacked(stage, NEAR_ATTACKS), label="case")
    perm = torch.randperm(case.n, generator=gen(case.seed + 1))
    root, previous = context_rows(stage, gen(case.seed + 2), 1, case.d, like=case.honest)
    scale = float(case.rows.abs().max())
    a = run_single(stage, case.rows, case.f, root, previous)
    b = run_single(stage, case.rows[perm], case.f, root, previous)
    if is_rule(name):
        close(b, a, scale, msg=f"{name}: output changed when the rows were reordered")
    elif count_preserving(stage):
        close(b, a[perm], scale, msg=f"{name}: rows are not permuted alike")
    else:
        key = lambda t: t[torch.argsort(t[:, 0])]
        close(key(b), key(a), scale, msg=f"{name}: the set of output rows changed")


# -- 2. translation equivariance --------------------------------------------------------------

@pytest.mark.parametrize("name", cases("translation", [n for n in STAGES if declares(n, "translation_equivariant")]))
@PROPERTY
@given(data=st.data())
def test_translating_rows_translates_the_output(name, data):
    """``stage(rows + c) == stage(rows) + c`` (with ``root`` and ``previous``, which live in the
    same space as the rows, translated alike)."""
    stage = build(name)
    case = data.draw(attacked(stage, NEAR_ATTACKS), label="case")
    c = 10.0 ** data.draw(st.floats(-2, 2), label="log10|c|") * unit(
        torch.randn(case.d, generator=gen(case.seed + 3), dtype=DTYPE))
    root, previous = context_rows(stage, gen(case.seed + 2), 1, case.d, like=case.honest)
    moved = (lambda t: None if t is None else t + c)
    a = run_single(stage, case.rows, case.f, root, previous, seed=case.seed)
    b = run_single(stage, case.rows + c, case.f, moved(root), moved(previous), seed=case.seed)
    scale = float(case.rows.abs().max()) + float(c.abs().max())
    close(b, a + c, scale, factor=rule_tolerance(stage) / REL_TOL, msg=f"{name}: not translation equivariant")


# -- 3. the declared bound --------------------------------------------------------------------

def _check_rule_bound(name: str, case, *, tol_factor: float = 1.0) -> None:
    rule = build(name, f=case.f)
    root, previous = context_rows(rule, gen(case.seed + 2), 1, case.d, like=case.honest)
    out = run_single(rule, case.rows, case.f, root, previous, seed=case.seed)
    check_bound(rule, out, case.honest, case.n, case.f, batched_context(case.f, root, previous, case.seed),
                tol_factor)


@pytest.mark.parametrize("name", cases("bound_huge", RULES))
@PROPERTY
@given(data=st.data())
def test_declared_bound_holds_against_huge_rows(name, data):
    """f rows of size 1e6..1e12 (random directions, all identical, cancelling pairs, one
    coordinate pushed out) never carry the output outside the declared bound."""
    case = data.draw(attacked(build(name), HUGE_ATTACKS), label="case")
    _check_rule_bound(name, case)


@pytest.mark.parametrize("name", cases("bound_near", RULES))
@PROPERTY
@given(data=st.data())
def test_declared_bound_holds_against_rows_next_to_the_honest_ones(name, data):
    """The bound is declared for *arbitrarily* bad rows, so it must also hold when they sit next
    to an honest row, between the two closest, at the honest mean or just past the honest box."""
    case = data.draw(attacked(build(name), NEAR_ATTACKS), label="case")
    _check_rule_bound(name, case)


@pytest.mark.parametrize("name", cases("bound_any_rows", [n for n in RULES
                                                         if declares(n, "bound") in ("radius", "sign")]))
@PROPERTY
@given(data=st.data())
def test_radius_and_sign_bounds_hold_whatever_every_row_is(name, data):
    """"radius" and "sign" need no honest row: every row is the attacker's here (huge, cancelling,
    of mixed sizes), and the root update or previous output is as large as they are."""
    rule = build(name)
    f = data.draw(st.sampled_from(feasible_fs(rule)), label="f")
    n = data.draw(st.integers(min_rows(rule, f), min_rows(rule, f) + 4), label="n")
    d = data.draw(st.integers(1, 6), label="d")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    size = 10.0 ** data.draw(st.floats(-3, 12), label="log10 size")
    g = gen(seed)
    rows = size * torch.randn(n, d, generator=g, dtype=DTYPE) * 10.0 ** (3 * torch.rand(n, 1, generator=g))
    root, previous = context_rows(rule, g, 1, d, like=rows)
    out = run_single(rule, rows, f, root, previous, seed=seed)
    check_bound(rule, out, rows[:0], n, f, batched_context(f, root, previous, seed))


@pytest.mark.parametrize("name", cases("bound_bait", RULES))
def test_declared_bound_holds_on_hand_built_traps(name):
    """Deterministic cases (see :func:`aggregate_cases.bait`) for every admissible ``(n, f)``:
    bad rows placed where a distance-based selection prefers them to honest rows."""
    rule = build(name)
    for f in range(1, 4):
        for n in range(max(min_rows(rule, f), f + 3), max(min_rows(rule, f), f + 3) + 3):
            _check_rule_bound(name, bait(n, f))


# -- 4. the batched form equals the single call per receiver ----------------------------------

GARBAGE = {"nan": float("nan"), "inf": float("inf"), "huge": 1e300}


@st.composite
def ragged_batch(draw, stage, weighted: bool):
    """m receivers, each with its own f and row count, rows at random slots of k; the empty slots
    hold garbage (NaN, inf or 1e300) and, when weighted, a large weight."""
    m = draw(st.integers(1, 4), label="m")
    d = draw(st.integers(1, 6), label="d")
    fs = [draw(st.sampled_from(feasible_fs(stage)), label="f") for _ in range(m)]
    ns = [draw(st.integers(min_rows(stage, f), min_rows(stage, f) + 3), label="n") for f in fs]
    k = max(ns) + draw(st.integers(0, 2), label="extra slots")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    fill = draw(st.sampled_from(sorted(GARBAGE)), label="garbage")
    g = gen(seed)
    rows = 3.0 * torch.randn(m, k, d, generator=g, dtype=DTYPE)
    mask = torch.zeros(m, k, dtype=torch.bool)
    for r, n in enumerate(ns):
        mask[r, torch.randperm(k, generator=g)[:n]] = True
    rows[~mask] = GARBAGE[fill]
    weights = None
    if weighted:
        weights = 0.1 + 2.0 * torch.rand(m, k, generator=g, dtype=DTYPE)
        weights[~mask] = 1e6
    root, previous = context_rows(stage, g, m, d)
    return rows, mask, weights, torch.tensor(fs), root, previous, seed


@pytest.mark.parametrize("name", cases("batched", [n for n in STAGES if not draws_randomness(n)]))
@PROPERTY
@given(data=st.data())
def test_batched_ragged_form_equals_single_calls(name, data):
    """One batched call with a ragged mask, garbage in the empty slots and a per-receiver f in
    ``Context(f=...)`` gives, receiver by receiver, the single call on that receiver's rows (by a
    stage constructed with that f, so a stage that ignored the context's f would show).

    (A stage that draws randomness (bucketing) draws it in a layout that depends on the batch, so
    it is compared with itself in the next test instead.)"""
    stage = build(name)
    weighted = bool(getattr(stage, "accepts_weights", False))
    rows, mask, weights, fs, root, previous, seed = data.draw(ragged_batch(stage, weighted), label="batch")
    ctx = Context(f=fs, root=root, previous=previous, generator=gen(seed))
    pick = lambda t, r: None if t is None else t[r]
    if is_rule(name):
        out = stage.aggregate(rows, mask, weights, ctx)
        assert out.shape == (rows.shape[0], rows.shape[2]) and out.dtype == DTYPE
    else:
        out, out_mask, _ = stage.apply(rows, mask, None, ctx)
        assert torch.equal(out_mask.sum(1), stage.out_counts(mask.sum(1))), "out_counts disagrees"
    for r in range(rows.shape[0]):
        w = None if weights is None else weights[r][mask[r]]
        f = int(fs[r])
        if takes(name, "f"):  # the reference reads f from its constructor, the batch from the context
            one = build(name, f=f)
            ctx_r = Context(root=pick(root, r), previous=pick(previous, r), generator=gen(seed))
            single = one(rows[r][mask[r]], w, ctx_r)
        else:
            single = run_single(stage, rows[r][mask[r]], f, pick(root, r), pick(previous, r), w, seed)
        got = out[r] if is_rule(name) else out[r][out_mask[r]]
        close(got, single, float(rows[r][mask[r]].abs().max()),
              msg=f"{name}: receiver {r} (f={f}, n={int(mask[r].sum())}) differs from its single call")


@pytest.mark.parametrize("name", cases("masked", STAGES))
@PROPERTY
@given(data=st.data())
def test_masked_slots_never_influence_the_output(name, data):
    """Two batched calls that differ only in what the empty slots hold (NaN vs 1e300, and their
    weights) and share the generator's seed give the same finite output."""
    stage = build(name)
    weighted = bool(getattr(stage, "accepts_weights", False))
    rows, mask, weights, fs, root, previous, seed = data.draw(ragged_batch(stage, weighted), label="batch")
    other = rows.clone()
    other[~mask] = -1e300 if bool(torch.isnan(rows[~mask]).any()) else float("nan")
    other_w = None if weights is None else torch.where(mask, weights, torch.full_like(weights, 7.0))

    def call(x, w):
        ctx = Context(f=fs, root=root, previous=previous, generator=gen(seed))
        if is_rule(name):
            return stage.aggregate(x, mask, w, ctx), None
        out, out_mask, _ = stage.apply(x, mask, None, ctx)
        return out, out_mask

    a, a_mask = call(rows, weights)
    b, b_mask = call(other, other_w)
    if a_mask is not None:
        assert torch.equal(a_mask, b_mask)
        a, b = a[a_mask], b[b_mask]
    assert torch.isfinite(a).all(), f"{name}: the empty slots leaked a non-finite value"
    close(b, a, float(rows[mask].abs().max()), msg=f"{name}: the empty slots changed the output")


@pytest.mark.parametrize("name", cases("masked_nan_weights", [n for n in RULES if declares(n, "accepts_weights")]))
def test_nan_weights_in_empty_slots_do_not_leak(name):
    """The contract lets an empty slot hold anything; its weight is part of the slot."""
    stage = build(name)
    g = gen(5)
    rows = torch.randn(2, 6, 3, generator=g, dtype=DTYPE)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 5] = False
    weights = torch.rand(2, 6, generator=g, dtype=DTYPE) + 0.5
    clean = stage.aggregate(rows, mask, weights, Context(f=torch.tensor([0, 0])))
    weights[~mask] = float("nan")
    dirty = stage.aggregate(rows, mask, weights, Context(f=torch.tensor([0, 0])))
    close(dirty, clean, msg=f"{name}: a NaN weight in an empty slot leaked")


@pytest.mark.parametrize("name", cases("float32", STAGES))
def test_float32_rows_stay_float32(name):
    stage = build(name)
    f = feasible_fs(stage)[0]
    k = max(5, min_rows(stage, f))
    rows = torch.randn(2, k, 3, generator=gen(1))  # float32
    mask = torch.ones(2, k, dtype=torch.bool)
    root, previous = context_rows(stage, gen(2), 2, 3)
    to32 = lambda t: None if t is None else t.float()
    ctx = Context(f=torch.tensor([f, f]), root=to32(root), previous=to32(previous), generator=gen(3))
    out = stage.aggregate(rows, mask, None, ctx) if is_rule(name) else stage.apply(rows, mask, None, ctx)[0]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- 5. NNM by its definition -----------------------------------------------------------------

@pytest.mark.skipif("nnm" not in PRE_AGGREGATORS, reason="nnm is not registered")
@PROPERTY
@given(data=st.data())
def test_nnm_then_mean_is_the_mean_of_each_rows_nearest_neighbours(data):
    """Allouah et al. 2023, "Fixing by mixing", Algorithm 1: row i becomes the mean of its n - f
    nearest rows (itself included); computed here with a plain loop over rows."""
    rows, f = data.draw(plain_rows(build("nnm")), label="rows, f")
    expected = nnm_brute_force(rows, f)
    scale = float(rows.abs().max())
    close(build("nnm", f=f)(rows), expected, scale, msg="nnm rows differ from the definition")
    close(chain(["nnm", "mean"], f=f)(rows), expected.mean(0), scale, msg="nnm -> mean differs")
    close(chain(["nnm", "mean"])(rows, context=Context(f=torch.tensor([f]))), expected.mean(0), scale,
          msg="nnm -> mean with f from the context differs")


# -- 6. admissibility -------------------------------------------------------------------------

@pytest.mark.parametrize("name", cases("admissible", STAGES))
@pytest.mark.parametrize("via", ["constructor", "context"])
def test_too_few_rows_raise_naming_the_formula_and_enough_rows_do_not(name, via):
    if via == "constructor" and not takes(name, "f"):
        pytest.skip(f"{name} takes no f; its f comes from the context")
    for f in range(4):
        stage = build(name, f=f) if via == "constructor" else build(name)
        need = min_rows(stage, f)
        root, previous = context_rows(stage, gen(f), 1, 3)
        ctx = Context(f=None if via == "constructor" else torch.tensor([f]),
                      root=None if root is None else root[0],
                      previous=None if previous is None else previous[0], generator=gen(f))
        if need >= 1:
            with pytest.raises(InsufficientRows) as err:
                stage(torch.randn(need - 1, 3, generator=gen(need), dtype=DTYPE), None, ctx)
            assert stage.requirement() in str(err.value), str(err.value)
        out = stage(torch.randn(need, 3, generator=gen(need), dtype=DTYPE), None, ctx)
        assert torch.isfinite(out).all()
        assert stage.admissible(torch.tensor([need - 1, need]), torch.tensor([f, f])).tolist() == [False, True]


def _chain_ids():
    return [f"{p}-{r}" for p in PRES for r in RULES]


@pytest.mark.parametrize("ids", cases("chain_admissible", _chain_ids()))
def test_a_chain_refuses_what_any_of_its_stages_would_refuse(ids):
    """``chain([pre, rule], f=f)``: f is common to every stage (chain.py's docstring), so the
    chain refuses exactly the row counts at which some stage, given that f, would refuse its
    input -- checked before anything runs and again on the call."""
    pre_name, rule_name = ids.split("-", 1)
    for f in range(4):
        ch = chain([pre_name, chain_spec(rule_name)], f=f)
        ft = torch.tensor([f])
        for n in range(1, 17):
            counts = [torch.tensor([n])]
            for p in ch.pre:
                counts.append(p.out_counts(counts[-1]))
            refused = any(not bool(s.admissible(c, ft)[0]) for s, c in zip(ch.stages, counts))
            assert (ch.failing(n, f) is not None) == refused, (f, n, ch.failing(n, f))
            assert bool(ch.admissible(torch.tensor([n]), ft)[0]) == (not refused), (f, n)
            if refused:  # the plain call, with f from the constructors (no context)
                with pytest.raises(InsufficientRows):
                    ch(torch.randn(n, 2, generator=gen(n), dtype=DTYPE), None,
                       Context(root=torch.ones(2, dtype=DTYPE), previous=torch.zeros(2, dtype=DTYPE)))


# -- 7. chains --------------------------------------------------------------------------------

def _chain_bound_ids():
    return [f"{p}-{r}" for p in PRES for r in RULES if declares(r, "bound") != "none"]


@pytest.mark.parametrize("ids", cases("chain_bound", _chain_bound_ids()))
@FEW
@given(data=st.data())
def test_chain_satisfies_the_rules_bound_on_the_pre_aggregated_rows(ids, data):
    """``chain([pre, rule], f=f)`` under f huge rows satisfies the rule's bound with respect to the
    pre-aggregated rows that honest inputs became.

    Why this is the right claim: a pre-aggregator that keeps one row per input (clipping, ARC,
    NNM) turns row i into some value; the rule then sees n rows of which those at the f bad
    positions are arbitrary (they may be anything the pre-aggregator made of the bad rows), so the
    rule's own guarantee applies to the rows at the honest positions -- even though NNM mixes bad
    rows into them: they are what the rule was given. Bucketing (Karimireddy et al. 2022, Lemma 1)
    leaves at most f buckets that hold a bad row; with 1e6..1e12 bad rows those are the buckets of
    norm above 1e4 (honest rows are O(10)), and the rest are honest buckets. A bucket whose bad rows
    cancel looks honest to this test, which only enlarges the reference set and keeps the check
    sound."""
    pre_name, rule_name = ids.split("-", 1)
    f = data.draw(st.sampled_from(range(4)), label="f")
    ch = chain([pre_name, chain_spec(rule_name)], f=f)
    ns = [n for n in range(f + 1, 17) if ch.failing(n, f) is None][:5]
    if not ns:
        return
    rule = ch.rule
    case = data.draw(attacked(rule, HUGE_ATTACKS, fs=[f], ns=lambda _: ns), label="case")
    rows, where = case.rows, case.bad
    root, previous = context_rows(rule, gen(case.seed + 2), 1, case.d, like=case.honest)
    out = run_single(ch, rows, f, root, previous, seed=case.seed)
    mixed = ch.pre[0](rows, None, Context(f=torch.tensor([f]), generator=gen(case.seed)))
    if count_preserving(ch.pre[0]):
        reference = mixed[~where]
    else:
        reference = mixed[mixed.norm(dim=1) < 1e4]
        assert reference.shape[0] >= mixed.shape[0] - f
    check_bound(rule, out, reference, mixed.shape[0], f, batched_context(f, root, previous, case.seed))


@pytest.mark.skipif(not {"arc", "nnm"} <= set(PRES) or "trimmed_mean" not in RULES,
                    reason="arc, nnm or trimmed_mean is not registered")
@PROPERTY
@given(data=st.data())
def test_arc_nnm_trimmed_mean_stays_within_the_honest_norm(data):
    """``chain(["arc", "nnm", "trimmed_mean"], f=f)`` with f rows of size 1e6..1e12.

    The bound, and why it follows from the papers:
    - ARC (Allouah et al. 2024, "Boosting robustness by clipping gradients in distributed
      learning", Algorithm 1) clips the k = floor(2 f (n - f) / n) largest rows to the norm of
      the (k+1)-th largest. k >= f whenever n >= 2f, and among the k + 1 >= f + 1 largest rows one
      is honest, so after ARC every row has norm <= R := max_{i in H} ||x_i||.
    - NNM (Allouah et al. 2023) replaces each row by a mean of rows: norms stay <= R.
    - The trimmed mean averages, coordinate by coordinate, values of those rows: |out_j| <= R.
    Hence ||out||_inf <= R and ||out - mu_H|| <= sqrt(d) R + ||mu_H||, whatever the attack's size.
    """
    tm = build("trimmed_mean")
    case = data.draw(attacked(tm, HUGE_ATTACKS), label="case")
    f = case.f
    ch = chain(["arc", "nnm", "trimmed_mean"], f=f)
    if ch.failing(case.n, f) is not None:
        return
    out = ch(case.rows)
    big_r = float(case.honest.norm(dim=1).max())
    mu = case.honest.mean(0)
    tol = REL_TOL * max(1.0, big_r)
    assert float(out.abs().max()) <= big_r + tol, (out.tolist(), big_r)
    assert float((out - mu).norm()) <= math.sqrt(case.d) * big_r + float(mu.norm()) + tol


# -- weights ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", cases("chain_weights", RULES))
def test_a_chain_passes_weights_exactly_when_the_rule_accepts_them(name):
    """The engine-facing contract: weights reach a rule only if it declares ``accepts_weights``
    (the engine checks the same flag, so a rule without a weighted form never sees one)."""
    seen = []
    rule = build(name)
    original = rule.aggregate

    def spy(rows, mask, weights=None, context=None):
        seen.append(weights)
        return original(rows, mask, weights, context)

    rule.aggregate = spy
    ch = Chain([], rule)
    assert ch.accepts_weights == rule.accepts_weights
    f = feasible_fs(rule)[0]
    n = max(min_rows(rule, f), 2)
    rows = torch.randn(1, n, 3, generator=gen(0), dtype=DTYPE)
    root, previous = context_rows(rule, gen(1), 1, 3)
    ctx = Context(f=torch.tensor([f]), root=root, previous=previous, generator=gen(2))
    ch.aggregate(rows, torch.ones(1, n, dtype=torch.bool), torch.rand(1, n, dtype=DTYPE) + 0.5, ctx)
    assert (seen[-1] is not None) == rule.accepts_weights


@pytest.mark.parametrize("name", cases("weights", [n for n in RULES if declares(n, "accepts_weights")]))
@PROPERTY
@given(data=st.data())
def test_weights_are_used_and_only_their_ratios_matter(name, data):
    """For a rule that accepts weights (with f = 0): equal weights give the unweighted output,
    scaling all weights changes nothing, and putting all the weight on one row gives that row
    alone (so weights are not ignored: zero-weight rows do not count)."""
    rule = build(name)
    rows, _ = data.draw(plain_rows(rule), label="rows")
    f = 0
    if rows.shape[0] < min_rows(rule, f) + 1:
        rows = torch.cat([rows, rows[:1] + 0.5])
    n = rows.shape[0]
    g = gen(int(rows.abs().sum() * 1e6) % 2**31)
    root, previous = context_rows(rule, g, 1, rows.shape[1], like=rows)
    w = 0.5 + torch.rand(n, generator=g, dtype=DTYPE)
    scale = float(rows.abs().max())
    plain = run_single(rule, rows, f, root, previous)
    close(run_single(rule, rows, f, root, previous, torch.full((n,), 3.0, dtype=DTYPE)), plain, scale,
          msg=f"{name}: equal weights differ from no weights")
    c = 10.0 ** data.draw(st.floats(-3, 3), label="log10 c")
    close(run_single(rule, rows, f, root, previous, c * w), run_single(rule, rows, f, root, previous, w),
          scale, factor=10, msg=f"{name}: scaling every weight changed the output")
    i = data.draw(st.integers(0, n - 1), label="i")
    only = torch.zeros(n, dtype=DTYPE)
    only[i] = 1.0
    close(run_single(rule, rows, f, root, previous, only), run_single(rule, rows[i : i + 1], f, root, previous),
          scale, factor=rule_tolerance(rule) / REL_TOL,
          msg=f"{name}: with all the weight on row {i} it differs from row {i} alone")


@pytest.mark.parametrize("name", cases("root", [n for n in RULES if declares(n, "needs_root")]))
def test_a_rule_that_needs_a_root_refuses_to_run_without_one(name):
    rule = build(name)
    n = max(min_rows(rule, 0), 3)
    with pytest.raises((ValueError, TypeError)):
        rule(torch.randn(n, 3, dtype=DTYPE))


@pytest.mark.parametrize("f", [2, torch.tensor(2)], ids=["int", "0-d tensor"])
def test_single_call_takes_an_int_f(f):
    """``_single``'s docstring: a single-receiver context carries an int f (this failed until
    cf01dba, which lifts the context before checking the row count)."""
    rule = build("median")
    rows = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]], dtype=DTYPE)
    assert float(rule(rows, context=Context(f=f))[0]) == 2.0
    with pytest.raises(InsufficientRows):
        rule(rows[:4], context=Context(f=f))


@pytest.mark.parametrize("shape", [(1, 16, 40_000), (3, 5, 200_003), (2, 64, 9_000), (1, 130, 50)])
def test_the_blocked_sorting_network_equals_torch_sort(shape):
    """Coordinate blocks (sorting.sort_rows) change nothing: several blocks, a ragged last block, a
    network over more rows than a block's minimum, and torch.sort above NETWORK_MAX_ROWS."""
    from phalanx.aggregate.sorting import MIN_BLOCK, sort_rows

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    x[0, 0, :7] = x[0, -1, :7]  # ties
    assert torch.equal(sort_rows(x), x.sort(dim=1).values)
    assert shape[2] <= MIN_BLOCK or shape[2] > max(MIN_BLOCK, (1 << 19) // (shape[0] * shape[1]))  # blocked
