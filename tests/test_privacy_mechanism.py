"""Tests for keyboard_fl.privacy.mechanism: noise statistics, adaptive clipping, ε, refusals, metrics.json."""

from __future__ import annotations

import dataclasses
import json
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from keyboard_fl.config import FederatedConfig, RunConfig, preset
from keyboard_fl.privacy import (
    AdaptiveClipping,
    ClipStats,
    DpFedAvg,
    Mechanism,
    Participation,
    PrivacyLedger,
    calibrate_mechanism,
    calibrate_noise_multiplier,
    epsilon,
    mechanism_epsilon,
    mechanism_from_dict,
)
from keyboard_fl.train.federated import resolve_dp

POISSON = Participation("poisson", 0.02, 5000)  # expected cohort 100


def _var_pvalue(x, sigma):
    """Two-sided χ² test of var(x) = sigma² for zero-mean x: (Σx²)/σ² ~ χ²(n)."""
    x = np.asarray(x, np.float64)
    t = np.sum(x**2) / sigma**2
    cdf = stats.chi2.cdf(t, len(x))
    return 2 * min(cdf, 1 - cdf)


def _dp(z=1.3, c=0.5, p=POISSON):
    return DpFedAvg(c, z, p)


def test_protocol_and_round_trip():
    for mech in (_dp(), AdaptiveClipping(_dp(z=0.8, c=0.1))):
        assert isinstance(mech, Mechanism)
        d = json.loads(json.dumps(mech.to_dict()))
        assert mechanism_from_dict(d) == mech
        assert mech.expected_cohort == pytest.approx(100.0)


def test_dp_fedavg_noise_statistics():
    mech = _dp(z=1.3, c=0.5)
    tree = {"a": jnp.zeros((200, 100)), "b": jnp.zeros((10_000,))}
    st = ClipStats(mech.clip_norm_of(()), jnp.zeros(4), jnp.zeros(4, bool))
    noised, state = jax.jit(mech.privatize)(tree, st, (), jax.random.key(3))
    x = np.concatenate([np.ravel(v) for v in jax.tree.leaves(noised)])
    assert state == ()
    # Shape (Kolmogorov–Smirnov) and scale (χ² on the variance): a std 5% off is rejected at this size.
    assert stats.kstest(x, "norm", args=(0.0, 1.3 * 0.5)).pvalue > 1e-3
    assert _var_pvalue(x, 1.3 * 0.5) > 1e-3
    assert _var_pvalue(x, 1.3 * 0.5 * 1.05) < 1e-6 and _var_pvalue(x, 1.3 * 0.5 * 0.95) < 1e-6
    assert abs(np.mean(x)) < 4 * 0.65 / np.sqrt(len(x))
    # Different keys: independent noise; same key: the same noise.
    again, _ = jax.jit(mech.privatize)(tree, st, (), jax.random.key(3))
    other, _ = jax.jit(mech.privatize)(tree, st, (), jax.random.key(4))
    assert np.array_equal(np.asarray(again["b"]), np.asarray(noised["b"]))
    assert abs(np.corrcoef(np.asarray(other["b"]), np.asarray(noised["b"]))[0, 1]) < 0.05


def test_adaptive_split_and_noise_statistics():
    assert AdaptiveClipping(_dp(z=0.8, c=0.1)).count_stddev == pytest.approx(5.0)  # TFF: 0.05 * expected cohort 100
    z, sigma_b = 0.8, 0.5  # a large share of the budget on the count, so the split is visible
    mech = AdaptiveClipping(_dp(z=z, c=0.1), count_stddev=sigma_b)
    assert mech.sum_noise_multiplier == pytest.approx(4 / 3)
    z_sum = mech.sum_noise_multiplier
    assert z_sum == pytest.approx((z**-2 - (2 * sigma_b) ** -2) ** -0.5)
    assert 1 / z**2 == pytest.approx(1 / z_sum**2 + 1 / (2 * sigma_b) ** 2)  # the composed Gaussian is z
    state = mech.init({"w": jnp.zeros(3)})
    n = 20_000
    st = ClipStats(mech.clip_norm_of(state), jnp.zeros(0), jnp.zeros(0, bool))
    noised, new = jax.jit(mech.privatize)({"w": jnp.zeros(n)}, st, state, jax.random.key(0))
    assert stats.kstest(np.asarray(noised["w"]), "norm", args=(0.0, z_sum * 0.1)).pvalue > 1e-3
    assert _var_pvalue(noised["w"], z_sum * 0.1) > 1e-3 and _var_pvalue(noised["w"], z * 0.1) < 1e-6
    # The count noise, recovered from the clip update over many keys (no one reported: b̄ = noise/m + ½).
    keys = jax.random.split(jax.random.key(1), 4000)
    cs = jax.jit(jax.vmap(lambda k: mech.privatize({"w": jnp.zeros(1)}, st, state, k)[1]["clip_norm"]))(keys)
    noise = (-np.log(np.asarray(cs, np.float64) / 0.1) / mech.learning_rate + mech.target_quantile - 0.5) * 100
    assert stats.kstest(noise, "norm", args=(0.0, sigma_b)).pvalue > 1e-3
    assert _var_pvalue(noise, sigma_b) > 1e-3 and _var_pvalue(noise, 1.1 * sigma_b) < 1e-6


