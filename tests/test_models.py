"""Tests for keyboard_fl.models: CIFG-LSTM and Transformer next-piece models."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from keyboard_fl.models import ModelConfig, init_params, make_loss_fn, make_model, merge, param_count, split
from keyboard_fl.models.cifg_lstm import CifgLstm
from keyboard_fl.models.transformer import Transformer

SMALL = ModelConfig(vocab_size=40, embed_dim=8, hidden_dim=12)
TSMALL = ModelConfig(
    kind="transformer", vocab_size=40, embed_dim=16, hidden_dim=24, num_layers=2, num_heads=4, context=8
)
B, T = 3, 7


def _tokens(seed, b=B, t=T, v=40):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, v)


class _Jitted:
    """A model's methods, jitted over its params (eager flax ops are slow on a busy CPU)."""

    def __init__(self, cfg, seed):
        self.graphdef, self.params = init_params(cfg, jax.random.key(seed))
        m = lambda p: merge(self.graphdef, p)
        self.model = m(self.params)
        self._call = jax.jit(lambda p, t: m(p)(t))
        self._states = jax.jit(lambda p, t: m(p).states(t))
        self._step = jax.jit(lambda p, s, t: m(p).step(s, t))

    def __call__(self, t):
        return self._call(self.params, t)

    def states(self, t):
        return self._states(self.params, t)

    def step(self, s, t):
        return self._step(self.params, s, t)

    def initial_state(self, b):
        return self.model.initial_state(b)


def test_default_param_count_matches_formula():
    cfg = ModelConfig()
    v, e, h = cfg.vocab_size, cfg.embed_dim, cfg.hidden_dim
    _, params = init_params(cfg, jax.random.key(0))
    n = param_count(params)
    assert n == v * e + e * 3 * h * 2 + 3 * h + h * e + v
    assert n <= 1_500_000


@pytest.mark.parametrize("cfg", [SMALL, TSMALL], ids=["cifg", "transformer"])
def test_output_shapes(cfg):
    model = make_model(cfg, jax.random.key(0))  # eager, once
    tokens = _tokens(1)
    logits = model(tokens)
    assert logits.shape == (B, T, cfg.vocab_size)
    states = model.states(tokens)
    assert all(s.shape[:2] == (B, T) for s in jax.tree.leaves(states))
    assert states[1].shape == (B, T, cfg.embed_dim)  # element [1] feeds logits
    np.testing.assert_allclose(model.logits(states[1]), logits, rtol=1e-5, atol=1e-5)
    state = model.initial_state(B)
    step_logits, new_state = model.step(state, tokens[:, 0])
    assert step_logits.shape == (B, cfg.vocab_size)
    assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)


@pytest.mark.parametrize("cfg", [SMALL, TSMALL], ids=["cifg", "transformer"])
def test_step_agrees_with_call(cfg):
    model = _Jitted(cfg, 2)
    tokens = _tokens(3)
    full = np.asarray(model(tokens))
    states = model.states(tokens)
    state = model.initial_state(B)
    for t in range(T):
        logits, state = model.step(state, tokens[:, t])
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(jax.tree.map(lambda s: s[:, t], states))):  # noqa: B023 (used within this iteration)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _adam_steps(cfg, n=15):
    graphdef, params = init_params(cfg, jax.random.key(4))
    loss_fn = make_loss_fn(graphdef)
    toks = np.asarray(_tokens(5, b=4, t=10))
    batch = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": np.ones((4, 9), np.float32)}
    tx = optax.adam(3e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss

    losses = []
    for _ in range(n):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("cfg", [SMALL, TSMALL], ids=["cifg", "transformer"])
def test_optimizer_steps_lower_loss(cfg):
    losses = _adam_steps(cfg)
    assert losses[-1] < 0.7 * losses[0]


def test_loss_fn_weights_and_count():
    graphdef, params = init_params(SMALL, jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    toks = np.asarray(_tokens(6, b=2, t=6))
    w = np.ones((2, 5), np.float32)
    w[1, 2:] = 0
    batch = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": w}
    loss, n = loss_fn(params, batch)
    assert float(n) == 7.0
    logits = merge(graphdef, params)(toks[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:])
    np.testing.assert_allclose(loss, np.sum(nll * w) / 7.0, rtol=1e-6)
    zero, n0 = loss_fn(params, {**batch, "weights": np.zeros_like(w)})
    assert float(zero) == 0.0 and float(n0) == 0.0


def test_split_merge_round_trip_and_seed():
    model = make_model(SMALL, jax.random.key(7))
    graphdef, params = split(model)
    again = merge(graphdef, params)
    tokens = _tokens(8)
    np.testing.assert_array_equal(again(tokens), model(tokens))
    _, p_same = init_params(SMALL, jax.random.key(7))
    _, p_other = init_params(SMALL, jax.random.key(9))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p_same)))
    assert not np.array_equal(params["embedding"], p_other["embedding"])
    assert isinstance(model, CifgLstm)
    assert isinstance(make_model(TSMALL, jax.random.key(0)), Transformer)


def test_model_config_validation():
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="gru")
    with pytest.raises(ValueError, match="hidden_dim"):
        ModelConfig(hidden_dim=0)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(kind="transformer", embed_dim=10, num_heads=4)


# --- Transformer specifics ------------------------------------------------


def test_transformer_is_causal():
    model = _Jitted(TSMALL, 10)
    tokens = _tokens(11, t=8)
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 40)
    a, b = np.asarray(model(tokens)), np.asarray(model(changed))
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_transformer_param_count_and_tied_embedding():
    cfg = TSMALL
    v, e, f, c, L = cfg.vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.context, cfg.num_layers
    _, params = init_params(cfg, jax.random.key(0))
    per_block = 4 * e + e * 3 * e + e * e + e * f + f + f * e + e
    assert param_count(params) == v * e + c * e + L * per_block + 2 * e + v
    assert "embedding" in params and params["embedding"].shape == (v, e)


def test_transformer_sliding_window_beyond_context():
    """Longer than the context: ``states`` uses the same window as ``step``."""
    model = _Jitted(TSMALL, 12)
    t = TSMALL.context + 5
    tokens = _tokens(13, t=t)
    full = np.asarray(model(tokens))
    state = model.initial_state(B)
    for i in range(t):
        logits, state = model.step(state, tokens[:, i])
        np.testing.assert_allclose(logits, full[:, i], rtol=1e-4, atol=1e-5)
    # the last position sees exactly the last `context` tokens
    tail = np.asarray(model(tokens[:, -TSMALL.context :]))
    np.testing.assert_allclose(full[:, -1], tail[:, -1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        model.model.hidden(tokens)
