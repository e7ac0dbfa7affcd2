"""A streaming population: a user's rows are made only when a round samples the user.

Production federated learning reaches millions of devices, a few thousand a
round (Hard et al. 2018, arXiv:1811.03604; Xu et al. 2023, arXiv:2305.18465).
Here a round needs only its cohort, so nothing is made before it is sampled:

* :class:`StreamedRows` is the training split by index; ``rows.user(i)``
  generates (simulator) or reads (corpus index) user i, tokenizes and packs
  them (:func:`~keyboard_fl.train.examples.user_rows`). Memory O(1) per user not
  sampled, start-up independent of N. :class:`~keyboard_fl.train.examples.UserRows`
  is the eager form (every user made up front); both give the same rows.
* :func:`gather_cohort` turns the sampled indices into the round's padded
  local steps (zeros for padding or faulted slots).
* :func:`prefetched` prepares round r+1 on a background thread while round r
  trains: sampling depends only on the seed and the round, so the next cohort
  is known before the current round ends. Python generation and XLA overlap
  because the jitted round releases the GIL.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import jax.numpy as jnp
import numpy as np

from keyboard_fl.config import FederatedConfig
from keyboard_fl.data.access import SplitView
from keyboard_fl.fl.round import CohortBatch
from keyboard_fl.rng import Stream, generator
from keyboard_fl.tokenizer import Tokenizer
from keyboard_fl.train.examples import UserRows, as_batch, client_steps, user_rows

T = TypeVar("T")


class RowsByUser(Protocol):
    """Training rows by user index: :class:`StreamedRows` or the eager ``UserRows``."""

    def __len__(self) -> int: ...

    def user(self, i: int) -> np.ndarray: ...

    @property
    def width(self) -> int: ...  # ids per row: seq_len + 1


class StreamedRows:
    """The training users' rows, each user made (generated or read, tokenized, packed) when asked."""

    def __init__(self, users: SplitView, tokenizer: Tokenizer, seq_len: int) -> None:
        self.users, self.tokenizer, self.seq_len = users, tokenizer, seq_len

    def __len__(self) -> int:
        return len(self.users)

    @property
    def width(self) -> int:
        return self.seq_len + 1

    def user(self, i: int) -> np.ndarray:
        return user_rows(self.tokenizer, self.users.user(int(i)).train, self.seq_len)

    def pooled(self, max_users: int) -> np.ndarray:
        """The rows of the first ``max_users`` users, concatenated (the central baseline's sample)."""
        per = [self.user(i) for i in range(min(max_users, len(self)))]
        return np.concatenate(per) if per else np.zeros((0, self.seq_len + 1), np.int32)


def eager_rows(users: SplitView, tokenizer: Tokenizer, seq_len: int) -> UserRows:
    """Every user's rows made up front (the pre-streaming path; kept for comparison and small runs)."""
    return UserRows([user_rows(tokenizer, users.user(i).train, seq_len) for i in range(len(users))])


def client_rng(seed: int, round_: int, user: int) -> np.random.Generator:
    """The shuffling of user ``user``'s rows in round ``round_``."""
    return generator(seed, Stream.CLIENT_DATA, round_, int(user))


def gather_cohort(
    rows: RowsByUser, indices: np.ndarray, mask: np.ndarray, cfg: FederatedConfig, seed: int, round_: int
) -> CohortBatch:
    """Padded local steps [K, S, B, T] of the sampled users (zeros for padding slots).

    Only the users with ``mask`` set are made (``rows.user``): a streamed
    population generates exactly the round's cohort.
    """
    steps = cfg.local_epochs * -(-cfg.max_examples // cfg.batch_size)
    out = np.zeros((len(indices), steps, cfg.batch_size, rows.width), np.int32)
    for slot, (u, m) in enumerate(zip(indices, mask, strict=True)):
        if m:
            out[slot] = client_steps(
                rows.user(int(u)),
                batch_size=cfg.batch_size,
                max_examples=cfg.max_examples,
                epochs=cfg.local_epochs,
                rng=client_rng(seed, round_, int(u)),
            )
    b = as_batch(out)
    return CohortBatch(
        jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]), jnp.asarray(b["weights"]), jnp.asarray(mask)
    )


def prefetched(make: Callable[[int], T], rounds: Sequence[int], *, ahead: bool = True) -> Iterator[T]:
    """``make(r)`` for each round, the next one computed on a background thread while the caller uses this one.

    ``make`` must depend only on ``r`` (and fixed inputs), so the order of
    evaluation cannot change a result. ``ahead=False`` computes each in turn.
    At most two results are alive at once: memory stays O(cohort).
    """
    rounds = list(rounds)
    if not ahead or len(rounds) < 2:
        for r in rounds:
            yield make(r)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cohort-prefetch") as pool:
        nxt = pool.submit(make, rounds[0])
        for i in range(len(rounds)):
            cur = nxt.result()
            nxt = pool.submit(make, rounds[i + 1]) if i + 1 < len(rounds) else None
            try:
                yield cur
            except GeneratorExit:
                if nxt is not None:
                    nxt.cancel()
                raise
