"""Next-piece language models (flax.nnx) and their functional form for training.

The federated code works on plain pytrees: :func:`split` turns a model into a
``graphdef`` and a ``params`` pytree, and :func:`make_loss_fn` gives the
``loss_fn(params, batch) -> (loss, num_tokens)`` that every trainer uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from keyboard_fl.models.cifg_lstm import CifgLstm
from keyboard_fl.models.config import ModelConfig
from keyboard_fl.typing import Batch, LossFn, Params


def make_model(config: ModelConfig, key: jax.Array) -> nnx.Module:
    """A freshly initialised model; ``key`` fixes every initial weight."""
    rngs = nnx.Rngs(params=key)
    if config.kind == "cifg":
        return CifgLstm(config, rngs=rngs)
    from keyboard_fl.models.transformer import Transformer

    return Transformer(config, rngs=rngs)


def split(model: nnx.Module) -> tuple[nnx.GraphDef, Params]:
    """``(graphdef, params)``: the static structure and a pytree of weights."""
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def merge(graphdef: nnx.GraphDef, params: Params) -> nnx.Module:
    """Rebuild a model from :func:`split`'s output."""
    return nnx.merge(graphdef, nnx.State(params))


def init_params(config: ModelConfig, key: jax.Array) -> tuple[nnx.GraphDef, Params]:
    return split(make_model(config, key))


def param_count(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def make_loss_fn(graphdef: nnx.GraphDef) -> LossFn:
    """Weighted mean next-piece cross-entropy and the number of weighted tokens."""

    def loss_fn(params: Params, batch: Batch) -> tuple[jax.Array, jax.Array]:
        logits = merge(graphdef, params)(batch["inputs"])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        w = batch["weights"]
        n = jnp.sum(w)
        return jnp.sum(nll * w) / jnp.maximum(n, 1.0), n

    return loss_fn


__all__ = ["CifgLstm", "ModelConfig", "make_model", "split", "merge", "init_params", "param_count", "make_loss_fn"]
