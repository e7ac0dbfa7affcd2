"""Tests for DP-FTRL with correlated noise (keyboard_fl.privacy.dp_ftrl, correlated_noise).

Strategies here are fixed by hand (valid BLT / banded coefficients) so the
tests do not spend minutes in jax-privacy's optimisers; one test runs the
banded optimiser on a tiny problem.
"""

import json
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keyboard_fl import checkpoint
from keyboard_fl.fl.participation import CyclicPoisson
from keyboard_fl.privacy import correlated_noise as cn
from keyboard_fl.privacy.clipping import add_gaussian_noise
from keyboard_fl.privacy.dp_ftrl import (
    BLT,
    BandMF,
    calibrate_noise_multiplier,
    mechanism_from_dict,
)

BLT_C = ((0.9, 0.4), (0.25, 0.3))  # buf_decay, output_scale: Toeplitz coefs 1, .55, .345, ... (decreasing)
BAND3 = tuple(np.array([0.8, 0.45, 0.3]) / np.linalg.norm([0.8, 0.45, 0.3]))


def _bandmf(z=1.0, bands=3, q=0.2, rounds=8, coefs=BAND3):
    return BandMF(1.0, z, CyclicPoisson(1000, bands, q), rounds, coefs)


def _blt(z=1.0, bands=3, rounds=8):
    return BLT(1.0, z, CyclicPoisson(30, bands, 1.0), rounds, *BLT_C)


# ----------------------------------------------------------------- sensitivity


@pytest.mark.parametrize("min_sep,k", [(1, 1), (3, 3), (2, 2), (5, 2)])
def test_blt_minsep_sensitivity_matches_brute_force(min_sep, k):
    n = 8
    c = cn.strategy_matrix("blt", {"buf_decay": BLT_C[0], "output_scale": BLT_C[1]}, n)
    brute = cn.bruteforce_sensitivity_squared(c, cn.minsep_patterns(n, min_sep, k))
    assert cn.blt_sensitivity_squared(*BLT_C, n, min_sep, k) == pytest.approx(brute, rel=1e-9)


def test_blt_mechanism_sensitivity_is_its_cyclic_pattern_worst_case():
    m = _blt(bands=3, rounds=8)  # deterministic 3-cyclic: user of band j joins j, j+3, j+6
    c = cn.strategy_matrix("blt", m._matrix_params(), 8)
    brute = cn.bruteforce_sensitivity_squared(c, cn.cyclic_patterns(8, 3))
    assert m.sensitivity**2 == pytest.approx(brute, rel=1e-9)
    assert m.sensitivity**2 > c[:, 0] @ c[:, 0]  # several participations cost more than one


def test_bandmf_cyclic_participations_touch_disjoint_rows():
    # b-banded, column-normalised C under b-cyclic participation: each
    # participation adds exactly 1 to ‖Cu‖², so ε composes ceil(n/b) unit-norm
    # Gaussian mechanisms (amplified_bandmf_event). More bands than b breaks it.
    n, b = 8, 3
    c = cn.strategy_matrix("bandmf", {"coefs": BAND3}, n)
    np.testing.assert_allclose(np.linalg.norm(c, axis=0), 1.0)
    assert cn.bruteforce_sensitivity_squared(c, cn.cyclic_patterns(n, b)) == pytest.approx(math.ceil(n / b))
    assert cn.bruteforce_sensitivity_squared(c, cn.cyclic_patterns(n, 2)) > math.ceil(n / 2) + 0.1


# ----------------------------------------------------------------- noise statistics


def _noise_rounds(mech, rounds, dim, key):
    params = {"w": jnp.zeros((dim,), jnp.float32)}
    state = mech.init(params)
    step = jax.jit(mech.privatize)
    out = []
    for t in range(rounds):
        noised, state = step(params, None, state, jax.random.fold_in(key, t))
        out.append(np.asarray(noised["w"], np.float64))
    return np.stack(out)  # [T, dim]: each column an independent draw of the T-round noise