@pytest.mark.parametrize("quantile", [0.5, 0.8])
def test_adaptive_clipping_tracks_its_quantile(quantile):
    """Log-normal norms (median 2.0): C starts at 0.1 and settles at the target quantile of the norms."""
    mech = AdaptiveClipping(_dp(z=0.5, c=0.1), target_quantile=quantile)
    mu, s = math.log(2.0), 0.5
    truth = math.exp(mu + s * stats.norm.ppf(quantile))

    def step(state, key):
        k_norms, k_sample, k_noise = jax.random.split(key, 3)
        norms = jnp.exp(mu + s * jax.random.normal(k_norms, (300,)))
        valid = jax.random.uniform(k_sample, (300,)) < 1 / 3  # Poisson cohort, expected 100
        st = ClipStats(mech.clip_norm_of(state), jnp.where(valid, norms, 0.0), valid)
        _, state = mech.privatize({"w": jnp.zeros(2)}, st, state, k_noise)
        return state, state["clip_norm"]

    _, cs = jax.jit(lambda k: jax.lax.scan(step, mech.init(None), jax.random.split(k, 400)))(jax.random.key(0))
    cs = np.asarray(cs)
    assert cs[0] < 0.2 * truth  # it really had to move
    assert np.mean(cs[-100:]) == pytest.approx(truth, rel=0.08)
    # Its empirical quantile: the fraction of norms below the settled C is the target.
    frac = stats.norm.cdf((math.log(np.mean(cs[-100:])) - mu) / s)
    assert frac == pytest.approx(quantile, abs=0.04)


def test_round_with_dp_fedavg_mechanism_is_bit_identical_to_the_classic_aggregator():
    """The mechanism path reproduces the pre-mechanism DP-FedAvg round bit for bit (same seed, same config)."""
    from keyboard_fl import testing as toy
    from keyboard_fl.fl.round import AggregatorConfig, build_round, make_server_optimizer, server_init

    params = toy.toy_init(jax.random.key(0))
    cohort = toy.toy_cohort(1, 8, num_real=6, steps=2, batch=4, seq_len=8)
    opt = make_server_optimizer("nesterov", 1.0)
    mech = DpFedAvg(0.3, 1.3, Participation("poisson", 0.47, 10))
    outs = []
    for agg in (AggregatorConfig("dp-fedavg", 0.3, 1.3, 0.47 * 10), mech):
        fn, st = build_round(toy.toy_loss, 0.5, opt, agg).apply, server_init(params, opt, agg)
        for r in range(3):
            st, m = fn(st, cohort, jax.random.key(r))
        outs.append((jax.tree.leaves(st.params), m))
    assert all(np.array_equal(a, b) for a, b in zip(outs[0][0], outs[1][0]))
    assert float(outs[1][1].noise_std) == np.float32(1.3 * 0.3) and float(outs[1][1].clip_norm) == np.float32(0.3)


def test_epsilon_from_dp_accounting_directly():
    mech = _dp(z=1.1)
    direct = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    direct.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.1)), 200
        )
    )
    assert mechanism_epsilon(mech, 200, 1e-6) == direct.get_epsilon(1e-6) == epsilon(1.1, 0.02, 200, 1e-6)
    assert mechanism_epsilon(AdaptiveClipping(mech), 200, 1e-6) == mechanism_epsilon(mech, 200, 1e-6)
    fixed = DpFedAvg(0.5, 1.1, Participation("fixed", 0.02, 5000))
    assert mechanism_epsilon(fixed, 200, 1e-6) == epsilon(
        1.1, 0.02, 200, 1e-6, accountant="rdp", sampling="fixed", population=5000
    )


def test_calibration_is_the_classic_one():
    got = calibrate_mechanism(_dp(z=9.0), 2.0, 300, 1e-6)
    assert got.noise_multiplier == calibrate_noise_multiplier(2.0, 0.02, 300, 1e-6)
    ad = calibrate_mechanism(AdaptiveClipping(_dp(z=0.0, c=0.1)), 2.0, 300, 1e-6)
    assert ad.noise_multiplier == got.noise_multiplier and ad.sum_noise_multiplier > ad.noise_multiplier


def test_ledger_for_mechanism_round_trips():
    led = PrivacyLedger.for_mechanism(AdaptiveClipping(_dp(z=0.9)), 1e-6).step(50)
    back = PrivacyLedger.from_dict(json.loads(json.dumps(led.to_dict())))
    assert back == led and back.epsilon() == epsilon(0.9, 0.02, 50, 1e-6)
    assert led.report()["mechanism"]["name"] == "adaptive-clipping"


