"""Empirical privacy: the estimators on hand-made scores with known answers, canary-client insertion, and
the one-run lower bound never above the accounted ε of a real DP-FedAvg loop (toy model)."""

import dataclasses
import functools
import math

import dp_accounting
import jax
import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from keyboard_fl.empirical_audit import audit_canaries, audit_scores, schedule_scores
from keyboard_fl.fl.canary_clients import CanaryPlan, canary_cosines, canary_direction, canary_sum, flatten
from keyboard_fl.fl.round import AggregatorConfig, build_round, make_server_optimizer, server_init
from keyboard_fl.privacy import epsilon
from keyboard_fl.privacy.empirical import (
    CanaryClientConfig,
    epsilon_estimate,
    gaussian_pair_delta,
    gaussian_pair_epsilon,
    gdp_epsilon,
    one_run_bound,
    unamplified_epsilon,
)
from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

K = 8


# --- the Gaussian → (ε, δ) conversion -------------------------------------------------------------------


@pytest.mark.parametrize("eps,delta", [(0.5, 1e-5), (2.0, 1e-6), (8.0, 1e-10)])
def test_gdp_epsilon_inverts_the_gaussian_mechanism(eps, delta):
    """μ-GDP with μ = 1/σ is the Gaussian mechanism of noise σ: dp-accounting's σ for (ε, δ) gives back ε."""
    sigma = dp_accounting.get_sigma_gaussian(eps, delta)
    assert gdp_epsilon(1 / sigma, delta) == pytest.approx(eps, rel=1e-4)


def test_unequal_variance_delta_matches_numerical_integration():
    for e, (m0, s0, m1, s1) in [(1.3, (0, 1, 0.5, 1.5)), (0.4, (0.2, 2.0, 0.0, 1.0)), (3.0, (0, 1, 0, 0.7))]:

        def hockey(p, q, e=e):
            return integrate.quad(
                lambda x: max(norm.pdf(x, *p) - math.exp(e) * norm.pdf(x, *q), 0), -40, 40, limit=400
            )[0]

        want = max(hockey((m1, s1), (m0, s0)), hockey((m0, s0), (m1, s1)))
        assert gaussian_pair_delta(e, m0, s0, m1, s1) == pytest.approx(want, rel=1e-5, abs=1e-10)


def test_identical_gaussians_have_zero_epsilon():
    assert gaussian_pair_epsilon(0.3, 1.0, 0.3, 1.0, 1e-6) == 0.0
    assert gdp_epsilon(0.0, 1e-6) == 0.0


# --- ε_est and ε_lower on hand-made score distributions ----------------------------------------------------


def test_epsilon_estimate_recovers_a_known_gaussian_shift():
    rng = np.random.default_rng(0)
    null, inserted = rng.normal(0, 1, 50_000), rng.normal(1.0, 1, 50_000)
    est = epsilon_estimate(inserted, null, 1e-5)
    assert est["inserted_mean"] == pytest.approx(1.0, abs=0.02)
    # Equal true variances: the answer is 1-GDP's ε (≈ 4.4 at δ = 1e-5); the fitted stds differ by sampling error only.
    assert est["epsilon"] == pytest.approx(gdp_epsilon(1.0, 1e-5), rel=0.1)
    same = epsilon_estimate(rng.normal(0, 1, 50_000), null, 1e-5)
    assert same["epsilon"] < 0.35


def test_one_run_bound_perfect_separation_has_the_closed_form():
    """All 500 in-canaries above all 500 out-canaries: the bound is the ε at which 500 correct guesses out of 500
    become unlikely, q^500 = α / T with T the thresholds tried (Bonferroni), q = e^ε / (1 + e^ε)
    (Steinke et al. 2023). jax-privacy tries between 1 and 1,001 thresholds: the bound lies between the two."""
    ins, outs = np.arange(500) + 1000.0, np.arange(500, dtype=float)
    r = one_run_bound(ins, outs, 1e-9)

    def closed_form(thresholds):
        q = (0.05 / thresholds) ** (1 / 500)
        return math.log(q / (1 - q))

    assert closed_form(1001) - 1e-3 <= r["epsilon_lower"] <= closed_form(1) + 1e-3  # 3.91 ≤ ε_lower ≤ 5.11
    assert r["auroc"] == 1.0 and r["tpr_at_fpr"] == 1.0
    assert r["epsilon_lower_max"] == pytest.approx(r["epsilon_lower"])  # perfect separation is the ceiling


def test_one_run_bound_respects_a_known_randomized_response_epsilon():
    """Scores from ε = 1 randomized response: the bound must not exceed 1, and it finds something."""
    rng = np.random.default_rng(1)
    p = math.e / (1 + math.e)
    ins, outs = (rng.random(5000) < p).astype(float), (rng.random(5000) < 1 - p).astype(float)
    r = one_run_bound(ins, outs, 1e-6)
    assert 0.5 < r["epsilon_lower"] <= 1.0
    assert one_run_bound(rng.normal(size=2000), rng.normal(size=2000), 1e-6)["epsilon_lower"] < 0.2


