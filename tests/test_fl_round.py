"""Tests for keyboard_fl.fl.round: FedAvg / DP-FedAvg aggregation in one jitted round.

Compiled rounds are cached and shared between tests (all cohorts have the same
shape), so the suite compiles only a handful of rounds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from keyboard_fl.fl.client import client_update
from keyboard_fl.fl.round import AggregatorConfig, build_round, make_server_optimizer, server_init
from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

K, S, B, T = 8, 4, 4, 8  # every test cohort: 8 slots, 4 local steps of 4 x 8 tokens
FEDAVG = AggregatorConfig(mode="fedavg")
# Shared DP config. Comparisons between two runs use the same key, so the
# (identical) noise cancels and the difference is exact.
C, Z, QN = 0.3, 1.3, 4.0
DP = AggregatorConfig(mode="dp-fedavg", clip_norm=C, noise_multiplier=Z, expected_cohort=QN)
SERVERS = {
    "sgd": make_server_optimizer("sgd", 1.0),  # server lr 1: new params = params + mean delta
    "nesterov": make_server_optimizer("nesterov", 1.0),
    "adam": make_server_optimizer("adam", 0.1),
}


@functools.cache
def _round(agg=FEDAVG, client_lr=0.5, server="sgd"):
    # Donating is safe here: every run starts from server_init, which copies params.
    return build_round(toy_loss, client_lr, SERVERS[server], agg).apply


def _cohort(seed, num_real=K, **kw):
    return toy_cohort(seed, K, num_real=num_real, steps=S, batch=B, seq_len=T, **kw)


def _run(fn, params, cohort, key=0, server="sgd"):
    return fn(server_init(params, SERVERS[server]), cohort, jax.random.key(key))


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _moved(state, params):
    return _flat(state.params) - _flat(params)


def _eval_loss(params):
    c = toy_cohort(999, 1, steps=4, ragged=False)
    return float(toy_loss(params, {"inputs": c.inputs, "targets": c.targets, "weights": c.weights})[0])


def test_fedavg_equals_hand_computed_weighted_mean():
    params = toy_init(jax.random.key(0))
    cohort = _cohort(1, num_real=6)
    state, m = _run(_round(), params, cohort)
    fn = jax.jit(functools.partial(client_update, loss_fn=toy_loss, client_opt=0.5))
    outs = [
        fn(
            params,
            {"inputs": cohort.inputs[k], "targets": cohort.targets[k], "weights": cohort.weights[k]},
            jax.random.key(k),
        )
        for k in range(6)
    ]
    w = np.array([float(cm.num_tokens) for _, cm in outs])
    assert len(set(w)) > 1  # ragged data: weighted and unweighted means differ
    expected = sum(wk * _flat(d) for wk, (d, _) in zip(w, outs)) / w.sum()
    np.testing.assert_allclose(_moved(state, params), expected, rtol=1e-4, atol=1e-6)
    unweighted = sum(_flat(d) for d, _ in outs) / 6
    assert not np.allclose(expected, unweighted, rtol=1e-3)
    norms = np.array([np.linalg.norm(_flat(d)) for d, _ in outs])
    losses = np.array([float(cm.train_loss) for _, cm in outs])
    assert (int(m.cohort_size), int(m.included_clients), int(m.nonfinite_clients)) == (6, 6, 0)
    assert np.isclose(float(m.num_tokens), w.sum())
    np.testing.assert_allclose(
        [m.update_norm_mean, m.update_norm_median, m.update_norm_max],
        [norms.mean(), np.median(norms), norms.max()],
        rtol=1e-4,
    )
    assert np.isclose(float(m.mean_client_loss), losses.mean(), rtol=1e-5)
    assert np.isclose(float(m.train_loss), (losses * w).sum() / w.sum(), rtol=1e-5)
    assert float(m.noise_std) == 0.0 and float(m.clipped_fraction) == 0.0 and int(state.round) == 1


@pytest.mark.parametrize("agg", [FEDAVG, DP], ids=["fedavg", "dp-fedavg"])
def test_masked_clients_contribute_nothing(agg):
    params = toy_init(jax.random.key(0))
    # Slots 5..7 carry real-looking data with nonzero weights; only the mask drops them.
    padded = _cohort(2)._replace(mask=jnp.asarray(np.arange(K) < 5))
    # Reference: the same 5 clients, the other slots empty (no tokens, so no delta).
    empty = padded._replace(weights=padded.weights.at[5:].set(0.0))
    s_pad, m_pad = _run(_round(agg), params, padded)
    s_ref, m_ref = _run(_round(agg), params, empty)
    np.testing.assert_allclose(_flat(s_pad.params), _flat(s_ref.params), rtol=1e-6, atol=1e-7)
    assert int(m_pad.cohort_size) == 5 and int(m_pad.included_clients) == 5
    assert np.isclose(float(m_pad.num_tokens), float(m_ref.num_tokens))


@pytest.mark.parametrize("agg", [FEDAVG, DP], ids=["fedavg", "dp-fedavg"])
def test_nonfinite_client_is_excluded_and_counted(agg):
    params = toy_init(jax.random.key(0))
    cohort = _cohort(3, num_real=6)
    # An out-of-range token makes jnp.take return NaN embeddings -> NaN delta.
    bad = cohort._replace(inputs=cohort.inputs.at[2, 0, 0, 0].set(10**6))
    s_bad, m_bad = _run(_round(agg), params, bad)
    s_ref, m_ref = _run(_round(agg), params, bad._replace(mask=bad.mask.at[2].set(False)))
    assert np.all(np.isfinite(_flat(s_bad.params)))
    np.testing.assert_allclose(_flat(s_bad.params), _flat(s_ref.params), rtol=1e-6, atol=1e-7)
    assert (int(m_bad.cohort_size), int(m_bad.included_clients), int(m_bad.nonfinite_clients)) == (6, 5, 1)
    assert int(m_ref.nonfinite_clients) == 0
    for v in m_bad:
        assert np.isfinite(float(v))


def test_dp_sensitivity_bounded_by_c_over_qn():
    """One user's effect on the pre-noise aggregate is at most C/(qN), whatever their data."""
    params = toy_init(jax.random.key(0))
    cohort = _cohort(4, num_real=7, ragged=False)
    w = np.asarray(cohort.weights).copy()
    w[1:] = 0.0
    w[1:, 0, 0, 0] = 1.0  # every other user typed one token; user 0 typed S*B*T = 128x more
    w[~np.asarray(cohort.mask)] = 0.0
    cohort = cohort._replace(weights=jnp.asarray(w))
    without = cohort._replace(mask=cohort.mask.at[0].set(False))
    for client_lr in [0.5, 10.0]:  # a normal and a huge client learning rate
        fn = _round(DP, client_lr)
        s_with, m_with = _run(fn, params, cohort)
        s_without, _ = _run(fn, params, without)
        assert float(m_with.update_norm_max) > 2 * C  # user 0's update really is large
        diff = np.linalg.norm(_moved(s_with, params) - _moved(s_without, params))
        assert diff <= C / QN * (1 + 1e-4)
        # Clipped onto the sphere and divided by the fixed qN = 4, not the realized 7.
        assert np.isclose(diff, C / QN, rtol=1e-3)
    # Non-private FedAvg has no such bound: the big user dominates the weighted mean.
    f_with = _moved(_run(_round(FEDAVG), params, cohort)[0], params)
    f_without = _moved(_run(_round(FEDAVG), params, without)[0], params)
    assert np.linalg.norm(f_with - f_without) > C / QN


