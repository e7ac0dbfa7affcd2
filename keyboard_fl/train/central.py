"""Centralized (server-trained) baseline: the non-private, non-federated reference.

Hard et al. 2018 compare the federated CIFG with the same model trained on the
pooled data on a server (16.5% vs 16.4% top-1); this trainer is that
reference. It pools the training users' rows, shuffles them with an explicit
seed and runs Adam (Kingma & Ba 2015) on mini-batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.models import Params
from keyboard_fl.rng import Stream, generator
from keyboard_fl.train.examples import as_batch


@dataclasses.dataclass(frozen=True)
class CentralConfig:
    steps: int = 2000  # optimizer steps over the pooled training rows
    batch_size: int = 64  # rows per step
    learning_rate: float = 3e-3  # Adam; warm-up-free, cosine-decayed to 10%
    grad_clip: float = 1.0  # global-norm gradient clip, a standard LSTM safeguard


def make_train_step(loss_fn, tx: optax.GradientTransformation):
    @jax.jit
    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def central_optimizer(config: CentralConfig) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.1)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))


def train_central(
    loss_fn,
    params: Params,
    rows: np.ndarray,
    config: CentralConfig,
    seed: int,
    *,
    stream: Stream = Stream.CENTRAL,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[Params, list[float]]:
    """Train on pooled rows [n, seq_len + 1]; return the params and the loss per step."""
    if len(rows) == 0:
        raise ValueError("no training rows: the training users have no messages")
    tx = central_optimizer(config)
    opt_state = tx.init(params)
    step = make_train_step(loss_fn, tx)
    rng = generator(seed, stream)
    order, pos, losses = rng.permutation(len(rows)), 0, []
    for i in range(config.steps):
        if pos + config.batch_size > len(order):
            order, pos = rng.permutation(len(rows)), 0
        idx = order[pos : pos + config.batch_size]
        pos += config.batch_size
        if len(idx) < config.batch_size:  # fewer rows than a batch: repeat them
            idx = np.resize(idx, config.batch_size)
        batch = {k: jnp.asarray(v) for k, v in as_batch(rows[idx]).items()}
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
        if callback is not None:
            callback(i, losses[-1])
    return params, losses
