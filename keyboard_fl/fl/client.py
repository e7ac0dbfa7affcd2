"""Client side of a federated round: local training on one user's data.

Federated Averaging (McMahan et al. 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data", arXiv:1602.05629): each sampled
client starts from the server model, runs a few epochs of local SGD on its own
examples, and sends back only the model *delta* (local − initial params). In
Gboard (Hard et al. 2018, arXiv:1811.03604) and DP-FedAvg (McMahan et al.
2018, arXiv:1710.06963) the same client step is used; clipping and noise are
applied by the server-side aggregator (``keyboard_fl.fl.round``).

Client data arrive as padded batches (fedjax style): ``inputs``, ``targets``
(int32) and ``weights`` (float32), each ``[S, B, T]`` with ``S`` local steps
(epochs × batches, laid out by the caller). A step whose weights sum to zero is
padding: it leaves the parameters *and* the optimizer state unchanged, so
momentum or weight decay cannot move a client that has no more data.

Loss interface (shared with the models)::

    loss_fn(params, batch) -> (loss, num_tokens)
    # loss = sum of token NLL * weight / max(num_tokens, 1)
    # batch = {"inputs": int32[B,T], "targets": int32[B,T], "weights": float32[B,T]}
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from keyboard_fl.typing import Batch, LossFn, PyTree

__all__ = ["ClientMetrics", "client_update", "as_client_optimizer"]


class ClientMetrics(NamedTuple):
    """Per-client diagnostics (scalars; batched along the cohort under vmap)."""

    num_tokens: jax.Array  # float32: sum of weights over all local steps
    num_steps: jax.Array  # int32: local steps with at least one weighted token
    train_loss: jax.Array  # float32: token-weighted mean of each step's loss, taken before that step's update
    first_loss: jax.Array  # float32: loss of the first active step (≈ loss of the initial model)
    last_loss: jax.Array  # float32: loss of the last active step (≈ loss late in local training)


def as_client_optimizer(client_opt: optax.GradientTransformation | float) -> optax.GradientTransformation:
    """A float is read as the learning rate of plain SGD (the FedAvg default)."""
    if isinstance(client_opt, (int, float)):
        return optax.sgd(float(client_opt))
    return client_opt


def _select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def client_update(
    params: PyTree,
    batches: Batch,
    rng: jax.Array,
    *,
    loss_fn: LossFn,
    client_opt: optax.GradientTransformation | float,
) -> tuple[PyTree, ClientMetrics]:
    """Runs local training over ``S`` padded steps (the first, then ``lax.scan``).

    Args:
        params: initial (server) parameters, any pytree of float arrays.
        batches: dict with ``inputs``/``targets``/``weights`` of shape ``[S, B, T]``.
        rng: PRNG key of this client. The deterministic ``loss_fn`` interface
          does not consume randomness yet; the key is accepted so that the
          round's key schedule stays fixed when stochastic losses arrive.
        loss_fn: ``loss_fn(params, batch) -> (loss, num_tokens)``.
        client_opt: optax transformation, or a float learning rate for SGD.

    Returns:
        ``(delta, metrics)`` with ``delta = local params − params`` (same tree).
    """
    del rng  # See docstring: reserved, not used by the deterministic loss.
    opt = as_client_optimizer(client_opt)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(carry, batch):
        p, s, first, last, seen = carry
        (loss, _), grads = grad_fn(p, batch)
        ntok = jnp.sum(batch["weights"]).astype(jnp.float32)
        active = ntok > 0
        updates, new_s = opt.update(grads, s, p)
        new_p = optax.apply_updates(p, updates)
        p = _select(active, new_p, p)
        s = _select(active, new_s, s)
        loss = jnp.where(active, loss, 0.0).astype(jnp.float32)
        first = jnp.where(active & ~seen, loss, first)
        last = jnp.where(active, loss, last)
        seen = seen | active
        return (p, s, first, last, seen), (loss * ntok, ntok, active)

    zero = jnp.zeros((), jnp.float32)
    init = (params, opt.init(params), zero, zero, jnp.zeros((), bool))
    batches = dict(batches)
    # The first step runs outside the scan, on the server params themselves:
    # under vmap they are unbatched, so every client's forward and backward
    # pass is one matmul over the clients (a scan carry would be per-client
    # from its first step). Later steps start from each client's own weights.
    carry, out0 = step(init, jax.tree.map(lambda x: x[0], batches))
    carry, outs = jax.lax.scan(step, carry, jax.tree.map(lambda x: x[1:], batches))
    (local, _, first, last, _) = carry
    loss_x_tok, ntok, active = (jnp.concatenate([a[None], b]) for a, b in zip(out0, outs, strict=True))
    delta = jax.tree.map(lambda a, b: a - b, local, params)
    num_tokens = jnp.sum(ntok)
    metrics = ClientMetrics(
        num_tokens=num_tokens,
        num_steps=jnp.sum(active, dtype=jnp.int32),
        train_loss=jnp.sum(loss_x_tok) / jnp.maximum(num_tokens, 1.0),
        first_loss=first,
        last_loss=last,
    )
    return delta, metrics