@pytest.mark.parametrize("mech", [_bandmf(z=0.7), _blt(z=0.5)], ids=["bandmf", "blt"])
def test_noise_has_covariance_sigma2_Cinv_CinvT_and_mean_zero(mech):
    rounds, dim = 8, 40_000
    noise = _noise_rounds(mech, rounds, dim, jax.random.key(0))
    cinv = np.linalg.inv(cn.strategy_matrix(mech.kind, mech._matrix_params(), rounds))
    want = mech.noise_std**2 * cinv @ cinv.T
    got = noise @ noise.T / dim
    # each entry's standard error is about sigma^2 * sqrt(2 / dim) = 0.7% of sigma^2
    np.testing.assert_allclose(got, want, atol=0.04 * mech.noise_std**2)
    assert np.abs(noise.mean(axis=1)).max() < 5 * mech.noise_std * np.sqrt(np.diag(cinv @ cinv.T)).max() / np.sqrt(dim)
    # ... and the noise accumulated in the model (prefix sums) has the profile the benchmark reports
    prefix = np.cumsum(noise, axis=0).var(axis=1) / mech.noise_std**2
    np.testing.assert_allclose(
        prefix, cn.noise_error_profile(mech.kind, mech._matrix_params(), rounds)["prefix"], rtol=0.05
    )
    assert prefix[-1] < rounds  # correlated noise cancels: less than iid noise's t


def test_one_band_bandmf_is_dp_fedavg():
    m = BandMF(0.5, 1.3, CyclicPoisson(1000, 1, 0.05), 5, (1.0,))
    x = {"a": jax.random.normal(jax.random.key(1), (4, 3)), "b": jnp.arange(5.0)}
    state = m.init(x)
    for t in range(5):
        key = jax.random.key(t)
        got, state = jax.jit(m.privatize)(x, None, state, key)
        want = add_gaussian_noise(x, 1.3 * 0.5, key)
        # same draw; only float rounding of the fused x + σn differs
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6), got, want
        )
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.3)), 5
    )
    assert m.epsilon(1e-6) == pytest.approx(pld.compose(event).get_epsilon(1e-6))


# ----------------------------------------------------------------- resume


@pytest.mark.parametrize("mech", [_bandmf(), _blt()], ids=["bandmf", "blt"])
def test_resume_through_checkpoint_is_exact(mech, tmp_path):
    params = {"emb": jnp.zeros((6, 4)), "out": {"b": jnp.zeros(3)}}
    x = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
    key = jax.random.key(7)
    step = jax.jit(mech.privatize)

    def run(state, t0, t1):
        outs = []
        for t in range(t0, t1):
            y, state = step(x, None, state, jax.random.fold_in(key, t))
            outs.append(y)
        return outs, state

    full, _ = run(mech.init(params), 0, 8)
    first, state = run(mech.init(params), 0, 3)
    checkpoint.save(tmp_path, 3, state, {"mechanism": mech.to_dict()})
    loaded, meta = checkpoint.load(tmp_path, 3, mech.init(params))
    resumed_mech = mechanism_from_dict(meta["mechanism"])
    rest, _ = run(loaded, 3, 8)
    assert resumed_mech == mech
    for a, b in zip(full, first + rest, strict=True):
        jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


# ----------------------------------------------------------------- refusals


class _PoissonParticipation:
    scheme = "poisson"
    sampling_prob = 0.01


def test_refuses_sampling_its_accountant_does_not_assume():
    with pytest.raises(ValueError, match="participation 'poisson' does not match its accountant"):
        BandMF(1.0, 1.0, _PoissonParticipation(), 8, BAND3)
    with pytest.raises(ValueError, match="does not match its accountant"):
        BLT(1.0, 1.0, _PoissonParticipation(), 8, *BLT_C)
    with pytest.raises(ValueError, match="C has 3 bands but participation has num_bands=2"):
        _bandmf(bands=2)
    with pytest.raises(ValueError, match="without amplification by sampling"):
        BLT(1.0, 1.0, CyclicPoisson(30, 3, 0.5), 8, *BLT_C)
    with pytest.raises(ValueError, match="L2 norm 1"):
        _bandmf(coefs=(0.5, 0.5))
    with pytest.raises(ValueError, match="rounds=9 outside"):
        _bandmf().dp_event(9)
    with pytest.raises(ValueError, match="not valid for min-sep"):
        BLT(1.0, 1.0, CyclicPoisson(30, 3, 1.0), 8, (0.9,), (-0.5,))


# ----------------------------------------------------------------- ε from the record alone