# --- refusals ------------------------------------------------------------------


def test_refuses_mismatched_sampling_and_accountant():
    with pytest.raises(ValueError, match="accountant='pld' cannot account sampling='fixed'"):
        FederatedConfig(sampling="fixed", accountant="pld")
    with pytest.raises(ValueError, match=r"config\.federated: .*accountant"):
        RunConfig.from_dict({"federated": {"sampling": "fixed", "accountant": "pld"}})
    with pytest.raises(ValueError, match="federated.sampling='fixed': the training loop's sampler"):
        resolve_dp(FederatedConfig(sampling="fixed", accountant="rdp", rounds=5), 1000, private=True)
    with pytest.raises(ValueError, match="participation is accounted by a correlated-noise"):
        DpFedAvg(0.5, 1.0, Participation("cyclic", 0.1, 100, min_separation=10))
    with pytest.raises(ValueError, match="mechanism: unknown 'dp-sgd'"):
        resolve_dp(FederatedConfig(mechanism="dp-sgd", rounds=5), 1000, private=True)
    with pytest.raises(ValueError, match="z < 2·σ_b"):
        AdaptiveClipping(_dp(z=12.0))
    with pytest.raises(ValueError, match="adaptive_clip_quantile"):
        FederatedConfig(adaptive_clip_quantile=1.5)

    class Correlated(DpFedAvg):  # a mechanism that did not declare adaptive_compatible
        adaptive_compatible = False

    with pytest.raises(ValueError, match="adaptive clipping cannot wrap"):
        AdaptiveClipping(Correlated(0.5, 1.0, POISSON))


def test_resolve_dp_builds_adaptive_mechanism():
    cfg = FederatedConfig(
        rounds=20, clients_per_round=50, target_epsilon=3.0, adaptive_clip_quantile=0.5, clip_norm=0.1
    )
    dp = resolve_dp(cfg, 1000, private=True)
    assert isinstance(dp.mechanism, AdaptiveClipping) and dp.clip_norm == 0.1
    assert dp.mechanism.count_stddev == pytest.approx(0.05 * 50)
    assert dp.noise_multiplier == calibrate_noise_multiplier(3.0, 0.05, 20, dp.delta)
    assert dp.ledger().step(20).epsilon() <= 3.0


# --- ε from metrics.json alone, for each mechanism --------------------------------


def _epsilon_from_metrics(m: dict) -> float:
    """Rebuilds the event from metrics.json with dp-accounting only (no keyboard_fl code)."""
    mech = m["mechanism"]
    if mech["name"] == "adaptive-clipping":
        # Per round, (sum, count) is one Gaussian mechanism with the base's total multiplier z.
        zs, sb = mech["sum_noise_multiplier"], mech["count_stddev"]
        base = mech["base"]
        assert (zs**-2 + (2 * sb) ** -2) ** -0.5 == pytest.approx(base["noise_multiplier"], rel=1e-9)
        mech = base
    assert mech["name"] == "dp-fedavg" and mech["participation"]["scheme"] == "poisson"
    assert m["accountant"] == "pld"
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            mech["participation"]["sampling_prob"], dp_accounting.GaussianDpEvent(mech["noise_multiplier"])
        ),
        m["rounds"],
    )
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(event)
    return acc.get_epsilon(m["delta"])


@pytest.fixture(scope="module", params=["dp-fedavg", "dp-fedavg+adaptive"])
def private_run(request, tmp_path_factory):
    """A short tiny run of each mechanism (3 rounds), through the same code path as ``keyboard-fl train``."""
    from keyboard_fl.train.run import run

    cfg = preset("tiny", mode="dp-fedavg")
    fed = dataclasses.replace(cfg.federated, rounds=3, eval_every=3)
    if request.param.endswith("adaptive"):
        fed = dataclasses.replace(fed, adaptive_clip_quantile=0.5, clip_norm=0.1)
    out = tmp_path_factory.mktemp("mech") / request.param
    run(dataclasses.replace(cfg, federated=fed), out, log=lambda s: None)
    return request.param, out


def test_epsilon_reproduced_from_metrics_json(private_run):
    name, d = private_run
    m = json.loads((d / "metrics.json").read_text())
    assert m["epsilon"] == _epsilon_from_metrics(m) and m["rounds"] == 3
    assert m["mechanism"]["name"] == ("adaptive-clipping" if name.endswith("adaptive") else "dp-fedavg")
    clips = [json.loads(ln)["clip_norm"] for ln in (d / "metrics.jsonl").read_text().splitlines()]
    if name.endswith("adaptive"):
        assert clips and clips[-1] != 0.1  # C moved
    else:
        assert clips == [m["clip_norm"]] * len(clips)
