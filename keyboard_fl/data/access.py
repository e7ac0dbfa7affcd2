"""Random access to a split's users: the i-th user, made only when asked.

A streaming trainer needs the users a round samples, not the whole split.
A :class:`SplitView` is a split seen as a sequence: ``len(view)`` users,
``view.user(i)`` the i-th one (in the order ``source.users(split)`` yields
them) and ``view.user_id(i)`` its id, ideally without making its messages.

* the simulator (:class:`~keyboard_fl.data.population.Population`) generates
  user i from ``(seed, user id)``: O(1) memory and start-up for any N;
* a JSONL corpus keeps a byte-offset index of each user's lines
  (:class:`~keyboard_fl.data.corpus.JsonlCorpus`), never the text;
* a per-user directory keeps the list of user files.

A source without its own ``split_view`` is listed once (:class:`ListedView`),
which is the eager path. :class:`UserIds` gives the ids as a lazy sequence
(``draw_canaries`` indexes a million ids without building the list).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from .splits import Split, User, UserSource


@runtime_checkable
class SplitView(Protocol):
    """The users of one split as a sequence, made on demand."""

    def __len__(self) -> int: ...

    def user(self, i: int) -> User: ...

    def user_id(self, i: int) -> str: ...


class ListedView:
    """The eager fallback: every user of the split listed once, kept in memory."""

    def __init__(self, users: Sequence[User]) -> None:
        self._users = list(users)

    def __len__(self) -> int:
        return len(self._users)

    def user(self, i: int) -> User:
        return self._users[i]

    def user_id(self, i: int) -> str:
        return self._users[i].user_id


class FunctionView:
    """A view from ``n`` and two functions of the index (the simulator's and the indexes' form)."""

    def __init__(self, n: int, user: Callable[[int], User], user_id: Callable[[int], str]) -> None:
        self._n, self._user, self._user_id = n, user, user_id

    def __len__(self) -> int:
        return self._n

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self._n:
            raise IndexError(f"user index {i} out of range for a split of {self._n} users")
        return i

    def user(self, i: int) -> User:
        return self._user(self._check(i))

    def user_id(self, i: int) -> str:
        return self._user_id(self._check(i))


class UserIds(Sequence):
    """``view``'s user ids as a lazy sequence (no list of N strings is built)."""

    def __init__(self, view: SplitView) -> None:
        self._view = view

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._view.user_id(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._view.user_id(i)


def split_view(source: UserSource, split: Split) -> SplitView:
    """Random access to ``source``'s ``split``: its own view if it has one, else the listed users."""
    own = getattr(source, "split_view", None)
    if own is not None:
        return own(split)
    return ListedView(list(source.users(split)))
