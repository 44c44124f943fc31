"""Privacy accounting: published values, calibration, monotonicity, per-node composition."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.privacy import PrivacyLedger, epsilon, noise_multiplier_for, sensitivity_factor
from phalanx.privacy.client import update_noise_multiplier


def test_rdp_reproduces_opacus_published_value():
    # Opacus's accountant test (opacus/tests/accountants_test.py): q = 0.04, sigma = 1.5,
    # int(90 / 0.04) = 2,250 steps, delta = 1e-5 -> 7.32911117143. dp-accounting's conversion
    # (Canonne, Kamath, Steinke 2020) differs in the fifth digit.
    assert epsilon(1.5, 0.04, 2250, 1e-5) == pytest.approx(7.32911117143, rel=1e-4)


def test_rdp_reproduces_dp_accounting_published_gaussian():
    # dp-accounting's RDP test: noise multiplier 4.530877117 is chosen so that one Gaussian step
    # is exactly (1, 1e-6)-DP by the RDP bound (there on a dense grid of orders)
    assert epsilon(4.530877117, 1.0, 1, 1e-6, "rdp") == pytest.approx(1.0, abs=1e-5)


def test_pld_is_the_exact_epsilon_of_the_analytic_gaussian():
    # Balle and Wang 2018, "Improving the Gaussian mechanism", Theorem 8: one Gaussian step of
    # noise multiplier s is (eps, delta)-DP with delta = Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s))
    s = 4.530877117
    eps = epsilon(s, 1.0, 1, 1e-6, "pld")

    def phi(x):
        return 0.5 * math.erfc(-x / math.sqrt(2))

    exact_delta = phi(-eps * s + 1 / (2 * s)) - math.exp(eps) * phi(-eps * s - 1 / (2 * s))
    assert exact_delta == pytest.approx(1e-6, rel=1e-3)
    assert eps < 0.95  # well below RDP's 1.0: the RDP conversion is loose for one step


def test_pld_is_tighter_than_rdp_on_the_published_setting():
    assert epsilon(1.5, 0.04, 2250, 1e-5, "pld") < epsilon(1.5, 0.04, 2250, 1e-5, "rdp")


def test_no_step_costs_nothing():
    assert epsilon(1.0, 0.5, 0, 1e-5) == 0.0


@pytest.mark.parametrize("accountant, q, steps", [("rdp", 0.1, 40), ("pld", 1.0, 5)])
def test_calibrated_noise_meets_the_target_and_no_less_noise_does(accountant, q, steps):
    sigma = noise_multiplier_for(3.0, q, steps, 1e-5, accountant)
    assert epsilon(sigma, q, steps, 1e-5, accountant) <= 3.0
    assert epsilon(sigma * 0.99, q, steps, 1e-5, accountant) > 3.0


def test_fast_calibration_errs_towards_more_noise():
    exact = noise_multiplier_for(3.0, 0.05, 300, 1e-5)
    fast = noise_multiplier_for(3.0, 0.05, 300, 1e-5, fast=True)
    assert exact <= fast <= exact * 1.05
    assert epsilon(fast, 0.05, 300, 1e-5) <= 3.0


@pytest.mark.parametrize("call, match", [
    (lambda: epsilon(0.0, 0.1, 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon(1.0, 0.0, 10, 1e-5), "sample_rate"),
    (lambda: epsilon(1.0, 1.5, 10, 1e-5), "sample_rate"),
    (lambda: epsilon(1.0, 0.1, -1, 1e-5), "steps"),
    (lambda: epsilon(1.0, 0.1, 10, 0.0), "delta"),
    (lambda: epsilon(1.0, 0.1, 10, 1e-5, "gdp"), "accountant"),
    (lambda: noise_multiplier_for(-1.0, 0.1, 10, 1e-5), "target epsilon"),
    (lambda: noise_multiplier_for(1.0, 0.1, 0, 1e-5), "steps"),
    (lambda: sensitivity_factor("swap"), "adjacency"),
])
def test_bad_arguments_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=12, deadline=None)
@given(sigma=st.floats(0.5, 5.0), q=st.floats(0.001, 1.0), steps=st.integers(1, 300),
       more=st.integers(1, 300))
def test_epsilon_grows_with_steps_and_shrinks_with_noise(sigma, q, steps, more):
    base = epsilon(sigma, q, steps, 1e-5)
    assert epsilon(sigma, q, steps + more, 1e-5) >= base
    assert epsilon(sigma * 1.5, q, steps, 1e-5) <= base


@settings(max_examples=8, deadline=None)
@given(sigma=st.floats(0.7, 3.0), q=st.floats(0.001, 0.5), steps=st.integers(1, 300))
def test_epsilon_grows_with_the_sample_rate(sigma, q, steps):
    assert epsilon(sigma, min(1.0, 2 * q), steps, 1e-5) >= epsilon(sigma, q, steps, 1e-5)


def test_client_level_adjacency_sensitivities():
    assert sensitivity_factor("zero_out") == 1.0
    assert sensitivity_factor("replace_one") == 2.0


# -- per-node composition ---------------------------------------------------------------------
def _composed(parts, delta, accountant="rdp"):
    acc = rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
    events = []
    for sigma, q, steps in parts:
        step = dp_accounting.GaussianDpEvent(sigma)
        if q < 1:
            step = dp_accounting.PoissonSampledDpEvent(q, step)
        events.append(dp_accounting.SelfComposedDpEvent(step, steps))
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_ledger_composes_each_nodes_own_steps(accountant):
    # Arrange: node 0 has two rounds of client-level noise and 40 DP-SGD steps; node 1 only the
    # two rounds; node 2 nothing
    ledger = PrivacyLedger(1e-5, accountant)

    # Act
    ledger.record([0, 1], 2.0, 1.0, 1)
    ledger.record([0, 1], 2.0, 1.0, 1)
    ledger.record([0], 1.1, 0.05, 40)

    # Assert: the same numbers as composing the events anew in the library
    assert ledger.epsilon(0) == pytest.approx(_composed([(2.0, 1.0, 2), (1.1, 0.05, 40)], 1e-5, accountant), rel=1e-9)
    assert ledger.epsilon(1) == pytest.approx(_composed([(2.0, 1.0, 2)], 1e-5, accountant), rel=1e-9)
    assert ledger.epsilon(2) == 0.0
    after = ledger.epsilon_after(1, 1.1, 0.05, 40)
    assert after == pytest.approx(ledger.epsilon(0), rel=1e-9)
    assert ledger.epsilon(1) < after  # asking did not record anything


def test_adaptive_clipping_split_composes_to_the_accounted_noise():
    # Andrew et al. 2021, Theorem 1: updates at z_u and the count at 2 sigma_b compose to z
    z, sigma_b = 1.2, 2.5
    z_u = update_noise_multiplier(z, sigma_b)
    both = _composed([(z_u, 1.0, 1), (2 * sigma_b, 1.0, 1)], 1e-5)
    assert both == pytest.approx(epsilon(z, 1.0, 1, 1e-5), rel=1e-6)
    with pytest.raises(ValueError, match="sigma_b"):
        update_noise_multiplier(2.0, 0.9)
    assert math.isfinite(z_u) and z_u > z
