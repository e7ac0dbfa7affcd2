"""A byte-offset index of a JSONL corpus's users: their lines located, never loaded.

One pass over the file(s) parses and validates every line (so a bad line is
reported with its ``file:line`` exactly as the streaming reader does) and keeps,
for each user of one split, where its lines are: file number, byte offset and
line number, three int64 arrays sorted by user. Reading a user seeks to its
lines and parses them again. Memory is the arrays (24 bytes a line) and the
split's user ids, never the text.
"""

from __future__ import annotations

import contextlib
from array import array
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .splits import Split, assign_split

if TYPE_CHECKING:
    from .corpus import BadLineReport, JsonlCorpus


class JsonlIndex:
    """Where each user of one split has its lines (users in order of first appearance)."""

    def __init__(
        self,
        corpus: JsonlCorpus,
        ids: list[str],
        starts: np.ndarray,
        files: np.ndarray,
        offsets: np.ndarray,
        lines: np.ndarray,
    ) -> None:
        self.corpus, self._ids, self._starts = corpus, ids, starts
        self._files, self._offsets, self._lines = files, offsets, lines

    @classmethod
    def build(cls, corpus: JsonlCorpus, split: Split, report: BadLineReport) -> JsonlIndex:
        from .corpus import CorpusError, _read_lines_at

        index_of: dict[str, int] = {}
        ids: list[str] = []
        user, file_no, offset, line_no = array("q"), array("q"), array("q"), array("q")
        for fi, path in enumerate(corpus.paths):
            with open(path, "rb") as f:
                for n, off, raw in _read_lines_at(f, corpus.config.max_line_bytes):
                    if raw is not None and not raw.strip():
                        continue  # blank lines between records are allowed in JSONL
                    try:
                        uid, _ = corpus._parse(path, n, raw)
                    except CorpusError as e:
                        corpus._bad(e, report)
                        continue
                    i = index_of.get(uid)
                    if i is None:
                        if assign_split(uid, corpus.config.split) != split:
                            continue
                        i = index_of[uid] = len(ids)
                        ids.append(uid)
                    user.append(i)
                    file_no.append(fi)
                    offset.append(off)
                    line_no.append(n)
        by_user = np.asarray(user, np.int64)
        order = np.argsort(by_user, kind="stable")  # a user's lines stay in file order
        starts = np.searchsorted(by_user[order], np.arange(len(ids) + 1))
        take = lambda a: np.asarray(a, np.int64)[order]
        return cls(corpus, ids, starts, take(file_no), take(offset), take(line_no))

    def __len__(self) -> int:
        return len(self._ids)

    def user_id(self, i: int) -> str:
        return self._ids[i]

    def index_of(self) -> dict[str, int]:
        """``{user_id: index}`` (built on demand)."""
        return {u: i for i, u in enumerate(self._ids)}

    def messages(self, i: int) -> list[str]:
        """User ``i``'s messages in file order, read from their offsets."""
        out: list[str] = []
        with contextlib.ExitStack() as stack:
            handles: dict[int, BinaryIO] = {}
            for j in range(int(self._starts[i]), int(self._starts[i + 1])):
                fi = int(self._files[j])
                path = self.corpus.paths[fi]
                if fi not in handles:
                    handles[fi] = stack.enter_context(open(path, "rb"))
                f = handles[fi]
                f.seek(int(self._offsets[j]))
                raw = f.readline(self.corpus.config.max_line_bytes + 2).rstrip(b"\n").rstrip(b"\r")
                out.append(self.corpus._parse(path, int(self._lines[j]), raw)[1])
        return out
