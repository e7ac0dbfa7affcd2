"""Tests for keyboard_fl.privacy.accounting (user-level DP-FedAvg accounting)."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import dp_accounting
import numpy as np
import pytest
from scipy import optimize
from scipy.stats import norm

from keyboard_fl.privacy import accounting as acc
from keyboard_fl.privacy.accounting import (
    PLD_DISCRETIZATION,
    PrivacyLedger,
    PrivacySpec,
    calibrate_noise_multiplier,
    default_delta,
    describe,
    dp_event,
    epsilon,
    epsilon_curve,
)

NR = dp_accounting.NeighboringRelation


# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------


def _reference_pld(z, q, rounds, delta, vdi=PLD_DISCRETIZATION):
    a = dp_accounting.pld.PLDAccountant(NR.ADD_OR_REMOVE_ONE, value_discretization_interval=vdi)
    a.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
            rounds,
        )
    )
    return a.get_epsilon(delta)


def _reference_rdp(z, q, rounds, delta):
    a = dp_accounting.rdp.RdpAccountant()
    for _ in range(2):  # composed in two halves: independent of SelfComposed
        a.compose(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
            rounds // 2,
        )
    if rounds % 2:
        a.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)))
    return a.get_epsilon(delta)


def _analytic_gaussian_delta(eps, sigma, sensitivity=1.0):
    """Exact δ(ε) of the Gaussian mechanism (Balle & Wang 2018, Thm. 8)."""
    a = sensitivity / (2 * sigma)
    b = eps * sigma / sensitivity
    return norm.cdf(a - b) - math.exp(eps) * norm.cdf(-a - b)


def _analytic_gaussian_epsilon(sigma, delta, sensitivity=1.0):
    f = lambda e: _analytic_gaussian_delta(e, sigma, sensitivity) - delta
    if f(0.0) <= 0:
        return 0.0
    return optimize.brentq(f, 0.0, 500.0, xtol=1e-12)


# ---------------------------------------------------------------------------
# ε agrees with dp-accounting and with theory
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "z,q,rounds,delta",
    [(1.0, 0.01, 1000, 1e-6), (0.7, 0.05, 200, 1e-5), (2.0, 0.02, 50, 1e-8)],
)
def test_pld_epsilon_equals_dp_accounting(z, q, rounds, delta):
    assert epsilon(z, q, rounds, delta) == pytest.approx(_reference_pld(z, q, rounds, delta), rel=1e-12)


@pytest.mark.parametrize("z,q,rounds,delta", [(1.0, 0.01, 1000, 1e-6), (0.8, 0.1, 301, 1e-5)])
def test_rdp_epsilon_equals_dp_accounting(z, q, rounds, delta):
    assert epsilon(z, q, rounds, delta, accountant="rdp") == pytest.approx(
        _reference_rdp(z, q, rounds, delta), rel=1e-9
    )


def test_dp_event_is_privacy_as_data():
    spec = PrivacySpec(1.1, 0.02, 300, 1e-6)
    assert dp_event(spec) == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.1)),
        300,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.rounds = 5  # type: ignore[misc]


@pytest.mark.parametrize("z", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-8])
def test_single_full_round_matches_analytic_gaussian(z, delta):
    exact = _analytic_gaussian_epsilon(z, delta)
    got = epsilon(z, 1.0, 1, delta)
    # PLD rounds pessimistically: never below the exact value, and close.
    assert got >= exact - 1e-9
    assert got == pytest.approx(exact, rel=2e-3, abs=2e-3)
    fine = epsilon(z, 1.0, 1, delta, pld_discretization=1e-4)
    assert exact - 1e-9 <= fine <= got + 1e-12
    assert fine == pytest.approx(exact, rel=3e-4, abs=3e-4)
    # RDP is a valid but looser bound.
    assert epsilon(z, 1.0, 1, delta, accountant="rdp") >= exact


@pytest.mark.parametrize(
    "z,q,rounds",
    [(0.5, 0.02, 100), (1.0, 0.02, 500), (2.0, 0.02, 2000), (1.0, 0.01, 3000), (0.8, 0.1, 1000), (1.0, 1.0, 10)],
)
def test_rdp_is_consistent_upper_bound_of_pld(z, q, rounds):
    pld = epsilon(z, q, rounds, 1e-6)
    rdp = epsilon(z, q, rounds, 1e-6, accountant="rdp")
    assert pld <= rdp
    assert rdp <= 1.5 * pld + 0.1


def test_no_noise_is_infinite_epsilon():
    assert epsilon(0.0, 0.01, 10, 1e-6) == math.inf
    assert epsilon(0.0, 0.01, 10, 1e-6, accountant="rdp") == math.inf
    assert np.all(np.isinf(epsilon_curve(0.0, 0.01, 5, 1e-6)))
    assert PrivacyLedger(0.0, 0.01, 1e-6, 1000).step().epsilon() == math.inf


def test_full_participation_has_no_amplification():
    full = epsilon(1.0, 1.0, 5, 1e-6)
    gauss = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    gauss.compose(dp_accounting.GaussianDpEvent(1.0), 5)
    assert full == pytest.approx(gauss.get_epsilon(1e-6), rel=1e-3)
    assert full > epsilon(1.0, 0.5, 5, 1e-6)


# ---------------------------------------------------------------------------
# Monotonicity
# ---------------------------------------------------------------------------


def test_epsilon_grows_with_rounds():
    curve = epsilon_curve(1.0, 0.02, [1, 10, 100, 500, 2000], 1e-6)
    assert np.all(np.diff(curve) > 0)


def test_epsilon_grows_with_sampling_prob():
    eps = [epsilon(1.0, q, 300, 1e-6) for q in (0.005, 0.01, 0.05, 0.2, 1.0)]
    assert np.all(np.diff(eps) > 0)


def test_epsilon_shrinks_with_noise_and_delta():
    eps = [epsilon(z, 0.02, 300, 1e-6) for z in (0.5, 0.8, 1.0, 2.0, 4.0)]
    assert np.all(np.diff(eps) < 0)
    assert epsilon(1.0, 0.02, 300, 1e-4) < epsilon(1.0, 0.02, 300, 1e-8)


def test_curve_int_and_list_agree():
    full = epsilon_curve(1.0, 0.05, 60, 1e-6)
    assert full.shape == (60,)
    assert np.all(np.diff(full) >= 0)
    picked = epsilon_curve(1.0, 0.05, [1, 7, 60], 1e-6)
    np.testing.assert_allclose(full[[0, 6, 59]], picked, rtol=1e-5)
    assert picked[-1] == epsilon(1.0, 0.05, 60, 1e-6)
    rdp_full = epsilon_curve(1.0, 0.05, 60, 1e-6, accountant="rdp")
    rdp_pick = [epsilon(1.0, 0.05, r, 1e-6, accountant="rdp") for r in (1, 7, 60)]
    np.testing.assert_allclose(rdp_full[[0, 6, 59]], rdp_pick, rtol=1e-12)


# ---------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [1.0, 3.0, 10.0])
def test_calibration_lands_just_below_target(target):
    z = calibrate_noise_multiplier(target, 0.02, 500, 1e-6)
    got = epsilon(z, 0.02, 500, 1e-6)
    assert got <= target
    assert got >= 0.99 * target
    # smallest such z: 1 % less noise overshoots the target
    assert epsilon(0.99 * z, 0.02, 500, 1e-6) > target


def test_calibration_with_rdp_and_monotone_in_target():
    z_strong = calibrate_noise_multiplier(1.0, 0.01, 200, 1e-6, accountant="rdp")
    z_weak = calibrate_noise_multiplier(8.0, 0.01, 200, 1e-6, accountant="rdp")
    assert z_strong > z_weak
    e = epsilon(z_strong, 0.01, 200, 1e-6, accountant="rdp")
    assert 0.99 <= e <= 1.0


# ---------------------------------------------------------------------------
# Fixed-size cohorts: replace-one, RDP only, never a Poisson ε
# ---------------------------------------------------------------------------


def test_fixed_cohort_uses_replace_one_rdp():
    spec = PrivacySpec(1.0, 0.01, 100, 1e-6, sampling="fixed", population=10_000)
    assert spec.cohort_size == 100
    ev = dp_event(spec)
    inner = ev.event
    assert isinstance(inner, dp_accounting.SampledWithoutReplacementDpEvent)
    assert (inner.source_dataset_size, inner.sample_size) == (10_000, 100)
    # replace-one sensitivity of a clipped sum is 2C -> z/2 in the event
    assert inner.event == dp_accounting.GaussianDpEvent(0.5)

    got = epsilon(1.0, 0.01, 100, 1e-6, accountant="rdp", sampling="fixed", population=10_000)
    ref = dp_accounting.rdp.RdpAccountant(neighboring_relation=NR.REPLACE_ONE)
    ref.compose(ev)
    assert got == pytest.approx(ref.get_epsilon(1e-6), rel=1e-12)
    # A different guarantee from the Poisson one, and not smaller here.
    assert got != epsilon(1.0, 0.01, 100, 1e-6, accountant="rdp")
    assert got > epsilon(1.0, 0.01, 100, 1e-6)

    report = describe(spec)
    assert report["accountant"] == "rdp"
    assert report["neighbouring"] == "replace-one user"
    assert report["sampling"] == "fixed"
    assert report["epsilon"] == got == report["epsilon_rdp"]


def test_fixed_full_cohort_bounds_exact_replace_one_gaussian():
    # m = N: every user every round; the honest replace-one ε of a clipped sum
    # with noise z*C is that of a Gaussian with sensitivity 2C.
    for z in (1.0, 3.0):
        fixed = epsilon(z, 1.0, 1, 1e-6, accountant="rdp", sampling="fixed", population=500)
        exact = _analytic_gaussian_epsilon(z, 1e-6, sensitivity=2.0)
        assert exact <= fixed <= 1.5 * exact + 0.1


def test_fixed_cohort_refuses_pld():
    with pytest.raises(ValueError, match="rdp"):
        epsilon(1.0, 0.01, 100, 1e-6, sampling="fixed", population=10_000)
    with pytest.raises(ValueError, match="population"):
        epsilon(1.0, 0.01, 100, 1e-6, accountant="rdp", sampling="fixed")
    with pytest.raises(ValueError, match="cohort size"):
        PrivacySpec(1.0, 0.01, 100, 1e-6, sampling="fixed", population=10)
    ledger = PrivacyLedger(1.0, 0.01, 1e-6, 10_000, sampling="fixed").step(10)
    with pytest.raises(ValueError, match="rdp"):
        ledger.epsilon("pld")
    assert ledger.epsilon() == ledger.epsilon("rdp")


# ---------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------


def test_ledger_steps_and_round_trips_through_json():
    ledger = PrivacyLedger(1.0, 0.01, 1e-6, population=50_000)
    assert ledger.rounds == 0 and ledger.epsilon() == 0.0
    assert ledger.report()["epsilon"] == 0.0
    after = ledger.step().step(9)
    assert ledger.rounds == 0  # immutable
    assert after.rounds == 10
    restored = PrivacyLedger.from_dict(json.loads(json.dumps(after.to_dict())))
    assert restored == after
    # a resumed run continues exactly where the uninterrupted one is
    assert restored.step(90).epsilon() == ledger.step(100).epsilon()
    assert after.epsilon() == epsilon(1.0, 0.01, 10, 1e-6)


def test_ledger_report_contents():
    rep = PrivacyLedger(1.0, 0.02, 1e-6, 10_000).step(100).report()
    assert rep == {
        "epsilon": epsilon(1.0, 0.02, 100, 1e-6),
        "delta": 1e-6,
        "noise_multiplier": 1.0,
        "sampling_prob": 0.02,
        "rounds": 100,
        "population": 10_000,
        "privacy_unit": "user",
        "accountant": "pld",
        "sampling": "poisson",
        "neighbouring": "add-remove one user",
        "epsilon_rdp": epsilon(1.0, 0.02, 100, 1e-6, accountant="rdp"),
    }
    json.dumps(rep)


def test_ledger_from_dict_rejects_bad_keys():
    d = PrivacyLedger(1.0, 0.02, 1e-6, 10_000).to_dict()
    with pytest.raises(ValueError, match="unknown"):
        PrivacyLedger.from_dict({**d, "clip": 1.0})
    d.pop("delta")
    with pytest.raises(ValueError, match="missing.*delta"):
        PrivacyLedger.from_dict(d)
    with pytest.raises(ValueError, match="rounds"):
        PrivacyLedger(1.0, 0.02, 1e-6, 10_000, rounds=-1)
    with pytest.raises(ValueError, match="n must"):
        PrivacyLedger(1.0, 0.02, 1e-6, 10_000).step(-1)


def test_per_round_logging_is_cached():
    ledger = PrivacyLedger(1.3, 0.015, 1e-6, 10_000).step(777)
    ledger.epsilon()
    t = time.perf_counter()
    for _ in range(100):
        ledger.epsilon()
    assert time.perf_counter() - t < 0.05


def test_long_runs_are_fast():
    acc._epsilon_cached.cache_clear()
    t = time.perf_counter()
    epsilon(1.0, 0.01, 3000, 1e-6)
    epsilon(1.0, 0.01, 3000, 1e-6, accountant="rdp")
    assert time.perf_counter() - t < 3.0


# ---------------------------------------------------------------------------
# δ and validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,expected",
    [
        (1, 1e-5),
        (1000, 1e-5),
        (10_000, 1e-5),
        (10_001, 1e-6),
        (50_000, 1e-6),
        (100_000, 1e-6),
        (1_000_000, 1e-7),
        (3_000_000, 1e-8),
    ],
)
def test_default_delta(n, expected):
    d = default_delta(n)
    assert d == pytest.approx(expected)
    assert d <= 1 / (10 * n)
    assert math.log10(d) == pytest.approx(round(math.log10(d)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampling_prob=0.0), "sampling_prob must be in \\(0, 1\\]"),
        (dict(sampling_prob=1.5), "sampling_prob"),
        (dict(sampling_prob=float("nan")), "sampling_prob"),
        (dict(noise_multiplier=-0.1), "noise_multiplier must be"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier"),
        (dict(rounds=0), "rounds must be >= 1"),
        (dict(rounds=2.5), "rounds must be an integer"),
        (dict(delta=0.0), "delta must be in \\(0, 1\\)"),
        (dict(delta=1.0), "delta"),
        (dict(accountant="moments"), "unknown accountant 'moments'"),
        (dict(sampling="shuffle"), "unknown sampling 'shuffle'"),
        (dict(population=0), "population must be >= 1"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs, match):
    args = dict(noise_multiplier=1.0, sampling_prob=0.01, rounds=10, delta=1e-6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        epsilon(**args)


@pytest.mark.parametrize("target", [0.0, -1.0, float("nan"), float("inf")])
def test_calibration_rejects_bad_targets(target):
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise_multiplier(target, 0.01, 10, 1e-6)


def test_calibration_rejects_bad_accountant_and_args():
    with pytest.raises(ValueError, match="unknown accountant"):
        calibrate_noise_multiplier(1.0, 0.01, 10, 1e-6, accountant="x")
    with pytest.raises(ValueError, match="sampling_prob"):
        calibrate_noise_multiplier(1.0, 0.0, 10, 1e-6)
    with pytest.raises(ValueError, match="population"):
        default_delta(0)
