"""Cohort sampling for federated rounds.

DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963) samples each round's cohort
by *Poisson sampling*: every one of the ``N`` users is included independently
with probability ``q``, so the realized cohort size is ``Binomial(N, q)``. The
privacy accountant (subsampled Gaussian mechanism, Mironov et al. 2019;
PLD/RDP in dp-accounting) assumes exactly this, so the sampler must never
truncate, resample or otherwise alter a draw.

To keep the round ``jit``-compiled once, the cohort is padded to a static
``capacity`` (see :func:`cohort_capacity`) with a boolean mask. If a draw ever
has more users than ``capacity`` (probability ~1e-9 at the default 6 std),
:func:`sample_cohort` returns the *true* count; the caller must then call it
again with the **same key** and a larger capacity. The draw depends only on
``(key, num_users, q)``, never on ``capacity``, so the retry yields the very
same cohort. :func:`sample_cohort_exact` does that loop on the host.

:func:`sample_fixed_cohort` draws a fixed-size cohort without replacement. It
is **not** Poisson sampling: use it only for non-DP FedAvg (Gboard-style,
Hard et al. 2018, arXiv:1811.03604) or with an accountant told the cohort is
fixed-size; never report a Poisson epsilon for it.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "cohort_capacity",
    "sample_cohort",
    "sample_cohort_exact",
    "sample_fixed_cohort",
]


def _round_up(x: int, multiple: int) -> int:
    return int(multiple * math.ceil(x / multiple))


def cohort_capacity(num_users: int, q: float, num_std: float = 6.0, multiple: int = 8) -> int:
    """Static padded cohort size for Poisson sampling with rate ``q``.

    ``ceil(qN + num_std * sqrt(N q (1-q)))`` rounded up to a multiple of
    ``multiple`` (at least ``multiple``), and never more than ``N`` rounded up.
    """
    if num_users <= 0:
        raise ValueError(f"num_users must be positive, got {num_users}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    mean = num_users * q
    std = math.sqrt(num_users * q * (1.0 - q))
    cap = _round_up(max(math.ceil(mean + num_std * std), 1), multiple)
    return min(cap, _round_up(num_users, multiple))


@partial(jax.jit, static_argnames=("num_users", "capacity"))
def sample_cohort(
    key: jax.Array, num_users: int, q: float | jax.Array, capacity: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Poisson-samples a cohort: each user included independently with prob. ``q``.

    Args:
        key: PRNG key; the only source of randomness.
        num_users: population size ``N`` (static).
        q: sampling probability.
        capacity: static padded size ``K`` (see :func:`cohort_capacity`).

    Returns:
        ``(indices, mask, count)``: ``indices`` int32[K] are the sampled user ids
        in increasing order, padded with 0; ``mask`` bool[K] marks the real
        entries; ``count`` (int32 scalar) is the *true* number of sampled users.
        If ``count > capacity`` the arrays hold only the first ``capacity``
        users: the draw is **not** usable as a cohort; call again with the same
        key and ``capacity >= count`` (or use :func:`sample_cohort_exact`).
    """
    included = jax.random.bernoulli(key, q, (num_users,))
    count = jnp.sum(included, dtype=jnp.int32)
    (indices,) = jnp.nonzero(included, size=capacity, fill_value=0)
    mask = jnp.arange(capacity) < count
    indices = jnp.where(mask, indices, 0).astype(jnp.int32)
    return indices, mask, count


def sample_cohort_exact(
    key: jax.Array, num_users: int, q: float, capacity: int | None = None, multiple: int = 8
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Host-side Poisson sampling that grows ``capacity`` until the draw fits.

    Same draw as :func:`sample_cohort` with the same key; never truncates.
    The returned arrays have length ``>= capacity`` (a multiple of
    ``multiple`` when grown), so a jitted round may recompile for the rare
    larger shape.
    """
    if capacity is None:
        capacity = cohort_capacity(num_users, q, multiple=multiple)
    indices, mask, count = sample_cohort(key, num_users, q, capacity)
    n = int(count)
    if n > capacity:
        capacity = _round_up(n, multiple)
        indices, mask, count = sample_cohort(key, num_users, q, capacity)
        assert int(count) == n and int(np.sum(np.asarray(mask))) == n
    return indices, mask, count


@partial(jax.jit, static_argnames=("num_users", "cohort_size"))
def sample_fixed_cohort(key: jax.Array, num_users: int, cohort_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fixed-size cohort, uniformly without replacement. NOT Poisson sampling.

    For non-DP FedAvg (the "fedavg" mode) or an accountant configured for
    fixed-size sampling. Returns ``(indices int32[cohort_size], mask
    all-True, count == cohort_size)``, the same layout as :func:`sample_cohort`.
    """
    if not 0 < cohort_size <= num_users:
        raise ValueError(f"cohort_size must be in [1, {num_users}], got {cohort_size}")
    indices = jax.random.choice(key, num_users, (cohort_size,), replace=False)
    indices = jnp.sort(indices).astype(jnp.int32)
    mask = jnp.ones((cohort_size,), bool)
    return indices, mask, jnp.asarray(cohort_size, jnp.int32)
