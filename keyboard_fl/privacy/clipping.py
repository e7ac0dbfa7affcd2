"""Per-user update clipping and Gaussian noise for user-level DP-FedAvg.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially
Private Recurrent Language Models", arXiv:1710.06963) bounds each user's
influence by clipping the user's *whole* model update to global L2 norm ``C``
(flat clipping over every leaf of the pytree), then adds Gaussian noise with
standard deviation ``z * C`` to the sum of clipped updates (the Gaussian
mechanism; Dwork & Roth 2014).

Both functions are pure, work on any pytree of float arrays and are safe
under ``jax.jit`` / ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from keyboard_fl.typing import PyTree

__all__ = ["clip_update", "add_gaussian_noise"]


def clip_update(update: PyTree, l2_norm_clip: float | jax.Array) -> tuple[PyTree, jax.Array]:
    """Scales ``update`` by ``min(1, C / ||update||)`` (global L2 norm over all leaves).

    Args:
        update: pytree of float arrays (e.g. a client's model delta).
        l2_norm_clip: the clipping bound ``C`` (> 0).

    Returns:
        ``(clipped, norm)``: the clipped pytree (same structure and dtypes) and the
        pre-clip global L2 norm as a float32 scalar. A zero update is returned
        unchanged (no division by zero, no NaN). A non-finite update yields a
        non-finite norm; callers must mask such updates out.
    """
    norm = optax.tree.norm(update).astype(jnp.float32)
    c = jnp.asarray(l2_norm_clip, jnp.float32)
    # Guard the zero-norm case explicitly: the divisor is never 0, and when the
    # norm is <= C the scale is exactly 1.
    safe_norm = jnp.where(norm > 0.0, norm, 1.0)
    scale = jnp.where(norm > c, c / safe_norm, 1.0)
    clipped = jax.tree.map(lambda x: (x * scale).astype(x.dtype), update)
    return clipped, norm


def add_gaussian_noise(tree: PyTree, stddev: float | jax.Array, rng: jax.Array) -> PyTree:
    """Adds independent ``N(0, stddev**2)`` noise to every coordinate of ``tree``.

    Each leaf gets its own key, split from ``rng``; the same ``rng`` always
    gives the same noise. ``stddev == 0`` returns ``tree`` values unchanged.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    keys = jax.random.split(rng, len(leaves))
    std = jnp.asarray(stddev, jnp.float32)
    noised = [
        (x + std * jax.random.normal(k, jnp.shape(x), jnp.float32)).astype(jnp.result_type(x))
        for x, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, noised)
