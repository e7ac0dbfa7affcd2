"""Centralized (server-trained) baseline: the non-private, non-federated reference.

Hard et al. 2018 compare the federated CIFG with the same model trained on the
pooled data on a server (16.5% vs 16.4% top-1); this trainer is that
reference. It pools the training users' rows, shuffles them with an explicit
seed and runs Adam (Kingma & Ba 2015) on mini-batches.

On real text the recipe scales to the data: ``epochs`` sets the number of
steps from the rows, the learning rate warms up linearly then decays on a
cosine, and with ``validation rows`` (a validation split of users the caller
keeps out of ``rows``) training stops once the validation loss has not improved
for ``patience`` checks, returning the best parameters (early stopping,
Prechelt 1998).
"""

from __future__ import annotations

import dataclasses
import math
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
    steps: int = 2000  # optimizer steps over the pooled training rows (with `epochs`: the most steps)
    batch_size: int = 64  # rows per step
    learning_rate: float = 3e-3  # Adam's peak rate; cosine-decayed to 10% over the planned steps
    grad_clip: float = 1.0  # global-norm gradient clip, a standard LSTM safeguard
    epochs: float | None = (
        None  # steps scaled to the data: ceil(epochs · rows / batch_size), at most `steps`; None: `steps`
    )
    warmup_steps: int = 0  # linear warm-up of the learning rate before the cosine decay (0: none)
    validation_fraction: float = 0.0  # share of the users kept out of training to stop on (0: no validation)
    validate_every: int = 250  # steps between validation losses (with a validation split)
    patience: int = 4  # validation checks without improvement before stopping; the best parameters are kept

    def __post_init__(self):
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 or null, got {self.epochs!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        for name in ("validate_every", "patience"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")

    def planned_steps(self, num_rows: int) -> int:
        """The steps to run on ``num_rows`` rows (before any early stop)."""
        if self.epochs is None:
            return self.steps
        return max(1, min(self.steps, math.ceil(self.epochs * num_rows / self.batch_size)))


def make_train_step(loss_fn, tx: optax.GradientTransformation):
    @jax.jit
    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def central_optimizer(config: CentralConfig, steps: int | None = None) -> optax.GradientTransformation:
    """Clipped Adam with a (warm-up then) cosine schedule over ``steps`` (default ``config.steps``)."""
    steps = config.steps if steps is None else steps
    if config.warmup_steps > 0:
        warm = min(config.warmup_steps, max(steps - 1, 1))
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warm, max(steps, warm + 1), end_value=0.1 * config.learning_rate
        )
    else:
        schedule = optax.cosine_decay_schedule(config.learning_rate, steps, alpha=0.1)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))


def validation_loss(loss_fn, params: Params, rows: np.ndarray, batch_size: int) -> float:
    """Mean next-piece loss over ``rows`` (token-weighted), in batches of ``batch_size``."""
    ev = _eval_step(loss_fn)
    total, count = 0.0, 0.0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        if len(chunk) < batch_size:  # pad with all-PAD rows (zero weight): one compiled shape
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), rows.shape[1]), rows.dtype)])
        loss, n = ev(params, {k: jnp.asarray(v) for k, v in as_batch(chunk).items()})
        total, count = total + float(loss) * float(n), count + float(n)
    return total / max(count, 1.0)


_EVAL_STEPS: dict = {}


def _eval_step(loss_fn):
    if loss_fn not in _EVAL_STEPS:
        _EVAL_STEPS.clear()  # one loss function at a time: no growing cache of compiled graphs
        _EVAL_STEPS[loss_fn] = jax.jit(loss_fn)
    return _EVAL_STEPS[loss_fn]


def train_central(
    loss_fn,
    params: Params,
    rows: np.ndarray,
    config: CentralConfig,
    seed: int,
    *,
    stream: Stream = Stream.CENTRAL,
    callback: Callable[[int, float], None] | None = None,
    val_rows: np.ndarray | None = None,
    history: list[dict] | None = None,
) -> tuple[Params, list[float]]:
    """Train on pooled rows [n, seq_len + 1]; return the params and the loss per step.

    With ``val_rows`` (and ``config.validation_fraction`` > 0) the validation loss
    is measured every ``validate_every`` steps and appended to ``history``; the
    run stops after ``patience`` checks without improvement and returns the
    parameters of the best check.
    """
    if len(rows) == 0:
        raise ValueError("no training rows: the training users have no messages")
    steps = config.planned_steps(len(rows))
    tx = central_optimizer(config, steps)
    opt_state = tx.init(params)
    step = make_train_step(loss_fn, tx)
    rng = generator(seed, stream)
    order, pos, losses = rng.permutation(len(rows)), 0, []
    validate = val_rows is not None and len(val_rows) > 0 and config.validation_fraction > 0
    best, best_params, since = math.inf, params, 0
    for i in range(steps):
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
        if validate and ((i + 1) % config.validate_every == 0 or i + 1 == steps):
            v = validation_loss(loss_fn, params, val_rows, config.batch_size)
            if history is not None:
                history.append({"step": i + 1, "validation_loss": v, "planned_steps": steps})
            if v < best:
                best, best_params, since = v, params, 0
            else:
                since += 1
                if since >= config.patience:
                    break
    return (best_params if validate else params), losses


def schedule_report(planned: int, losses: list[float], history: list[dict]) -> dict:
    """What a central trainer ran: planned and run steps, and its validation checks."""
    best = min(history, key=lambda h: h["validation_loss"]) if history else None
    return {
        "planned_steps": planned,
        "steps": len(losses),
        "best_step": best["step"] if best else len(losses),
        "validation": history,
    }


def stop_note(history: list[dict]) -> str:
    """A log fragment naming the best validation check (empty without validation)."""
    if not history:
        return ""
    best = min(history, key=lambda h: h["validation_loss"])
    return f", best validation loss {best['validation_loss']:.3f} at step {best['step']}"