def test_dp_noise_std_is_zc_over_qn():
    params = toy_init(jax.random.key(0))
    zero = _cohort(5)
    zero = zero._replace(weights=jnp.zeros_like(zero.weights))  # every delta is zero
    fn = _round(DP)
    runs = [_run(fn, params, zero, key=k) for k in range(6)]
    x = np.concatenate([_moved(s, params) for s, _ in runs])  # ~6.3k coordinates
    target = Z * C / QN
    m = runs[0][1]
    assert np.isclose(float(m.noise_std), Z * C) and np.isclose(float(m.noise_std_average), target)
    assert abs(x.mean()) < 4 * target / np.sqrt(x.size)
    assert abs(x.std() / target - 1) < 0.04
    assert stats.kstest(x / target, "norm").pvalue > 1e-3
    chi = np.sum(x**2) / target**2  # ~ chi2(n)
    assert min(stats.chi2(x.size).sf(chi), stats.chi2(x.size).cdf(chi)) > 5e-4
    # Same key, same noise; different keys, independent noise.
    again, _ = _run(fn, params, zero, key=0)
    np.testing.assert_array_equal(_flat(again.params), _flat(runs[0][0].params))
    a, b = _moved(runs[0][0], params), _moved(runs[1][0], params)
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(a.size)


