"""Canary clients: extra clients whose update is a fixed random direction (Andrew et al., ICLR 2024).

One-shot empirical privacy estimation (arXiv:2302.03098) inserts, in the very
training run being measured, ``M`` canary clients. Canary ``j``'s update is
always ``C · u_j`` with ``u_j`` a uniformly random unit vector in parameter
space, drawn from its own key (stream ``CANARY_DIRECTIONS``, path ``j``), so
it never depends on data. Canary clients form a population of their own,
Poisson-sampled each round with the real users' ``q`` (stream
``CANARY_COHORT``, path = round); a sampled canary enters the round's sum of
clipped updates like a real user: clipped to the round's C (a no-op at the
fixed C), then noised with everything else.

Why the real users' accounted ε is unchanged: real users are sampled from the
``COHORT`` stream exactly as without canaries, their updates use the same keys
and their sum gets the same noise; the canary sum is an independent,
data-independent random vector added to it. For two datasets differing in
one real user the output is the real mechanism's output plus the same
independent vector, a post-processing, so the real users' (ε, δ) is the
accounted one. The denominator stays the real users' ``qN`` (the mechanism's
``expected_cohort``), so the sensitivity to one real user, ``C/(qN)``, is
unchanged too. Each canary is itself a client with sensitivity C sampled with
probability q, so the accounted ε also bounds what the model reveals about a
canary: that is what the audit measures.

After training, :func:`canary_cosines` scores directions, inserted or not,
against the released model deltas.

Schedules. A never-inserted canary also gets the rounds it *would* have been
sampled in: the same Poisson(q) draw each round over the held-out directions
(stream ``CANARY_COHORT``, path = round, 1). Given the in/out assignment, every
direction's schedule is then i.i.d. Bernoulli(q) per round, so schedules are
independent of the coins and an auditor may use them
(:meth:`CanaryPlan.schedules`). A canary never scheduled looks the same in and
out: conditioning on the schedule drops those and leaves the ones that can
show something, at the price of comparing with the unamplified ε
(:func:`keyboard_fl.privacy.empirical.unamplified_epsilon`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort_exact
from keyboard_fl.privacy.empirical import CanaryClientConfig
from keyboard_fl.rng import Stream, generator, key
from keyboard_fl.typing import PyTree

__all__ = [
    "CanaryPlan",
    "CanarySlots",
    "canary_cosines",
    "canary_direction",
    "canary_sum",
    "flatten",
]


class CanarySlots(NamedTuple):
    """The canary clients sampled in one round, padded to a static capacity (a field of ``CohortBatch``)."""

    base_key: jax.Array  # the run's CANARY_DIRECTIONS key; canary j's direction is from fold_in(base_key, j)
    ids: jax.Array  # int32[Kc]: canary indices (0 in padding slots)
    mask: jax.Array  # bool[Kc]: False marks a padding slot
    norm: jax.Array  # float32: L2 norm of a canary's update before clipping (the run's C)


def canary_direction(base_key: jax.Array, j: jax.Array | int, like: PyTree) -> PyTree:
    """Canary ``j``'s unit direction, shaped like ``like``: i.i.d. normals over all parameters, normalised."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(jax.random.fold_in(base_key, j), len(leaves))
    g = [jax.random.normal(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves)]
    scale = jax.lax.rsqrt(sum(jnp.sum(x * x) for x in g))
    return jax.tree.unflatten(treedef, [(x * scale).astype(jnp.result_type(y)) for x, y in zip(g, leaves)])


def canary_sum(slots: CanarySlots, like: PyTree, clip_norm: jax.Array | None) -> tuple[PyTree, jax.Array]:
    """``(Σ_sampled clip(norm · u_j, C), number sampled)``; ``clip_norm`` None (FedAvg): no clipping.

    Padding slots are skipped (no direction is drawn for them); adding them as
    zeros would give the same sum.
    """
    scale = slots.norm if clip_norm is None else jnp.minimum(slots.norm, clip_norm)

    def add(total, j):
        u = canary_direction(slots.base_key, j, like)
        return jax.tree.map(lambda t, x: t + scale * x, total, u)

    def one(total, slot):
        j, m = slot
        return jax.lax.cond(m, add, lambda t, _: t, total, j), None

    zeros = jax.tree.map(jnp.zeros_like, like)
    total, _ = jax.lax.scan(one, zeros, (slots.ids, slots.mask))
    return total, jnp.sum(slots.mask, dtype=jnp.int32)


