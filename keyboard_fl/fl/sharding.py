"""Sharding the cohort axis of a round across devices (one program, many devices).

A round (:func:`keyboard_fl.fl.build_round`) trains ``K`` padded client slots
with ``vmap``. Given a mesh (``build_round(..., mesh=client_mesh())``) the
round becomes one SPMD program over a 1-D mesh named ``"clients"``:

* the server state and the round key are *replicated* on every device;
* the cohort's client axis is split across the devices with ``jax.shard_map``:
  slot ``j`` is trained on device ``j % D`` (strided, so the sampled clients,
  which the sampler puts first, are spread evenly and each device's
  ``client_chunk`` loop skips its own empty chunks);
* each device sums its clients' (clipped) deltas; a ``psum`` over
  ``"clients"`` makes the cohort sum, replicated;
* the per-client keys are split from the round key before sharding and the
  noise is drawn once from the same noise key after the ``psum``, so the
  sharded round computes the same function as the single-device one; only the
  float summation order differs (~1e-7 relative).

The capacity ``K`` must be a multiple of ``D * client_chunk`` (or of ``D``
without chunks): pass ``multiple=`` :func:`capacity_multiple` to
:func:`keyboard_fl.fl.cohort_capacity`. A mesh of one device is ignored, so
the single-device round is bit-identical to the unsharded one.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (set
before JAX starts) makes ``D`` host devices sharing the cores. ``import
keyboard_fl`` sets a fixed ``D`` (:mod:`keyboard_fl.hostdevices`), so by
default the round uses every core (up to ``D``) and its results do not depend
on the machine's core count.

Multi-host (untested here: only single-host multi-device has run). Call
``jax.distributed.initialize()`` in every process before anything else in
JAX; ``jax.devices()`` then lists the devices of all hosts and
:func:`client_mesh` spans them. Every process must run the same program with
the same seed: it samples and gathers the *whole* cohort on its host
(deterministic from the seed), and :func:`shard_cohort` / :func:`replicate`
(``jax.make_array_from_callback``; the sharded round calls them on its
inputs) copy to each host's devices only the slices they hold. Outputs are replicated, so every process can read the
metrics and checkpoint the parameters (write from process 0 only).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from keyboard_fl.hostdevices import FLAG, flag_in_effect, host_device_count
from keyboard_fl.typing import PyTree

AXIS = "clients"

__all__ = ["AXIS", "capacity_multiple", "check_capacity", "client_mesh", "replicate", "shard_cohort"]


def client_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"clients"``: over all of ``jax.devices()`` (None), the
    first ``devices`` of them (an int), or the given devices."""
    if devices is None:
        devs = jax.devices()
        _warn_if_fewer_host_devices(len(devs))
    elif isinstance(devices, int):
        avail = jax.devices()
        if not 1 <= devices <= len(avail):
            raise ValueError(
                f"asked for {devices} devices, {len(avail)} visible ({jax.default_backend()}); "
                "on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax"
            )
        devs = avail[:devices]
    else:
        devs = list(devices)
    return Mesh(np.asarray(devs), (AXIS,))


def _warn_if_fewer_host_devices(visible: int) -> None:
    """The default mesh on CPU is the package's fixed host device count; fewer means
    JAX started before ``import keyboard_fl`` could ask for them."""
    want = host_device_count()
    if jax.default_backend() == "cpu" and visible < want and flag_in_effect() is None:
        warnings.warn(
            f"{visible} CPU device(s) visible, not keyboard_fl's default {want}: JAX started before "
            "`import keyboard_fl` set XLA_FLAGS. Rounds use fewer cores and differ from the default by float "
            "rounding; import keyboard_fl before computing with JAX, or set "
            f"XLA_FLAGS={FLAG}={want} before starting Python",
            stacklevel=3,
        )


def capacity_multiple(num_devices: int, client_chunk: int | None = None) -> int:
    """What the cohort capacity must be a multiple of: ``D * client_chunk``."""
    return num_devices * (client_chunk or 1)


def check_capacity(capacity: int, num_devices: int, client_chunk: int | None = None) -> None:
    """Raises a ValueError saying how to fix a capacity the devices (and chunks) can't split."""
    m = capacity_multiple(num_devices, client_chunk)
    if capacity % m:
        chunk = f" x client_chunk {client_chunk}" if client_chunk else ""
        raise ValueError(
            f"cohort capacity {capacity} must be a multiple of {m} ({num_devices} devices{chunk}) to shard "
            f"the clients evenly; pad it: cohort_capacity(N, q, multiple={m}) gives {-(-capacity // m) * m}"
        )


def _put(x, sharding: NamedSharding) -> jax.Array:
    """Global array from a host value identical in every process; each process
    materialises only the shards its devices hold (works multi-host)."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf on every device of ``mesh`` (server state, round key)."""
    s = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _put(x, s), tree)


def shard_cohort(cohort: PyTree, mesh: Mesh) -> PyTree:
    """Splits a cohort's leading (client) axis across ``mesh`` in contiguous
    blocks, ``NamedSharding(mesh, P("clients"))``. The round re-lays them out
    strided on device (a small all-to-all of token ids)."""
    check_capacity(jax.tree.leaves(cohort)[0].shape[0], mesh.size)
    s = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(lambda x: _put(x, s), cohort)