def test_unamplified_epsilon_is_the_gaussian_mechanism_over_k_rounds():
    """k rounds at multiplier z is one Gaussian mechanism at z/√k (dp-accounting agrees); no noise: ∞."""
    z, delta = 1.3, 1e-6
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.GaussianDpEvent(z), 3)
    assert unamplified_epsilon(z, 3, delta) == pytest.approx(acc.get_epsilon(delta), rel=2e-3)
    assert unamplified_epsilon(z, 3, delta) == pytest.approx(gdp_epsilon(math.sqrt(3) / z, delta))
    assert unamplified_epsilon(0.0, 1, delta) == math.inf and unamplified_epsilon(z, 0, delta) == 0.0


# --- canary clients in the round --------------------------------------------------------------------------

C, Z, QN = 0.3, 1.3, 4.0
DP = AggregatorConfig(mode="dp-fedavg", clip_norm=C, noise_multiplier=Z, expected_cohort=QN)
SGD = make_server_optimizer("sgd", 1.0)


@functools.cache
def _round(agg):
    return build_round(toy_loss, 0.5, SGD, agg).apply


def _slots(plan_count=64, q=0.5, seed=3):
    plan = CanaryPlan(CanaryClientConfig(count=plan_count), seed, q, C)
    return plan, plan.slots(0)


def test_canary_directions_are_unit_and_distinct():
    params = toy_init(jax.random.key(0))
    _, slots = _slots()
    u0, u1 = (flatten(canary_direction(slots.base_key, j, params)) for j in (0, 1))
    assert np.linalg.norm(u0) == pytest.approx(1.0, rel=1e-5) and abs(u0 @ u1) < 0.2


def test_canary_plan_splits_and_samples_with_q():
    plan, _ = _slots(plan_count=400, q=0.25)
    assert len(plan.inserted) == 200 and not set(plan.inserted) & set(plan.held_out)
    assert sorted([*plan.inserted, *plan.held_out]) == list(range(400))
    counts = [int(np.sum(np.asarray(plan.slots(r).mask))) for r in range(20)]
    assert np.mean(counts) == pytest.approx(50, rel=0.15)  # Binomial(200, 0.25) per round
    for r in range(3):  # only inserted canaries are ever sampled
        assert set(np.asarray(plan.slots(r).ids)[np.asarray(plan.slots(r).mask)]) <= set(plan.inserted)
    assert np.array_equal(np.asarray(plan.slots(7).ids), np.asarray(_slots(plan_count=400, q=0.25)[0].slots(7).ids))


def test_coin_assignment_and_schedules_are_independent_of_the_coins():
    """ "coin": an independent fair coin per direction. Held-out directions get a schedule of their own with the
    same Poisson(q) law; inserted ones replay training's draw exactly."""
    plan = CanaryPlan(CanaryClientConfig(count=2000, assignment="coin"), 5, 0.1, C)
    assert 900 < len(plan.inserted) < 1100 and not set(plan.inserted) & set(plan.held_out)
    sched = plan.schedules(30)
    for r in (0, 17):
        s = plan.slots(r)
        assert set(np.flatnonzero(sched[plan.inserted, r])) == {
            int(np.searchsorted(plan.inserted, j)) for j in np.asarray(s.ids)[np.asarray(s.mask)]
        }
    for side in (plan.inserted, plan.held_out):
        assert sched[side].mean() == pytest.approx(0.1, rel=0.05)  # 30 rounds x ~1000 directions each
    assert not np.array_equal(sched[plan.inserted[:500]], sched[plan.held_out[:500]])
    half = CanaryPlan(CanaryClientConfig(count=400), 5, 0.1, C)
    assert len(half.inserted) == 200  # the original assignment, kept for older runs


def test_canary_sum_skips_padding_and_equals_the_explicit_sum():
    params = toy_init(jax.random.key(0))
    _, slots = _slots(plan_count=64, q=0.2)
    ids, mask = np.asarray(slots.ids), np.asarray(slots.mask)
    assert 0 < mask.sum() < mask.size
    got, n = canary_sum(slots, params, 0.1)
    want = sum(min(C, 0.1) * flatten(canary_direction(slots.base_key, int(j), params)) for j in ids[mask])
    np.testing.assert_allclose(flatten(got), want, rtol=1e-5, atol=1e-7)
    assert int(n) == mask.sum()


def test_schedule_scores_scale_the_sum_by_sqrt_k():
    cos = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 5.0]])
    sched = np.array([[True, True, False], [False, False, True]])
    np.testing.assert_allclose(schedule_scores(cos, sched), [3 / math.sqrt(2), 5.0])
    with pytest.raises(ValueError):
        schedule_scores(cos, np.zeros_like(sched))