def _train(fn, params, server, rounds, key):
    state = server_init(params, SERVERS[server])
    for r in range(rounds):
        state, m = fn(state, _cohort(r, num_real=6 + r % 3), jax.random.fold_in(jax.random.key(key), r))
    return state, m


def test_fedavg_rounds_lower_loss_and_are_deterministic():
    params = toy_init(jax.random.key(0))
    fn = _round(FEDAVG, 0.5, "nesterov")  # Gboard's server optimizer
    (s_a, m_a), (s_b, m_b) = _train(fn, params, "nesterov", 12, 1), _train(fn, params, "nesterov", 12, 1)
    assert _eval_loss(s_a.params) < _eval_loss(params) - 1.0
    np.testing.assert_array_equal(_flat(s_a.params), _flat(s_b.params))
    np.testing.assert_array_equal(np.array(m_a), np.array(m_b))
    assert int(s_a.round) == 12


def test_dp_rounds_learn_with_small_noise_and_are_deterministic():
    agg = AggregatorConfig(mode="dp-fedavg", clip_norm=1.0, noise_multiplier=0.05, expected_cohort=8.0)
    params = toy_init(jax.random.key(0))
    fn = _round(agg)
    (s_a, m_a), (s_b, _) = _train(fn, params, "sgd", 12, 2), _train(fn, params, "sgd", 12, 2)
    np.testing.assert_array_equal(_flat(s_a.params), _flat(s_b.params))
    assert _eval_loss(s_a.params) < _eval_loss(params) - 0.5
    assert 0.0 <= float(m_a.clipped_fraction) <= 1.0 and int(m_a.cohort_size) == 6 + 11 % 3


def test_server_optimizers():
    params = toy_init(jax.random.key(0))
    cohort = _cohort(7)
    moved = {}
    for name in SERVERS:
        state, _ = _run(_round(FEDAVG, 0.5, name), params, cohort, server=name)
        moved[name] = _moved(state, params)
        assert np.all(np.isfinite(moved[name])) and np.linalg.norm(moved[name]) > 0
    # Nesterov's first step from zero momentum is (1 + 0.9) x the plain FedAvg step.
    np.testing.assert_allclose(moved["nesterov"], 1.9 * moved["sgd"], rtol=1e-4, atol=1e-7)
    # Adam's first step is ~lr * sign(delta) wherever |delta| >> eps.
    big = np.abs(moved["sgd"]) > 0.05
    np.testing.assert_allclose(moved["adam"][big], 0.1 * np.sign(moved["sgd"][big]), rtol=0.05)
    with pytest.raises(ValueError):
        make_server_optimizer("yogi", 1.0)


def test_donated_state_leaves_caller_params_valid():
    params = toy_init(jax.random.key(0))
    state = server_init(params, SERVERS["sgd"])  # copies params: ours stay valid
    for r in range(2):
        state, _ = _round()(state, _cohort(8), jax.random.key(r))  # donates `state`
    assert np.all(np.isfinite(_flat(params))) and int(state.round) == 2


def test_client_chunks_match_one_vmap():
    agg = DP
    params = toy_init(jax.random.key(0))
    cohort = _cohort(9, num_real=7)
    cohort = cohort._replace(inputs=cohort.inputs.at[1, 0, 0, 0].set(10**6))  # one NaN client
    ref, m_ref = _run(_round(agg), params, cohort, key=4)
    chunked = build_round(toy_loss, 0.5, SERVERS["sgd"], agg, client_chunk=2).apply
    got, m = _run(chunked, params, cohort, key=4)
    np.testing.assert_allclose(_flat(got.params), _flat(ref.params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(m, np.float64), np.array(m_ref, np.float64), rtol=1e-5, atol=1e-6)
    assert int(m.nonfinite_clients) == 1
    with pytest.raises(ValueError):
        build_round(toy_loss, 0.5, SERVERS["sgd"], agg, client_chunk=3).apply(
            server_init(params, SERVERS["sgd"]), cohort, jax.random.key(0)
        )


def test_config_validation():
    with pytest.raises(ValueError):
        AggregatorConfig(mode="dp-fedavg", clip_norm=0.0, noise_multiplier=1.0, expected_cohort=10.0)
    with pytest.raises(ValueError):
        AggregatorConfig(mode="dp-fedavg", clip_norm=1.0, noise_multiplier=1.0, expected_cohort=0.0)
    with pytest.raises(ValueError):
        AggregatorConfig(mode="fedsgd")
    with pytest.raises(ValueError):  # noise silently ignored would be a privacy bug
        AggregatorConfig(mode="fedavg", noise_multiplier=1.0)