class CanaryPlan:
    """A run's canary clients: which directions are inserted, and each round's Poisson draw among them."""

    def __init__(self, config: CanaryClientConfig, seed: int, sampling_prob: float, norm: float):
        self.config, self.seed, self.q, self.norm = config, seed, float(sampling_prob), float(norm)
        if config.assignment == "coin":  # an independent fair coin per direction (Steinke et al. 2023)
            coin = generator(seed, Stream.CANARY_COHORT, 1).random(config.count) < config.inserted_fraction
            if coin.all() or not coin.any():  # both sides are needed to audit; a re-draw would depend on the coins
                raise ValueError(f"canary_clients: all {config.count} coins fell on one side; use more canaries")
            self.inserted, self.held_out = np.flatnonzero(coin).astype(np.int32), np.flatnonzero(~coin).astype(np.int32)
        else:  # "half": a random subset of exactly `inserted` directions
            order = generator(seed, Stream.CANARY_COHORT).permutation(config.count)
            self.inserted = np.sort(order[: config.inserted]).astype(np.int32)  # the "in" canaries
            self.held_out = np.sort(order[config.inserted :]).astype(np.int32)  # never inserted ("out")
        self.capacity = cohort_capacity(len(self.inserted), self.q, multiple=8)

    def slots(self, round_: int) -> CanarySlots:
        """Round ``round_``'s sampled canary clients (same draw however often it is asked)."""
        k = key(self.seed, Stream.CANARY_COHORT, round_)
        idx, mask, _ = sample_cohort_exact(k, len(self.inserted), self.q, self.capacity)
        ids = np.where(np.asarray(mask), self.inserted[np.asarray(idx)], 0).astype(np.int32)
        return CanarySlots(
            key(self.seed, Stream.CANARY_DIRECTIONS),
            jnp.asarray(ids),
            jnp.asarray(mask),
            jnp.asarray(self.norm, jnp.float32),
        )

    def schedules(self, rounds: int) -> np.ndarray:
        """``bool[count, rounds]``: the rounds each direction is sampled in (inserted) or would be (held out).

        Inserted rows replay training's draw (:meth:`slots`); held-out rows are
        the same Poisson(q) draw over the held-out directions from their own
        key (``CANARY_COHORT``, path = round, 1), never used in training.
        """
        out = np.zeros((self.config.count, rounds), bool)
        cap = cohort_capacity(len(self.held_out), self.q, multiple=8)
        for r in range(rounds):
            s = self.slots(r)
            out[np.asarray(s.ids)[np.asarray(s.mask)], r] = True
            idx, mask, _ = sample_cohort_exact(
                key(self.seed, Stream.CANARY_COHORT, r, 1), len(self.held_out), self.q, cap
            )
            out[self.held_out[np.asarray(idx)[np.asarray(mask)]], r] = True
        return out


def flatten(tree: PyTree) -> np.ndarray:
    """All leaves of a parameter pytree as one float32 vector (the order of ``jax.tree.leaves``)."""
    return np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(tree)])


def canary_cosines(seed: int, count, like: PyTree, deltas: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``cos(u_j, deltas[t])`` for the canaries ``j`` and rows ``t``: float64 ``[len(ids), T]``.

    ``count``: an int (canaries ``0 … count-1``) or an array of canary ids.
    ``deltas``: ``[T, d]`` flattened model deltas (:func:`flatten` order).
    """
    ids = np.arange(count) if np.ndim(count) == 0 else np.asarray(count)
    deltas = jnp.asarray(np.atleast_2d(deltas), jnp.float32)
    norms = jnp.maximum(jnp.linalg.norm(deltas, axis=1), 1e-30)

    @jax.jit  # deltas are an argument, not a baked-in constant (XLA would constant-fold them slowly)
    def block(base, j, deltas, norms):
        u = jax.vmap(lambda i: jnp.concatenate([x.ravel() for x in jax.tree.leaves(canary_direction(base, i, like))]))
        return (u(j) @ deltas.T) / norms

    base = key(seed, Stream.CANARY_DIRECTIONS)
    out = [np.zeros((0, deltas.shape[0]))]
    for s in range(0, len(ids), chunk):
        part = ids[s : s + chunk]
        padded = np.zeros(chunk, np.int32)
        padded[: len(part)] = part
        out.append(np.asarray(block(base, jnp.asarray(padded), deltas, norms), np.float64)[: len(part)])
    return np.concatenate(out)
