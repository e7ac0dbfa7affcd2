"""Block-cyclic Poisson participation: the sampler DP-FTRL's accountants assume.

Choquette-Choo et al. 2023, "(Amplified) Banded Matrix Factorization: A unified
approach to private training" (arXiv:2306.08153), Algorithm 2: the ``N``
users are split, once and before training, into ``b`` bands; round ``t``
draws its cohort only from band ``t mod b``, each user of that band joining
independently with probability ``q_b``. Hence

* a user can take part only in rounds ``j, j+b, j+2b, …`` (``j`` = its band):
  any two of its participations are at least ``b`` rounds apart (``b``-min-sep)
  and it has at most ``ceil(T/b)`` of them in ``T`` rounds;
* within its rounds it is Poisson-sampled, which is what amplified BandMF's
  accounting (``jax_privacy.experimental.accounting.amplified_bandmf_event``)
  composes: ``ceil(T/b)`` Poisson-sampled Gaussian mechanisms with rate ``q_b``.

``b = 1`` is plain Poisson sampling (DP-FedAvg's sampler) and ``q_b = 1`` is
deterministic cyclic participation (every user of the band, every ``b``-th
round): (k, b)-min-sep without amplification, what BLT-DP-FTRL's sensitivity
assumes (McMahan, Xu, Zhang 2024, arXiv:2408.08868).

The bands are a balanced, seeded random partition (sizes differ by at most
one). Which partition is used does not change ε (it must only be fixed before
training and independent of the users' data); it is reproducible from the key.
The per-round draw uses the same padded layout as
:func:`keyboard_fl.fl.sampling.sample_cohort` and never truncates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keyboard_fl.fl.sampling import _round_up, cohort_capacity

__all__ = [
    "CyclicPoisson",
    "cyclic_capacity",
    "sample_cyclic_cohort",
    "sample_cyclic_cohort_exact",
    "user_bands",
]


@dataclass(frozen=True)
class CyclicPoisson:
    """Block-cyclic Poisson participation (arXiv:2306.08153, Alg. 2)."""

    # N: the number of users the bands partition.
    num_users: int
    # b: number of bands; round t samples from band t mod b, so a user's
    # participations are >= b rounds apart (b = 1: plain Poisson sampling).
    num_bands: int
    # q_b: Poisson rate inside the active band (1.0: the whole band joins,
    # deterministic cyclic participation; no amplification then).
    sampling_prob: float

    # keyboard_fl.privacy.Participation's name for this pattern (with min_separation = b).
    scheme = "cyclic"

    def __post_init__(self):
        for field in ("num_users", "num_bands"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CyclicPoisson.{field} must be an integer >= 1, got {v!r}")
        if self.num_bands > self.num_users:
            raise ValueError(
                f"CyclicPoisson.num_bands={self.num_bands} exceeds num_users={self.num_users}: "
                "some bands would be empty"
            )
        q = self.sampling_prob
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
            raise ValueError(f"CyclicPoisson.sampling_prob must be in (0, 1], got {q!r}")
        object.__setattr__(self, "num_users", int(self.num_users))
        object.__setattr__(self, "num_bands", int(self.num_bands))
        object.__setattr__(self, "sampling_prob", float(q))

    @classmethod
    def for_cohort(cls, num_users: int, num_bands: int, expected_cohort: float) -> CyclicPoisson:
        """The sampler whose rounds have ``expected_cohort`` users on average."""
        q = expected_cohort * num_bands / num_users
        if not 0.0 < q <= 1.0:
            raise ValueError(
                f"expected cohort {expected_cohort} with {num_bands} bands of ~{num_users / num_bands:.0f} "
                f"users needs q_b = {q:.4g}, outside (0, 1]: use fewer bands"
            )
        return cls(num_users, num_bands, q)

    @property
    def population(self) -> int:
        return self.num_users

    @property
    def neighbouring(self) -> str:
        return "add-remove one user"

    def relation(self):
        """dp-accounting's neighbouring relation: add or remove one user."""
        import dp_accounting  # only for accounting; the sampler itself never needs it

        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

    @property
    def min_separation(self) -> int:
        """Fewest rounds between two participations of one user (b)."""
        return self.num_bands

    @property
    def expected_cohort(self) -> float:
        """``q_b · N / b``: the fixed denominator of the average update."""
        return self.sampling_prob * self.num_users / self.num_bands

    @property
    def max_band_size(self) -> int:
        return -(-self.num_users // self.num_bands)

    def max_participations(self, rounds: int) -> int:
        """Most rounds one user can join in ``rounds`` rounds: ``ceil(T/b)``."""
        return -(-int(rounds) // self.num_bands)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CyclicPoisson:
        d = dict(d)
        scheme = d.pop("scheme", cls.scheme)
        if scheme != cls.scheme:
            raise ValueError(f"participation scheme {scheme!r} is not {cls.scheme!r} (block-cyclic Poisson)")
        return cls(**d)


def user_bands(key: jax.Array, num_users: int, num_bands: int) -> jax.Array:
    """int32[N]: each user's band, a balanced seeded random partition."""
    perm = jax.random.permutation(key, num_users)
    return jnp.zeros((num_users,), jnp.int32).at[perm].set(jnp.arange(num_users, dtype=jnp.int32) % num_bands)


def cyclic_capacity(p: CyclicPoisson, num_std: float = 6.0, multiple: int = 8) -> int:
    """Static padded cohort size covering a draw from the largest band."""
    return cohort_capacity(p.max_band_size, p.sampling_prob, num_std=num_std, multiple=multiple)


@partial(jax.jit, static_argnames=("num_bands", "capacity"))
def sample_cyclic_cohort(
    key: jax.Array,
    bands: jax.Array,
    round_index: int | jax.Array,
    num_bands: int,
    q: float | jax.Array,
    capacity: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Round ``round_index``'s cohort: Poisson(``q``) over band ``round_index mod b``.

    ``bands`` is :func:`user_bands`' output. Returns ``(indices, mask, count)``
    as :func:`keyboard_fl.fl.sampling.sample_cohort` does; if ``count >
    capacity`` call again with the same key and a larger capacity. The draw
    does not depend on ``capacity``.
    """
    active = jnp.asarray(round_index, jnp.int32) % num_bands
    coin = jax.random.bernoulli(key, q, bands.shape)
    included = coin & (bands == active)
    count = jnp.sum(included, dtype=jnp.int32)
    (indices,) = jnp.nonzero(included, size=capacity, fill_value=0)
    mask = jnp.arange(capacity) < count
    return jnp.where(mask, indices, 0).astype(jnp.int32), mask, count


def sample_cyclic_cohort_exact(
    key: jax.Array,
    bands: jax.Array,
    round_index: int,
    p: CyclicPoisson,
    capacity: int | None = None,
    multiple: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Host-side :func:`sample_cyclic_cohort` that grows ``capacity`` until the draw fits."""
    if bands.shape != (p.num_users,):
        raise ValueError(f"bands has shape {bands.shape}, expected ({p.num_users},) for {p}")
    capacity = capacity or cyclic_capacity(p, multiple=multiple)
    out = sample_cyclic_cohort(key, bands, round_index, p.num_bands, p.sampling_prob, capacity)
    n = int(out[2])
    if n > capacity:
        capacity = _round_up(n, multiple)
        out = sample_cyclic_cohort(key, bands, round_index, p.num_bands, p.sampling_prob, capacity)
        assert int(out[2]) == n
    return out