def _epsilon_from_record(d: dict, delta: float) -> float:
    """Independent recomputation with dp-accounting from the JSON fields only."""
    p = d["participation"]
    if d["name"] == "dp-ftrl-bandmf":
        comps = math.ceil(d["rounds"] / p["num_bands"])
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                p["sampling_prob"], dp_accounting.GaussianDpEvent(d["noise_multiplier"])
            ),
            comps,
        )
    else:
        assert d["noise_std"] == pytest.approx(d["noise_multiplier"] * d["clip_norm"] * d["sensitivity"])
        event = dp_accounting.GaussianDpEvent(d["noise_multiplier"])
    return dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3).compose(event).get_epsilon(delta)


@pytest.mark.parametrize("mech", [_bandmf(z=0.9), _blt(z=3.0)], ids=["bandmf", "blt"])
def test_epsilon_reproducible_from_recorded_parameters(mech):
    record = json.loads(json.dumps(mech.to_dict()))
    again = mechanism_from_dict(record)
    assert again == mech
    assert again.epsilon(1e-6) == mech.epsilon(1e-6)
    assert mech.epsilon(1e-6) == pytest.approx(_epsilon_from_record(record, 1e-6), rel=1e-9)


def test_blt_partial_run_epsilon_grows_with_rounds():
    m = _blt(z=2.0)
    eps = [m.epsilon(1e-6, rounds=r) for r in (1, 3, 4, 8)]
    # released rows grow each round (longer columns of C, then a second participation)
    assert eps[0] < eps[1] < eps[2] < eps[3]


@pytest.mark.parametrize("mech", [_bandmf(), _blt()], ids=["bandmf", "blt"])
def test_calibration_hits_target(mech):
    cal = calibrate_noise_multiplier(mech, 2.0, 1e-6)
    assert cal.epsilon(1e-6) <= 2.0 + 1e-9
    assert cal.with_noise_multiplier(cal.noise_multiplier * 0.995).epsilon(1e-6) > 2.0


def test_optimised_banded_strategy_beats_independent_noise():
    coefs = cn.optimize_bandmf_coefs(16, 4, max_optimizer_steps=50)
    assert len(coefs) == 4 and sum(c * c for c in coefs) == pytest.approx(1.0)
    prefix = cn.noise_error_profile("bandmf", {"coefs": coefs}, 16)["prefix"]
    assert cn.effective_iid_std(prefix) < 0.9  # iid noise (DP-FedAvg) is exactly 1


# ----------------------------------------------------------------- the mechanism registry and the training config


def test_registered_and_consistent_with_the_mechanism_abstraction():
    from keyboard_fl.privacy import (
        MECHANISMS,
        Participation,
        make_mechanism,
        mechanism_epsilon,
    )
    from keyboard_fl.privacy import mechanism_from_dict as any_from_dict

    assert {"dp-ftrl-bandmf", "dp-ftrl-blt"} <= set(MECHANISMS)
    m = make_mechanism(
        "dp-ftrl-bandmf",
        clip_norm=1.0,
        noise_multiplier=0.9,
        participation=Participation("cyclic", 0.2, 1000, min_separation=3),
        rounds=8,
        coefs=BAND3,
    )
    assert m == _bandmf(z=0.9)
    assert any_from_dict(m.to_dict()) == m
    assert mechanism_epsilon(m, 8, 1e-6) == pytest.approx(m.epsilon(1e-6), rel=1e-9)
    with pytest.raises(ValueError, match="participation 'poisson' does not match its accountant"):
        make_mechanism(
            "dp-ftrl-blt",
            clip_norm=1.0,
            noise_multiplier=1.0,
            participation=Participation("poisson", 0.01, 1000),
            rounds=8,
        )


def test_training_config_with_mismatched_sampling_is_refused():
    from keyboard_fl.config import FederatedConfig
    from keyboard_fl.train.federated import resolve_dp

    cfg = FederatedConfig(mechanism="dp-ftrl-bandmf", sampling="poisson", clients_per_round=10, rounds=8)
    with pytest.raises(ValueError, match="mechanism='dp-ftrl-bandmf'.*does not match its accountant"):
        resolve_dp(cfg, 300, private=True)
    cfg = FederatedConfig(mechanism="dp-ftrl-blt", sampling="cyclic", clients_per_round=10, rounds=8)
    with pytest.raises(ValueError, match="sampling='cyclic'"):  # the loop has no cyclic sampler (yet)
        resolve_dp(cfg, 300, private=True)
