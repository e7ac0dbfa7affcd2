"""Tests for keyboard_fl.fl.round: FedAvg / DP-FedAvg aggregation in one jitted round."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from keyboard_fl.fl.client import client_update
from keyboard_fl.fl.round import (
    AggregatorConfig,
    CohortBatch,
    build_round,
    make_server_optimizer,
    server_init,
)
from keyboard_fl.fl.toy import toy_cohort, toy_init, toy_loss

SGD1 = make_server_optimizer("sgd", 1.0)  # server lr 1: new params = params + mean delta
FEDAVG = AggregatorConfig(mode="fedavg")


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _diff(a, b):
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64), a, b)


def _one_round(round_fn, params, cohort, key=0, server_opt=SGD1):
    state, metrics = round_fn(server_init(params, server_opt), cohort, jax.random.key(key))
    return state, metrics


def _take(cohort, idx):
    return CohortBatch(*(jnp.asarray(np.asarray(x)[idx]) for x in cohort))


def _client_deltas(params, cohort, lr):
    fn = jax.jit(functools.partial(client_update, loss_fn=toy_loss, client_opt=lr))
    out = []
    for k in range(cohort.mask.shape[0]):
        b = {"inputs": cohort.inputs[k], "targets": cohort.targets[k], "weights": cohort.weights[k]}
        out.append(fn(params, b, jax.random.key(k)))
    return out


def test_fedavg_equals_hand_computed_weighted_mean():
    params = toy_init(jax.random.key(0))
    cohort = toy_cohort(1, 8, num_real=6)
    state, m = _one_round(build_round(toy_loss, 0.5, SGD1, FEDAVG), params, cohort)
    outs = _client_deltas(params, cohort, 0.5)[:6]
    w = np.array([float(cm.num_tokens) for _, cm in outs])
    assert len(set(w)) > 1  # ragged: weighted and unweighted means differ
    expected = sum(wk * _flat(d) for wk, (d, _) in zip(w, outs)) / w.sum()
    np.testing.assert_allclose(_flat(_diff(state.params, params)), expected, rtol=1e-4, atol=1e-6)
    norms = np.array([np.linalg.norm(_flat(d)) for d, _ in outs])
    assert int(m.cohort_size) == 6 and int(m.included_clients) == 6 and int(m.nonfinite_clients) == 0
    assert np.isclose(float(m.num_tokens), w.sum())
    np.testing.assert_allclose(
        [float(m.update_norm_mean), float(m.update_norm_median), float(m.update_norm_max)],
        [norms.mean(), np.median(norms), norms.max()], rtol=1e-4)
    losses = np.array([float(cm.train_loss) for _, cm in outs])
    assert np.isclose(float(m.mean_client_loss), losses.mean(), rtol=1e-5)
    assert np.isclose(float(m.train_loss), (losses * w).sum() / w.sum(), rtol=1e-5)
    assert float(m.noise_std) == 0.0 and float(m.clipped_fraction) == 0.0
    assert int(state.round) == 1


@pytest.mark.parametrize("mode", ["fedavg", "dp-fedavg"])
def test_masked_clients_contribute_nothing(mode):
    agg = AggregatorConfig(mode=mode, clip_norm=0.3, noise_multiplier=0.0, expected_cohort=4.0)
    params = toy_init(jax.random.key(0))
    real = toy_cohort(2, 8, num_real=8)
    # Padded slots carry real-looking data with nonzero weights; only the mask drops them.
    padded = real._replace(mask=jnp.asarray(np.arange(8) < 5))
    fn = build_round(toy_loss, 0.5, SGD1, agg)
    s_pad, m_pad = _one_round(fn, params, padded)
    s_ref, m_ref = _one_round(build_round(toy_loss, 0.5, SGD1, agg), params, _take(padded, slice(0, 5)))
    np.testing.assert_allclose(_flat(s_pad.params), _flat(s_ref.params), rtol=1e-5, atol=1e-7)
    assert int(m_pad.cohort_size) == 5 and int(m_pad.included_clients) == 5


@pytest.mark.parametrize("mode", ["fedavg", "dp-fedavg"])
def test_nonfinite_client_is_excluded_and_counted(mode):
    agg = AggregatorConfig(mode=mode, clip_norm=0.3, noise_multiplier=0.0, expected_cohort=4.0)
    params = toy_init(jax.random.key(0))
    cohort = toy_cohort(3, 8, num_real=6)
    # An out-of-range token makes jnp.take return NaN embeddings -> NaN gradients.
    bad = cohort._replace(inputs=cohort.inputs.at[2, 0, 0, 0].set(10**6))
    d, _ = _client_deltas(params, _take(bad, [2]), 0.5)[0]
    assert not np.all(np.isfinite(_flat(d)))
    fn = build_round(toy_loss, 0.5, SGD1, agg)
    s_bad, m_bad = _one_round(fn, params, bad)
    dropped = bad._replace(mask=bad.mask.at[2].set(False))
    s_ref, m_ref = _one_round(fn, params, dropped)
    assert np.all(np.isfinite(_flat(s_bad.params)))
    np.testing.assert_allclose(_flat(s_bad.params), _flat(s_ref.params), rtol=1e-5, atol=1e-7)
    assert int(m_bad.nonfinite_clients) == 1 and int(m_bad.cohort_size) == 6 and int(m_bad.included_clients) == 5
    assert np.isfinite(float(m_bad.update_norm_max)) and np.isfinite(float(m_bad.mean_client_loss))


def _big_user_cohort(seed, capacity, num_real, steps):
    """Client 0 has `steps` full steps of data (100x the others, who have 1 step)."""
    c = toy_cohort(seed, capacity, num_real=num_real, steps=steps, ragged=False)
    w = np.asarray(c.weights).copy()
    w[1:, 1:] = 0.0  # everybody else trains one step
    w[~np.asarray(c.mask)] = 0.0
    return c._replace(weights=jnp.asarray(w))


@pytest.mark.parametrize("client_lr", [0.5, 10.0])
def test_dp_sensitivity_bounded_by_c_over_qn(client_lr):
    """One user's effect on the pre-noise aggregate is at most C/(qN), whatever their data."""
    clip, qn = 0.2, 10.0  # expected cohort 10 while 7 are realized: denominator stays qN
    agg = AggregatorConfig(mode="dp-fedavg", clip_norm=clip, noise_multiplier=0.0, expected_cohort=qn)
    params = toy_init(jax.random.key(0))
    cohort = _big_user_cohort(4, 8, num_real=7, steps=100)
    without = cohort._replace(mask=cohort.mask.at[0].set(False))
    fn = build_round(toy_loss, client_lr, SGD1, agg)
    s_with, m_with = _one_round(fn, params, cohort)
    s_without, _ = _one_round(fn, params, without)
    big_delta, big_m = _client_deltas(params, _take(cohort, [0]), client_lr)[0]
    assert float(big_m.num_tokens) >= 100 * 32  # 100x more data than the others
    assert np.linalg.norm(_flat(big_delta)) > 5 * clip  # the update really is large
    diff = np.linalg.norm(_flat(s_with.params) - _flat(s_without.params))
    assert diff <= clip / qn * (1 + 1e-4) + 1e-6
    assert diff >= 0.5 * clip / qn  # and it is actually clipped to ~C, not dropped
    assert float(m_with.clipped_fraction) > 0
    # Non-private FedAvg has no such bound: the big user dominates the weighted mean.
    f_fn = build_round(toy_loss, client_lr, SGD1, FEDAVG)
    f_diff = np.linalg.norm(_flat(_one_round(f_fn, params, cohort)[0].params) - _flat(_one_round(f_fn, params, without)[0].params))
    assert f_diff > clip / qn


