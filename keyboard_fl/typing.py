"""Type aliases shared across the package (as ``fedjax.core.typing``).

Aliases only: nothing here runs. They name what a value *is* so that
signatures read like the DESIGN sketch, e.g.
``client_update(params: Params, batches: Batch, ...) -> tuple[Updates, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

PyTree = Any
"""A nested structure of arrays (dicts, lists, tuples, NamedTuples, nnx.State)."""

Params = PyTree
"""Model parameters: the ``nnx.State`` of ``nnx.Param`` leaves, or a plain dict in tests."""

Updates = PyTree
"""A parameter-shaped delta (a client update, an aggregate, an optimizer step)."""

Batch = Mapping[str, jax.Array]
"""One padded batch: ``{"inputs": int32[B,T], "targets": int32[B,T], "weights": float32[B,T]}``
(a client's batches stack a leading step axis: ``[S,B,T]``)."""

LossFn = Callable[[Params, Batch], tuple[jax.Array, jax.Array]]
"""``loss_fn(params, batch) -> (mean weighted token NLL, number of weighted tokens)``."""

PRNGKey = jax.Array
"""A typed JAX key (``jax.random.key``); see :mod:`keyboard_fl.rng` for where each comes from."""

__all__ = ["Batch", "LossFn", "PRNGKey", "Params", "PyTree", "Updates"]
