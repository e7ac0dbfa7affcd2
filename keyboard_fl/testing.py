"""Test scaffolding: a tiny next-token model and synthetic cohorts (tests and benchmarks only).

Not a keyboard model: an embedding followed by a linear softmax layer
(a bigram model), following the ``loss_fn(params, batch) -> (loss,
num_tokens)`` interface of ``keyboard_fl.fl.client``. The synthetic task is
"next token = (token + shift) mod V", learnable by this model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.fl.round import CohortBatch

__all__ = ["toy_init", "toy_loss", "toy_cohort"]


def toy_init(key: jax.Array, vocab_size: int = 32, dim: int = 16) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "embed": jax.random.normal(k1, (vocab_size, dim), jnp.float32) * dim**-0.5,
        "w": jax.random.normal(k2, (dim, vocab_size), jnp.float32) * dim**-0.5,
        "b": jnp.zeros((vocab_size,), jnp.float32),
    }


def toy_loss(params: dict, batch) -> tuple[jax.Array, jax.Array]:
    """Mean token NLL over weighted tokens, and the number of weighted tokens."""
    x = jnp.take(params["embed"], batch["inputs"], axis=0)
    logits = jnp.matmul(x, params["w"]) + params["b"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    w = batch["weights"].astype(jnp.float32)
    num_tokens = jnp.sum(w)
    return jnp.sum(nll * w) / jnp.maximum(num_tokens, 1.0), num_tokens


def toy_cohort(
    seed: int,
    capacity: int,
    *,
    num_real: int | None = None,
    steps: int = 2,
    batch: int = 4,
    seq_len: int = 8,
    vocab_size: int = 32,
    shift: int = 1,
    ragged: bool = True,
) -> CohortBatch:
    """Synthetic padded cohort: the first ``num_real`` slots are real clients.

    With ``ragged`` each real client has a random number of weighted tokens
    (from one sequence to all ``steps * batch * seq_len``), so example-weighted
    and unweighted averages differ.
    """
    rng = np.random.default_rng(seed)
    num_real = capacity if num_real is None else num_real
    shape = (capacity, steps, batch, seq_len)
    inputs = rng.integers(0, vocab_size, size=shape, dtype=np.int32)
    targets = ((inputs + shift) % vocab_size).astype(np.int32)
    weights = np.ones(shape, np.float32)
    if ragged:
        flat = weights.reshape(capacity, -1)
        n_tok = rng.integers(seq_len, flat.shape[1] + 1, size=capacity)
        flat[np.arange(flat.shape[1])[None, :] >= n_tok[:, None]] = 0.0
        weights = flat.reshape(shape)
    mask = np.arange(capacity) < num_real
    weights[~mask] = 0.0
    return CohortBatch(jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(weights), jnp.asarray(mask))