def test_dp_noise_std_is_zc_over_qn():
    z, clip, qn = 1.3, 0.7, 20.0
    agg = AggregatorConfig(mode="dp-fedavg", clip_norm=clip, noise_multiplier=z, expected_cohort=qn)
    params = toy_init(jax.random.key(0), vocab_size=64, dim=48)  # ~6.2k coordinates
    cohort = toy_cohort(5, 8, vocab_size=64)
    cohort = cohort._replace(weights=jnp.zeros_like(cohort.weights))  # all deltas are zero
    fn = build_round(toy_loss, 0.5, SGD1, agg, donate=False)
    st0 = server_init(params, SGD1)
    s1, m = fn(st0, cohort, jax.random.key(42))
    x = _flat(_diff(s1.params, params))
    target = z * clip / qn
    assert np.isclose(float(m.noise_std), z * clip) and np.isclose(float(m.noise_std_average), target)
    assert abs(x.std() / target - 1) < 0.04
    assert stats.kstest(x / target, "norm").pvalue > 1e-3
    # chi-square on the sum of squares: (n-1)s^2/sigma^2 ~ chi2(n)
    chi = np.sum(x**2) / target**2
    assert stats.chi2(x.size).sf(chi) > 1e-3 and stats.chi2(x.size).cdf(chi) > 1e-3
    # Same key, same noise; another key, different noise.
    s2, _ = fn(st0, cohort, jax.random.key(42))
    s3, _ = fn(st0, cohort, jax.random.key(43))
    np.testing.assert_array_equal(_flat(s1.params), _flat(s2.params))
    assert not np.allclose(_flat(s1.params), _flat(s3.params))


