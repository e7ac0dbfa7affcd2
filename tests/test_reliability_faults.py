"""Client faults (dropouts, stragglers, NaN updates) through the federated loop: counted, deterministic, DP-honest."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keyboard_fl import rng
from keyboard_fl.config import FederatedConfig, RunConfig
from keyboard_fl.fl.faults import MEDIAN_DEVICE_SECONDS, apply_faults, device_seconds, fault_key
from keyboard_fl.models import ModelConfig, init_params, make_loss_fn
from keyboard_fl.privacy import epsilon
from keyboard_fl.privacy.clipping import add_gaussian_noise
from keyboard_fl.rng import Stream
from keyboard_fl.train.examples import UserRows
from keyboard_fl.train.federated import DpSetup, train_federated

V, T, USERS = 30, 8, 20
MODEL = ModelConfig(vocab_size=V, embed_dim=8, hidden_dim=16)
FED = FederatedConfig(
    rounds=4,
    clients_per_round=10,
    max_examples=4,
    batch_size=2,
    checkpoint_every=1,
    eval_every=1,
    client_lr=0.5,
    server_optimizer="sgd",
    server_lr=1.0,
    clip_norm=0.3,
)
DP = DpSetup.dp_fedavg(noise_multiplier=0.9, sampling_prob=0.5, delta=1e-3, population=USERS, clip_norm=0.3)
BAD_TOKEN = 3  # rows use tokens 4..V-1; the NaN loss below fires on this one


def _rows(bad_user=None):
    rng = np.random.default_rng(0)
    per = []
    for u in range(USERS):
        rows = rng.integers(4, V, size=(int(rng.integers(1, 5)), T + 1)).astype(np.int32)
        if u == bad_user:
            rows[:, 2] = BAD_TOKEN
        per.append(rows)
    return UserRows(per)


@pytest.fixture(scope="module")
def model(compiled_round):
    """A loss that is NaN (value and gradients) for any batch holding BAD_TOKEN, the plain loss otherwise."""
    graphdef, params = init_params(MODEL, jax.random.key(0))
    base_loss = make_loss_fn(graphdef)

    def nan_loss(p, batch):
        loss, n = base_loss(p, batch)
        return loss * jnp.where(jnp.any(batch["inputs"] == BAD_TOKEN), jnp.nan, 1.0), n

    return nan_loss, params, compiled_round  # one compiled round per configuration


def _run(model, tmp, cfg=FED, *, seed=0, resume=False, rows=None):
    loss_fn, params, rounds = model
    rows = rows or _rows()
    return train_federated(
        loss_fn,
        params,
        rows,
        cfg,
        DP,
        private=True,
        seed=seed,
        ckpt_dir=tmp,
        resume=resume,
        fl_round=rounds(loss_fn, cfg, DP, True, len(rows)),
    )


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# --- the fault draw itself (no training) ------------------------------------------


def test_dropout_count_is_binomial_and_deterministic():
    n, p = 2000, 0.3
    idx, mask = np.arange(n), np.ones(n, bool)
    key = fault_key(7, 0)
    d = apply_faults(key, idx, mask, seed=0, dropout_prob=p)
    reporting = int(d.mask.sum())
    sd = math.sqrt(n * p * (1 - p))
    assert abs(reporting - (1 - p) * n) < 4 * sd, reporting
    assert d.sampled == n and d.dropped + reporting == n and d.stragglers == 0
    again = apply_faults(key, idx, mask, seed=0, dropout_prob=p)
    assert np.array_equal(again.mask, d.mask)
    other = apply_faults(fault_key(8, 0), idx, mask, seed=0, dropout_prob=p)
    assert not np.array_equal(other.mask, d.mask)
    # Padding slots are never "dropped"; a user's fate does not depend on its slot.
    pad = np.concatenate([mask[:100], np.zeros(28, bool)])
    d_pad = apply_faults(key, np.concatenate([idx[:100], np.zeros(28, int)]), pad, seed=0, dropout_prob=p)
    assert d_pad.sampled == 100 and not d_pad.mask[100:].any()
    assert np.array_equal(d_pad.mask[:100], d.mask[:100])


def test_device_speed_is_a_pure_function_of_seed_and_user():
    users = np.arange(500)
    t = device_seconds(3, users)
    assert np.array_equal(t[[7, 42]], device_seconds(3, np.array([42, 7]))[::-1])
    assert not np.allclose(t, device_seconds(4, users))
    assert abs(np.median(t) / MEDIAN_DEVICE_SECONDS - 1) < 0.15
    mask = np.ones(len(users), bool)
    half = apply_faults(jax.random.key(0), users, mask, seed=3, straggler_deadline=MEDIAN_DEVICE_SECONDS)
    assert half.stragglers == int((t > MEDIAN_DEVICE_SECONDS).sum()) and 180 < half.stragglers < 320
    assert np.array_equal(half.mask, t <= MEDIAN_DEVICE_SECONDS)
    none = apply_faults(jax.random.key(0), users, mask, seed=3, straggler_deadline=1e9)
    assert none.stragglers == 0 and none.mask.all()
    # stragglers are not double-counted as dropouts
    both = apply_faults(
        jax.random.key(0), users, mask, seed=3, dropout_prob=1.0, straggler_deadline=MEDIAN_DEVICE_SECONDS
    )
    assert both.stragglers == half.stragglers and both.dropped == len(users) - half.stragglers and not both.mask.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dropout_prob": 1.5}, "dropout_prob"),
        ({"dropout_prob": -0.1}, "dropout_prob"),
        ({"straggler_deadline": 0.0}, "straggler_deadline"),
        ({"straggler_deadline": float("nan")}, "straggler_deadline"),
        ({"straggler_deadline": -3.0}, "straggler_deadline"),
    ],
)
def test_fault_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FederatedConfig(**kwargs)
    with pytest.raises(ValueError, match=rf"config\.federated: .*{match}"):
        RunConfig.from_dict({"federated": kwargs})


# --- through train_federated --------------------------------------------------------


def test_all_clients_drop_dp_round_adds_only_noise(model, tmp_path):
    """dropout_prob=1: every round completes, nobody trains, and the model moves by exactly the noise / (qN)."""
    _, params, _ = model
    cfg = dataclasses.replace(FED, rounds=1, dropout_prob=1.0)
    p1, ledger, hist = _run(model, tmp_path, cfg)
    h = hist[0]
    assert h["sampled_clients"] > 0 and h["dropped_clients"] == h["sampled_clients"]
    assert h["cohort_size"] == 0 and h["included_clients"] == 0 and h["num_tokens"] == 0
    # The accountant still charges the round at q: dropping only removes contributions (conservative).
    assert ledger.rounds == 1 and h["epsilon"] == pytest.approx(
        epsilon(DP.noise_multiplier, DP.sampling_prob, 1, DP.delta)
    )
    # Re-derive the round's noise key exactly as train_federated / build_round do.
    k_round = rng.key(0, Stream.ROUND, 0)
    _, noise_key = jax.random.split(k_round)
    zeros = jax.tree.map(jnp.zeros_like, params)
    noise = add_gaussian_noise(zeros, DP.noise_multiplier * DP.clip_norm, noise_key)
    expected = jax.tree.map(lambda p, z: p + z / (DP.sampling_prob * USERS), params, noise)  # server SGD, lr 1
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert not _same(p1, params)


def test_dropout_run_is_counted_deterministic_and_resumable(model, tmp_path):
    cfg = dataclasses.replace(FED, dropout_prob=0.3, straggler_deadline=1.5 * MEDIAN_DEVICE_SECONDS)
    p1, l1, h1 = _run(model, tmp_path / "a", cfg)
    for h in h1:
        assert h["cohort_size"] == h["sampled_clients"] - h["dropped_clients"] - h["stragglers"]
        assert h["included_clients"] == h["cohort_size"]
    assert sum(h["dropped_clients"] for h in h1) > 0 and sum(h["stragglers"] for h in h1) > 0
    # same seed, same faults, same model
    p2, l2, h2 = _run(model, tmp_path / "b", cfg)
    assert _same(p1, p2) and _strip(h1) == _strip(h2) and l1 == l2
    # interrupted after 2 rounds and resumed: the faults replay exactly
    _, _, h2_first = _run(model, tmp_path / "c", dataclasses.replace(cfg, rounds=2))
    p3, l3, h3 = _run(model, tmp_path / "c", cfg, resume=True)  # returns only the rounds it ran (3, ...)
    assert _same(p1, p3) and _strip(h2_first) + _strip(h3) == _strip(h1) and l1 == l3
    # faults off: the same sampling, nothing lost
    _, _, h0 = _run(model, tmp_path / "d", FED)
    assert [h["sampled_clients"] for h in h0] == [h["sampled_clients"] for h in h1]
    assert all(
        h["dropped_clients"] == 0 and h["stragglers"] == 0 and h["cohort_size"] == h["sampled_clients"] for h in h0
    )


def test_nan_client_never_reaches_the_model(model, tmp_path):
    """A user whose local training yields NaN is excluded and counted in each round it is sampled; the model stays finite."""
    from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort_exact

    cfg = dataclasses.replace(FED, rounds=3)
    cap = cohort_capacity(USERS, DP.sampling_prob, multiple=cfg.client_chunk)
    cohorts = []
    for r in range(cfg.rounds):
        idx, mask, _ = sample_cohort_exact(
            rng.key(0, Stream.COHORT, r), USERS, DP.sampling_prob, cap, multiple=cfg.client_chunk
        )
        cohorts.append(set(np.asarray(idx)[np.asarray(mask)].tolist()))
    bad = min(cohorts[0])  # sampled in round 1 at least
    p, _, hist = _run(model, tmp_path, cfg, rows=_rows(bad_user=bad))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(p))
    for h, c in zip(hist, cohorts):
        assert h["sampled_clients"] == len(c) and h["nonfinite_clients"] == int(bad in c)
        assert h["included_clients"] == len(c) - int(bad in c)
        assert all(math.isfinite(v) for v in h.values() if isinstance(v, float))
    assert sum(h["nonfinite_clients"] for h in hist) >= 1
