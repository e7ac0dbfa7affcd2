"""The uniform user interface (:class:`User`, :class:`UserSource`) and split rules.

Three disjoint sets of users:

* ``train``: private users whose data trains the model; the *last*
  ``test_fraction`` of each one's messages is held out in ``User.test``
  (at least one message stays in ``User.train`` when they have two or more);
* ``heldout``: whole users kept out of training (all messages in ``User.test``);
* ``public``: users never trained on privately, used only for the tokenizer and
  public pretraining (all messages in ``User.train``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol, runtime_checkable

Split = Literal["train", "heldout", "public"]
SPLITS: tuple[Split, ...] = ("train", "heldout", "public")


@dataclasses.dataclass(frozen=True)
class User:
    """One user's time-ordered messages, divided for training and evaluation."""

    user_id: str
    train: tuple[str, ...]  # messages used for training (public users: all of them)
    test: tuple[str, ...]  # messages used for evaluation (held-out users: all of them)


@runtime_checkable
class UserSource(Protocol):
    """Anything that yields users by split: the simulator and the corpus readers."""

    def users(self, split: Split) -> Iterator[User]: ...

    def num_users(self, split: Split) -> int: ...

    def describe(self) -> dict: ...


def split_train_test(messages: Sequence[str], test_fraction: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Hold out the last ``test_fraction`` of time-ordered ``messages``.

    The number held out is ``round(n * test_fraction)`` (half up), at least one
    when ``test_fraction > 0`` and ``n >= 2``, and never all of them: a user
    with two or more messages keeps at least one for training; a user with a
    single message keeps it for training.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(messages)
    if n < 2 or test_fraction == 0.0:
        return tuple(messages), ()
    k = min(n - 1, max(1, math.floor(n * test_fraction + 0.5)))
    return tuple(messages[: n - k]), tuple(messages[n - k :])


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How a corpus's users are assigned to splits (by a stable hash of seed and id)."""

    seed: int = 0  # salt of the hash: another seed gives another assignment
    public_fraction: float = 0.1  # expected share of users in the public split
    heldout_fraction: float = 0.1  # expected share of users held out whole for evaluation
    test_fraction: float = 0.2  # last share of each train user's messages held out

    def __post_init__(self) -> None:
        if self.public_fraction < 0 or self.heldout_fraction < 0 or self.public_fraction + self.heldout_fraction > 1:
            raise ValueError("public_fraction and heldout_fraction must be >= 0 and sum to <= 1")


def hash_unit(seed: int, user_id: str) -> float:
    """A stable number in [0, 1) for ``(seed, user_id)`` (blake2b, no hash randomization)."""
    d = hashlib.blake2b(f"{seed}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "big") / 2.0**64


def assign_split(user_id: str, cfg: SplitConfig) -> Split:
    """Deterministic split of a corpus user."""
    x = hash_unit(cfg.seed, user_id)
    if x < cfg.public_fraction:
        return "public"
    if x < cfg.public_fraction + cfg.heldout_fraction:
        return "heldout"
    return "train"


def make_user(user_id: str, messages: Sequence[str], split: Split, test_fraction: float) -> User:
    """Build the :class:`User` view of ``messages`` for ``split``."""
    if split == "train":
        tr, te = split_train_test(messages, test_fraction)
        return User(user_id, tr, te)
    if split == "heldout":
        return User(user_id, (), tuple(messages))
    if split == "public":
        return User(user_id, tuple(messages), ())
    raise ValueError(f"unknown split {split!r}")


def heldout_sample(source: UserSource, n: int) -> list[str]:
    """The first ``n`` non-blank held-out messages of ``source``, user by user in order."""
    out: list[str] = []
    for user in source.users("heldout"):
        out.extend(m for m in user.test if m.strip())
        if len(out) >= n:
            break
    return out[:n]
