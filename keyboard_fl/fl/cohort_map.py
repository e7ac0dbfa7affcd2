"""Mapping one client's work over a padded cohort: vmap, chunks, devices.

The analogue of fedjax's ``for_each_client`` (fedjax/core/for_each_client.py)
for a round that only needs the *weighted sum* of what the clients return.
:func:`for_each_client` runs ``client_fn`` on every slot of a padded cohort
and returns ``Σ_k w_k · update_k`` with per-slot statistics, in one of three
layouts, all computing the same function (up to float summation order):

* **vmap** (``chunk=None``): every slot at once; memory holds ``K`` updates.
* **chunks** (``chunk=c``): ``vmap`` over ``c`` slots inside a ``fori_loop``
  over ``K/c`` chunks, summing as it goes (memory holds ``c`` updates). A
  chunk holding no sampled slot is skipped at run time (``lax.cond``, outside
  any vmap), so a padded capacity costs no compute.
* **devices** (``mesh`` of ``D > 1`` devices): ``shard_map`` over the 1-D
  ``"clients"`` mesh; slot ``j`` runs on device ``j % D`` (the sampler puts the
  sampled slots first, so strided is balanced), each device runs the vmap or
  chunk layout on its slots, and one ``psum`` makes the sum, replicated.

``client_fn`` sees the server parameters unbatched (``in_axes=None``), so any
computation on them that does not depend on a client's own weights (the first
local step: :func:`keyboard_fl.fl.client.client_update`) is one matmul over
all the clients of a chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from keyboard_fl.fl.sharding import AXIS, check_capacity
from keyboard_fl.typing import PyTree

__all__ = ["ClientFn", "ClientSlots", "for_each_client"]


class ClientSlots(NamedTuple):
    """The per-slot inputs of a round: ``K`` client slots, padding included."""

    inputs: jax.Array  # int32[K, S, B, T]: token ids of each local step
    targets: jax.Array  # int32[K, S, B, T]: next-token ids
    weights: jax.Array  # float32[K, S, B, T]; 0 marks padding tokens/steps
    keys: jax.Array  # PRNG keys [K]: one per slot, split from the round key before any sharding
    sampled: jax.Array  # bool[K]: False marks a padding slot (never aggregated; its chunk may be skipped)


# client_fn(params, one slot) -> (update, weight, stats): the slot adds
# weight * update to the sum; weight 0 excludes it (even a NaN update).
ClientFn = Callable[[PyTree, ClientSlots], tuple[PyTree, jax.Array, PyTree]]


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-slot vector ``[k]`` to broadcast against ``x [k, ...]``."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def _weighted_sum(client_fn: ClientFn, params: PyTree, slots: ClientSlots) -> tuple[PyTree, PyTree]:
    """``vmap(client_fn)`` over ``k`` slots; ``(Σ w·update, stats [k])``."""
    updates, w, stats = jax.vmap(client_fn, in_axes=(None, 0))(params, slots)
    # `where`, not a product alone: NaN * 0 is NaN.
    total = jax.tree.map(lambda x: jnp.sum(jnp.where(_bcast(w != 0, x), _bcast(w, x) * x, 0.0), axis=0), updates)
    return total, stats


def _chunked_sum(client_fn: ClientFn, params: PyTree, slots: ClientSlots, chunk: int | None) -> tuple[PyTree, PyTree]:
    """The vmap layout, or ``chunk`` slots at a time with empty chunks skipped."""
    k = slots.sampled.shape[0]
    if chunk is None or chunk >= k:
        return _weighted_sum(client_fn, params, slots)
    if k % chunk:
        raise ValueError(f"client_chunk={chunk} must divide the cohort capacity {k}")
    n = k // chunk
    chunked = jax.tree.map(lambda x: x.reshape((n, chunk) + x.shape[1:]), slots)
    first = jax.tree.map(lambda x: x[0], chunked)
    total_shape, stats_shape = jax.eval_shape(lambda c: _weighted_sum(client_fn, params, c), first)

    def zeros(shapes):
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(i, carry):
        acc, stats = carry
        part_slots = jax.tree.map(lambda x: x[i], chunked)
        part, part_stats = jax.lax.cond(
            jnp.any(part_slots.sampled),
            lambda _: _weighted_sum(client_fn, params, part_slots),
            lambda _: (zeros(total_shape), zeros(stats_shape)),
            None,
        )
        acc = jax.tree.map(jnp.add, acc, part)
        stats = jax.tree.map(lambda a, b: a.at[i].set(b), stats, part_stats)
        return acc, stats

    stats0 = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), stats_shape)
    total, stats = jax.lax.fori_loop(0, n, body, (zeros(total_shape), stats0))
    return total, jax.tree.map(lambda x: x.reshape((k,) + x.shape[2:]), stats)


def _sharded_sum(
    client_fn: ClientFn, params: PyTree, slots: ClientSlots, chunk: int | None, mesh: Mesh
) -> tuple[PyTree, PyTree]:
    """``_chunked_sum`` per device (slot ``j`` on device ``j % D``), ``psum`` of the sums."""
    d, k = mesh.size, slots.sampled.shape[0]
    check_capacity(k, d, chunk)
    # View [k] as [k/D, D] and shard the second axis: device i holds slots i, i+D, ...
    view = jax.tree.map(lambda x: x.reshape((k // d, d) + x.shape[1:]), slots)

    def per_device(params, local):
        local = jax.tree.map(lambda x: x[:, 0], local)
        total, stats = _chunked_sum(client_fn, params, local, chunk)
        return jax.lax.psum(total, AXIS), jax.tree.map(lambda x: x[:, None], stats)

    spec = P(None, AXIS)
    total, stats = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), spec),
        out_specs=(P(), spec),
        check_vma=False,  # the chunk loop's carry starts replicated and becomes per-device
    )(params, view)
    return total, jax.tree.map(lambda x: x.reshape((k,) + x.shape[2:]), stats)


def for_each_client(
    client_fn: ClientFn,
    params: PyTree,
    slots: ClientSlots,
    *,
    chunk: int | None = None,
    mesh: Mesh | None = None,
) -> tuple[PyTree, PyTree]:
    """Runs ``client_fn`` on every slot; returns ``(Σ_k w_k · update_k, stats [K])``.

    Args:
        client_fn: ``client_fn(params, slot) -> (update, weight, stats)`` for
          one client (no leading axis); must be traceable under ``vmap``.
        params: the server parameters, shared by every slot (not batched).
        slots: the padded cohort, leading axis ``K`` on every field.
        chunk: slots trained together; must divide ``K`` (per device). None:
          all at once.
        mesh: a 1-D ``"clients"`` mesh (:func:`keyboard_fl.fl.sharding.client_mesh`);
          ``K`` must be a multiple of ``mesh.size * chunk``. None or one
          device: no sharding (the same program as without a mesh).
    """
    if mesh is not None and mesh.size > 1:
        if tuple(mesh.axis_names) != (AXIS,):
            raise ValueError(f"mesh must be 1-D with axis {AXIS!r} (client_mesh()), got axes {mesh.axis_names}")
        return _sharded_sum(client_fn, params, slots, chunk, mesh)
    return _chunked_sum(client_fn, params, slots, chunk)