def test_fedavg_rounds_lower_loss_and_are_deterministic():
    params = toy_init(jax.random.key(0))
    server = make_server_optimizer("nesterov", 1.0)
    fn = build_round(toy_loss, 0.5, server, FEDAVG)
    held_out = toy_cohort(999, 1, steps=4, ragged=False)
    batch = {"inputs": held_out.inputs, "targets": held_out.targets, "weights": held_out.weights}

    def run():
        state = server_init(params, server)
        for r in range(15):
            state, m = fn(state, toy_cohort(r, 16, num_real=12), jax.random.fold_in(jax.random.key(1), r))
        return state, m

    s_a, m_a = run()
    s_b, m_b = run()
    before = float(toy_loss(params, batch)[0])
    after = float(toy_loss(s_a.params, batch)[0])
    assert after < before - 1.0, (before, after)
    np.testing.assert_array_equal(_flat(s_a.params), _flat(s_b.params))
    np.testing.assert_array_equal(np.array(m_a), np.array(m_b))
    assert int(s_a.round) == 15


def test_dp_round_deterministic_and_learns_with_small_noise():
    agg = AggregatorConfig(mode="dp-fedavg", clip_norm=1.0, noise_multiplier=0.1, expected_cohort=16.0)
    params = toy_init(jax.random.key(0))
    fn = build_round(toy_loss, 0.5, SGD1, agg)

    def run():
        state = server_init(params, SGD1)
        for r in range(10):
            state, m = fn(state, toy_cohort(r, 16), jax.random.fold_in(jax.random.key(2), r))
        return state, m

    (s_a, m_a), (s_b, _) = run(), run()
    np.testing.assert_array_equal(_flat(s_a.params), _flat(s_b.params))
    c = toy_cohort(500, 1, steps=4, ragged=False)
    b = {"inputs": c.inputs, "targets": c.targets, "weights": c.weights}
    assert float(toy_loss(s_a.params, b)[0]) < float(toy_loss(params, b)[0]) - 0.3


def test_server_optimizers():
    params = toy_init(jax.random.key(0))
    cohort = toy_cohort(7, 8)
    for name in ["sgd", "nesterov", "adam"]:
        opt = make_server_optimizer(name, 0.1 if name == "adam" else 1.0)
        state, _ = _one_round(build_round(toy_loss, 0.5, opt, FEDAVG), params, cohort, server_opt=opt)
        assert np.all(np.isfinite(_flat(state.params)))
        assert not np.allclose(_flat(state.params), _flat(params))
    # Server SGD(lr) scales the averaged delta: lr=0.5 moves half as far as lr=1.
    half = make_server_optimizer("sgd", 0.5)
    s_half, _ = _one_round(build_round(toy_loss, 0.5, half, FEDAVG), params, cohort, server_opt=half)
    s_one, _ = _one_round(build_round(toy_loss, 0.5, SGD1, FEDAVG), params, cohort)
    np.testing.assert_allclose(_flat(_diff(s_half.params, params)) * 2, _flat(_diff(s_one.params, params)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        make_server_optimizer("yogi", 1.0)


def test_config_validation():
    with pytest.raises(ValueError):
        AggregatorConfig(mode="dp-fedavg", clip_norm=0.0, noise_multiplier=1.0, expected_cohort=10.0)
    with pytest.raises(ValueError):
        AggregatorConfig(mode="dp-fedavg", clip_norm=1.0, noise_multiplier=1.0, expected_cohort=0.0)
    with pytest.raises(ValueError):
        AggregatorConfig(mode="fedsgd")
