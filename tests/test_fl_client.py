"""Tests for keyboard_fl.fl.client (local SGD with lax.scan, padded steps)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.fl.client import client_update
from keyboard_fl.testing import toy_init, toy_loss


def _batches(seed, steps=3, b=2, t=5, vocab=32):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (steps, b, t)).astype(np.int32)
    return {"inputs": jnp.asarray(x), "targets": jnp.asarray((x + 1) % vocab), "weights": jnp.ones((steps, b, t))}


def _run(params, batches, opt):
    fn = jax.jit(functools.partial(client_update, loss_fn=toy_loss, client_opt=opt))
    return fn(params, batches, jax.random.key(0))


def test_one_sgd_step_matches_hand_computation():
    params = toy_init(jax.random.key(0))
    batches = _batches(0, steps=1)
    delta, m = _run(params, batches, 0.3)
    grads = jax.grad(lambda p: toy_loss(p, jax.tree.map(lambda x: x[0], batches))[0])(params)
    for d, g in zip(jax.tree.leaves(delta), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(d), -0.3 * np.asarray(g), rtol=1e-5, atol=1e-7)
    assert int(m.num_steps) == 1 and float(m.num_tokens) == 10.0
    assert np.isclose(float(m.first_loss), float(toy_loss(params, jax.tree.map(lambda x: x[0], batches))[0]))


def test_zero_weight_step_is_noop_even_with_momentum():
    params = toy_init(jax.random.key(1))
    opt = optax.sgd(0.2, momentum=0.9)  # momentum would move params on an empty step
    b = _batches(1, steps=2)
    junk = _batches(99, steps=1)  # real-looking tokens, but zero weight: a padded step
    pad = {k: jnp.concatenate([b[k][:1], junk[k], b[k][1:]]) for k in b}
    pad["weights"] = pad["weights"].at[1].set(0.0)
    d_ref, m_ref = _run(params, b, opt)
    d_pad, m_pad = _run(params, pad, opt)
    for a, c in zip(jax.tree.leaves(d_ref), jax.tree.leaves(d_pad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-6, atol=1e-7)
    assert int(m_pad.num_steps) == 2 and float(m_pad.num_tokens) == float(m_ref.num_tokens)
    assert np.isclose(float(m_pad.train_loss), float(m_ref.train_loss), rtol=1e-6)


def test_all_padding_client_has_zero_delta():
    params = toy_init(jax.random.key(2))
    b = _batches(2)
    b["weights"] = jnp.zeros_like(b["weights"])
    delta, m = _run(params, b, optax.adam(0.1))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(delta))
    assert int(m.num_steps) == 0 and float(m.num_tokens) == 0.0 and float(m.train_loss) == 0.0


def test_local_training_lowers_loss():
    params = toy_init(jax.random.key(3))
    b = _batches(3, steps=30, b=8, t=8)
    delta, m = _run(params, b, 0.5)
    assert float(m.last_loss) < float(m.first_loss) - 0.5
    assert int(m.num_steps) == 30 and float(m.num_tokens) == 30 * 64
