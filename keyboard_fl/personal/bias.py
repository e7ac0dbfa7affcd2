"""Local fine-tuning of the output bias on one user's messages (on the device, never uploaded).

The smallest useful part of a next-piece model to personalise is the output
bias ``b`` (one number per piece, 2,048 here): it shifts the unigram
preference toward this user's pieces (their names, their words) and leaves
everything the global model learned about context in place, as the
bias-only fine-tuning of BitFit (Ben Zaken et al. 2022, arXiv 2106.10199)
and the on-device personalization of Wang et al. 2019 (arXiv 1910.10252).

With every other weight frozen the logits are ``z + b + δ`` for fixed
features ``z = h·Eᵀ`` (the LSTM state ``h`` after each piece, ``E`` the tied
embedding), so the features of the user's pieces are computed once and the
fit is a convex problem over ``δ``:

    min_δ  mean NLL(z + b + δ) + (μ / 2) · ‖δ‖²

solved with Adam for a fixed number of steps, for every ``μ`` of a grid at
once (``vmap``). The weight ``μ`` is chosen by validation: ``δ`` is fitted on
the earlier part of the user's training messages and scored (piece NLL) on
the later part; ``μ = ∞`` (no change) competes, so a user whose held-out
messages gain nothing keeps the global model.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.models import Params, merge
from keyboard_fl.tokenizer import PAD_ID, Tokenizer
from keyboard_fl.train.examples import user_rows

__all__ = ["BiasConfig", "bias_features", "fit_bias", "personal_bias", "with_bias"]


@dataclasses.dataclass(frozen=True)
class BiasConfig:
    """How the output bias is fine-tuned on the device."""

    l2_grid: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)  # μ candidates (∞, i.e. no change, always competes)
    steps: int = 100  # Adam steps on the convex bias problem
    learning_rate: float = 0.05  # Adam step size (bias units: log-odds)
    max_rows: int = 64  # the user's most recent rows of seq_len pieces used (≈ 1,500 pieces)
    validation_fraction: float = 0.2  # later share of the training messages that validates μ

    def __post_init__(self) -> None:
        if not self.l2_grid or min(self.l2_grid) <= 0:
            raise ValueError(f"BiasConfig.l2_grid needs values > 0, got {self.l2_grid}")
        if self.steps < 1 or self.learning_rate <= 0 or self.max_rows < 1:
            raise ValueError("BiasConfig needs steps >= 1, learning_rate > 0, max_rows >= 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"BiasConfig.validation_fraction must be in (0, 1), got {self.validation_fraction}")


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _features(graphdef, params: Params, inputs: jax.Array) -> jax.Array:
    """``z = logits − b``: the bias-free next-piece scores after every input piece, [B, T, V]."""
    model = merge(graphdef, params)
    return model.logits(model.states(inputs)[1]) - params["output_bias"]


def bias_features(graphdef, params: Params, tokenizer: Tokenizer, messages, seq_len: int, max_rows: int):
    """``(z [N, V], targets [N], weights [N])`` for a user's messages (N padded to a power of two ≥ 256)."""
    if "output_bias" not in params:
        raise ValueError("bias fine-tuning needs a model with an 'output_bias' parameter")
    rows = user_rows(tokenizer, messages, seq_len)[-max_rows:]
    v = params["output_bias"].shape[0]
    if not len(rows):
        return np.zeros((256, v), np.float32), np.zeros(256, np.int32), np.zeros(256, np.float32)
    bucket = 1 << (len(rows) - 1).bit_length()  # few shapes → few compilations
    padded = np.full((bucket, rows.shape[1]), PAD_ID, np.int32)
    padded[: len(rows)] = rows
    z = np.asarray(_features(graphdef, params, jnp.asarray(padded[:, :-1]))).reshape(-1, v)
    targets = padded[:, 1:].reshape(-1)
    keep = targets != PAD_ID
    n = max(256, 1 << (int(keep.sum()) - 1).bit_length())
    out_z, out_t, out_w = np.zeros((n, v), np.float32), np.zeros(n, np.int32), np.zeros(n, np.float32)
    out_z[: keep.sum()], out_t[: keep.sum()], out_w[: keep.sum()] = z[keep], targets[keep], 1.0
    return out_z, out_t, out_w


def _nll(z, bias, targets, weights):
    nll = optax.softmax_cross_entropy_with_integer_labels(z + bias, targets)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(z, bias, targets, weights, l2, lr, *, steps: int):
    """δ for each μ in ``l2`` [G]: Adam on mean NLL + μ/2 ‖δ‖², ``steps`` steps → [G, V]."""
    opt = optax.adam(lr)

    def one(mu):
        loss = lambda d: _nll(z, bias + d, targets, weights) + 0.5 * mu * jnp.sum(d * d)  # noqa: E731
        d = jnp.zeros_like(bias)

        def body(carry, _):
            d, s = carry
            g = jax.grad(loss)(d)
            u, s = opt.update(g, s, d)
            return (optax.apply_updates(d, u), s), None

        (d, _), _ = jax.lax.scan(body, (d, opt.init(d)), None, length=steps)
        return d

    return jax.vmap(one)(l2)


_val_nll = jax.jit(jax.vmap(_nll, in_axes=(None, 0, None, None)))


def fit_bias(graphdef, params: Params, tokenizer: Tokenizer, messages, seq_len: int, config: BiasConfig = BiasConfig()):
    """``(δ [V], μ, validation NLLs)`` for one user's training ``messages`` (time order).

    ``μ`` is ``inf`` (``δ = 0``) when no grid value lowers the validation NLL,
    or when the user has too few messages to hold some out.
    """
    bias = params["output_bias"]
    n_val = int(round(len(messages) * config.validation_fraction))
    grid = np.asarray(config.l2_grid, np.float32)
    mu, val = float("inf"), {}
    if 0 < n_val < len(messages):
        fit_part = bias_features(graphdef, params, tokenizer, messages[:-n_val], seq_len, config.max_rows)
        val_part = bias_features(graphdef, params, tokenizer, messages[-n_val:], seq_len, config.max_rows)
        deltas = _fit(fit_part[0], bias, fit_part[1], fit_part[2], grid, config.learning_rate, steps=config.steps)
        scores = np.asarray(
            _val_nll(val_part[0], bias + jnp.concatenate([jnp.zeros_like(bias)[None], deltas]), *val_part[1:])
        )
        val = {"inf": float(scores[0]), **{str(m): float(s) for m, s in zip(config.l2_grid, scores[1:])}}
        best = int(np.argmin(scores))
        mu = float("inf") if best == 0 else float(config.l2_grid[best - 1])
    if mu == float("inf"):
        return jnp.zeros_like(bias), mu, val
    z, t, w = bias_features(graphdef, params, tokenizer, messages, seq_len, config.max_rows)
    delta = _fit(z, bias, t, w, jnp.asarray([mu], jnp.float32), config.learning_rate, steps=config.steps)[0]
    return delta, mu, val


def with_bias(params: Params, delta) -> Params:
    """The global parameters with the output bias shifted by ``delta`` (a new pytree; the rest is shared)."""
    return {**params, "output_bias": params["output_bias"] + delta}


def personal_bias(
    graphdef, params: Params, tokenizer: Tokenizer, messages, seq_len: int, config: BiasConfig = BiasConfig()
):
    """``(personal params, μ)``: :func:`fit_bias` applied to the global ``params``."""
    delta, mu, _ = fit_bias(graphdef, params, tokenizer, list(messages), seq_len, config)
    return with_bias(params, delta), mu
