"""Named randomness: every random stream of a run derived from its one seed.

A run has one seed (``RunConfig.seed``, DESIGN §3). Each use of randomness
is a :class:`Stream`; a stream's randomness comes from the seed through one of
two helpers, never from a hand-picked constant:

- :func:`key`: a JAX key, ``fold_in(fold_in(key(seed), stream), *path)``
  (device-side draws: cohort sampling, round keys, noise, faults);
- :func:`sequence` / :func:`generator`: a numpy ``SeedSequence(seed,
  spawn_key=(stream, *path))`` (host-side draws: batch order, canaries).

``path`` names the member of the stream (round number, user index), so a
resumed run replays exactly the draws of an uninterrupted one, and switching
one feature on (faults, canaries) never shifts another stream.

The simulated population is the documented exception: each user is
``SeedSequence([seed, blake2b(user_id)])`` (:func:`user_sequence`), a pure
function of the seed and the user id, so that a user's messages do not
depend on which other users exist. Its entropy has no spawn key, so it can
never equal a stream's. Corpus split assignment is likewise a salted hash
(:func:`keyboard_fl.data.splits.hash_unit`).

Stream numbers are part of the results: append new streams, never renumber.
"""

from __future__ import annotations

import enum
import hashlib

import numpy as np

__all__ = ["Stream", "generator", "key", "sequence", "user_hash", "user_sequence"]

_U64 = (1 << 64) - 1


class Stream(enum.IntEnum):
    """The run's random streams (value = the id folded into the seed)."""

    INIT = 1  # model initialisation (train.run, the Flower server's start)
    PRETRAIN = 2  # batch order of public pretraining
    CENTRAL = 3  # batch order of the central (pooled) baseline
    COHORT = 4  # Poisson cohort of each round; path: round
    ROUND = 5  # the jitted round's key (split there into client-training and noise keys); path: round
    CLIENT_DATA = 6  # a sampled user's local batch order; path: round, user index
    FAULTS = 7  # dropouts of each round; path: round
    DEVICE_SPEED = 8  # simulated device speed (stragglers); path: user index
    CANARIES = 9  # canary secrets, reference secrets and carriers
    CANARY_PLACEMENT = 10  # positions of a carrier's canary copies; path: user hash
    NOISE = 11  # the Flower strategy's Gaussian noise; path: round
    FLOWER_CLIENT = 12  # on-device batch order and training key; path: round, user hash
    FLOWER_EVAL = 13  # nodes chosen for federated evaluation; path: round
    COMMUNITIES = 14  # the simulator's communities and their local names (data/register.py)
    BANDS = 15  # each user's band for cyclic participation (fl/participation.py)
    CANARY_DIRECTIONS = 16  # canary clients' random update directions (fl/canary_clients.py); path: canary index
    CANARY_COHORT = 17  # which canary clients are inserted, and their Poisson draw; path: round
    VALIDATION = 18  # users kept out of central training / pretraining to stop on; path: 0 central, 1 public


def _check(seed: int, path: tuple[int, ...]) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in path):
        raise ValueError(f"stream path must be integers >= 0, got {path!r}")


def key(seed: int, stream: Stream, *path: int):
    """A JAX key for ``stream`` (then each ``path`` entry, each < 2**32) of run ``seed``."""
    import jax

    _check(seed, path)
    if any(p >> 32 for p in path):
        raise ValueError(f"JAX stream path entries must be < 2**32, got {path!r}")
    k = jax.random.fold_in(jax.random.key(int(seed)), int(Stream(stream)))
    for p in path:
        k = jax.random.fold_in(k, int(p))
    return k


def sequence(seed: int, stream: Stream, *path: int) -> np.random.SeedSequence:
    """The numpy ``SeedSequence`` of ``stream`` (then ``path``) of run ``seed``."""
    _check(seed, path)
    return np.random.SeedSequence(int(seed), spawn_key=(int(Stream(stream)), *(int(p) for p in path)))


def generator(seed: int, stream: Stream, *path: int) -> np.random.Generator:
    """``numpy.random.default_rng(sequence(seed, stream, *path))``."""
    return np.random.default_rng(sequence(seed, stream, *path))


def user_hash(user_id: str) -> int:
    """A stable 64-bit number for a user id (blake2b; no hash randomization)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest(), "little")


def user_sequence(seed: int, user_id: str) -> np.random.SeedSequence:
    """The simulated population's per-user ``SeedSequence([seed, user_hash(user_id)])`` (see the module note)."""
    return np.random.SeedSequence([int(seed) & _U64, user_hash(user_id)])
