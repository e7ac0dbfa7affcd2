"""Simulated client faults: dropouts and stragglers, applied after sampling.

Real phones fail to report: they lose the network, the user picks the phone
up, the battery saver kills the job, or the device is simply too slow to
finish before the server closes the round. This module simulates two faults
on top of a Poisson-sampled cohort:

* **dropout** (``dropout_prob`` p): each sampled user independently fails to
  report, with probability p, drawn from an explicit PRNG key of its own stream
  (``keyboard_fl.rng.Stream.FAULTS``, folded with the round; so the same seed gives the same dropouts, and a resumed run
  replays them exactly);
* **stragglers** (``straggler_deadline`` D, simulated seconds): every user has
  a fixed device speed, a pure function of ``(seed, user id)``
  (:func:`device_seconds`: the simulated time the user's device needs for one
  round, log-normal with median :data:`MEDIAN_DEVICE_SECONDS`). Sampled users
  whose time exceeds D do not report. Slow devices are slow every round, as
  in a real fleet, so a tight deadline biases the model towards fast devices.

Faults only ever *remove* sampled users: the mask is computed after the
Poisson draw and the faulted users are masked out of the cohort (they do not
train, and contribute nothing to the aggregate).

Privacy accounting stays honest (DESIGN.md §3). The accountant keeps using
the Poisson sampling probability q and the aggregate keeps the fixed
denominator q·N:

* A user's contribution is still clipped to C, and a fault can only replace
  it by nothing; adding or removing one user still changes the noised sum by
  at most C, so the sensitivity is unchanged.
* A user now contributes with probability q·(1−p) (or 0 for a straggler),
  never more than q. Privacy amplification by sampling only gets stronger as
  the inclusion probability falls, so the ε computed for q is an upper bound:
  conservative, never optimistic. We do not claim the smaller ε, because
  real dropouts are not independent coin flips the server can vouch for.
* The denominator stays q·N (never the realized count of reporters), so the
  averaged update shrinks by about (1−p) under dropout; that is a utility
  cost, not a privacy one, and it keeps one user's data from changing the
  sensitivity through the count.

The same argument covers clients excluded for a non-finite update
(:mod:`keyboard_fl.fl.round`): exclusion removes a contribution, it cannot
add one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from keyboard_fl import rng
from keyboard_fl.rng import Stream

__all__ = ["FaultDraw", "MEDIAN_DEVICE_SECONDS", "DEVICE_SECONDS_SIGMA", "apply_faults", "device_seconds", "fault_key"]

MEDIAN_DEVICE_SECONDS = 30.0  # simulated time a median device needs for one round (local training + upload)
DEVICE_SECONDS_SIGMA = 0.5  # log-normal spread of device times: ~16% of devices are >1.65x the median


class FaultDraw(NamedTuple):
    """The cohort after faults, and what was lost."""

    mask: np.ndarray  # bool[K]: users that were sampled AND reported
    sampled: int  # users Poisson-sampled (before faults)
    dropped: int  # sampled users that dropped out
    stragglers: int  # sampled users that missed the deadline (not also counted as dropped)


def fault_key(seed: int, round_: int) -> jax.Array:
    """The fault PRNG key of a round: its own stream (:attr:`Stream.FAULTS`),
    so enabling faults leaves sampling, training and noise keys unchanged."""
    return rng.key(seed, Stream.FAULTS, round_)


def device_seconds(seed: int, users: np.ndarray) -> np.ndarray:
    """Simulated seconds each user's device needs for a round: a pure function of (seed, user id)."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    base = rng.key(seed, Stream.DEVICE_SPEED)
    z = np.asarray(jax.vmap(lambda u: jax.random.normal(jax.random.fold_in(base, u)))(jnp.asarray(users, jnp.uint32)))
    return MEDIAN_DEVICE_SECONDS * np.exp(DEVICE_SECONDS_SIGMA * z.astype(np.float64))


def apply_faults(
    key: jax.Array,
    indices: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int,
    dropout_prob: float = 0.0,
    straggler_deadline: float | None = None,
) -> FaultDraw:
    """Masks the sampled users that fail to report this round.

    Args:
        key: the round's fault key (:func:`fault_key`).
        indices: int[K] user ids of the padded cohort; mask: bool[K] sampled slots.
        seed: the run seed (device speeds are a function of it and the user id).
        dropout_prob: each sampled user independently fails with this probability.
        straggler_deadline: simulated seconds; users whose :func:`device_seconds`
          exceed it miss the round. ``None``: no deadline.
    """
    if not 0.0 <= dropout_prob <= 1.0:
        raise ValueError(f"dropout_prob must be in [0, 1], got {dropout_prob}")
    if straggler_deadline is not None and not (math.isfinite(straggler_deadline) and straggler_deadline > 0):
        raise ValueError(f"straggler_deadline must be > 0 seconds or None, got {straggler_deadline}")
    indices = np.asarray(indices)
    sampled = np.asarray(mask).astype(bool)
    slow = np.zeros_like(sampled)
    if straggler_deadline is not None:
        slow = sampled & (device_seconds(seed, indices) > straggler_deadline)
    drop = np.zeros_like(sampled)
    if dropout_prob > 0:
        # One uniform per user id (not per slot), so a user's fate does not depend on the padding.
        u = np.asarray(
            jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(jnp.asarray(indices, jnp.uint32))
        )
        drop = sampled & ~slow & (u < dropout_prob)
    reporting = sampled & ~slow & ~drop
    return FaultDraw(reporting, int(sampled.sum()), int(drop.sum()), int(slow.sum()))