@pytest.mark.parametrize("agg", [DP, AggregatorConfig(mode="fedavg")], ids=["dp", "fedavg"])
def test_canaries_change_only_the_sum_real_users_are_untouched(agg):
    """Same cohort, same key: every real-user statistic is identical, and the new params differ from the
    canary-free ones by exactly the sampled canaries' updates (DP: over qN; FedAvg: as average clients)."""
    params = toy_init(jax.random.key(0))
    cohort = toy_cohort(5, K, num_real=6, steps=2, batch=4, seq_len=8)
    _, slots = _slots()
    n = int(np.sum(np.asarray(slots.mask)))
    assert n > 0
    s0, m0 = _round(agg)(server_init(params, SGD), cohort, jax.random.key(9))
    s1, m1 = _round(agg)(server_init(params, SGD), cohort._replace(canaries=slots), jax.random.key(9))
    for f in m0._fields:
        if f != "server_update_norm":
            np.testing.assert_array_equal(np.asarray(getattr(m0, f)), np.asarray(getattr(m1, f)), err_msg=f)
    c = flatten(canary_sum(slots, params, C if agg.mode == "dp-fedavg" else None)[0])
    moved0, moved1 = flatten(s0.params) - flatten(params), flatten(s1.params) - flatten(params)
    if agg.mode == "dp-fedavg":
        want = moved0 + c / QN
    else:
        tokens, w = float(m0.num_tokens), float(m0.num_tokens) / int(m0.included_clients)
        want = (moved0 * tokens + w * c) / (tokens + w * n)
    np.testing.assert_allclose(moved1, want, rtol=2e-4, atol=2e-6)


# --- the one-run bound stays below the accounted ε on a real DP-FedAvg loop -------------------------------


def _audit(agg, rounds=12, q=0.5, count=400, seed=0, assignment="half"):
    params = toy_init(jax.random.key(1))
    plan = CanaryPlan(CanaryClientConfig(count=count, assignment=assignment), seed, q, C)
    fn = _round(agg)
    state = server_init(params, SGD)
    iterates = [flatten(params)]
    for r in range(rounds):
        cohort = toy_cohort(100 + r, K, num_real=6, steps=2, batch=4, seq_len=8)
        state, _ = fn(state, cohort._replace(canaries=plan.slots(r)), jax.random.key(1000 + r))
        iterates.append(flatten(state.params))
    it = np.stack(iterates)
    deltas = np.concatenate([it[-1:] - it[:1], np.diff(it, axis=0)])
    if assignment == "half":  # the schedule-blind audit over every direction, as before
        cos = canary_cosines(seed, count, params, deltas)
        return audit_scores(cos, plan.inserted, plan.held_out, 1e-5, plan.config)
    dp = agg.mode == "dp-fedavg"
    metrics = {"mode": agg.mode, "mechanism": {"name": "dp-fedavg", "noise_multiplier": agg.noise_multiplier}}
    return audit_canaries(
        plan, rounds, lambda ids: canary_cosines(seed, ids, params, deltas), metrics if dp else {}, 1e-5
    )


def test_one_run_bound_is_below_the_accounted_epsilon_and_large_without_noise():
    z, q, rounds = 4.0, 0.5, 12
    eps = epsilon(z, q, rounds, 1e-5)
    dp = _audit(AggregatorConfig(mode="dp-fedavg", clip_norm=C, noise_multiplier=z, expected_cohort=QN), rounds, q)
    nodp = _audit(AggregatorConfig(mode="dp-fedavg", clip_norm=C, noise_multiplier=0.0, expected_cohort=QN), rounds, q)
    for stat in ("final_model", "all_iterates"):
        assert dp[stat]["epsilon_lower"] <= eps, (stat, dp[stat], eps)
        assert nodp[stat]["epsilon_lower"] > 2.0 and nodp[stat]["epsilon_est"] > 5 * dp[stat]["epsilon_est"]


def test_given_schedule_bound_is_below_the_unamplified_epsilon_and_large_without_noise():
    """Scoring each canary on the rounds it was (or would have been) sampled in: with noise the bound stays under
    the Gaussian mechanism's ε over that many rounds; without noise (and in FedAvg) it is large."""
    q, rounds = 0.1, 12
    z = 1.0
    noisy = _audit(dataclasses.replace(DP, noise_multiplier=z), rounds, q, count=1200, assignment="coin")
    g = noisy["given_schedule"]
    assert g["compared_epsilon"] == pytest.approx(unamplified_epsilon(z, g["max_participations"], 1e-5))
    assert g["in_canaries"] > 100 and g["out_canaries"] > 100  # ~72% of the directions have a scheduled round
    assert g["epsilon_lower"] <= g["compared_epsilon"], g
    assert noisy["final_model"]["epsilon_lower"] <= epsilon(z, q, rounds, 1e-5)
    for agg in (dataclasses.replace(DP, noise_multiplier=0.0), AggregatorConfig(mode="fedavg")):
        g0 = _audit(agg, rounds, q, count=1200, assignment="coin")["given_schedule"]
        assert g0["compared_epsilon"] == math.inf
        assert g0["epsilon_lower"] > 2.0 and g0["epsilon_lower"] >= 0.8 * g0["epsilon_lower_max"], g0
        assert g0["epsilon_est"] > 5 * g["epsilon_est"], (g0, g)
