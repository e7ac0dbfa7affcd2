"""Bring your own corpus: streaming readers that implement ``UserSource``.

Two formats:

* :class:`JsonlCorpus`: JSON Lines ``{"user_id": str, "text": str}``; a user's
  messages in file order are their time order; users may interleave.
* :class:`DirectoryCorpus`: one UTF-8 text file per user (file stem = user id),
  one message per line.

Users go to splits by a stable hash of ``(seed, user_id)``
(:func:`~keyboard_fl.data.splits.assign_split`). Files are read line by line
(never whole); a line longer than ``max_line_bytes`` is detected without
reading it whole either. A bad line raises :class:`CorpusError` naming the
file, the 1-based line number and the problem; with ``skip_bad_lines=True`` it
is skipped and counted in :class:`BadLineReport` (``reader.report``) instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from .access import FunctionView, SplitView
from .splits import SPLITS, Split, SplitConfig, User, assign_split, make_user

# Reasons a line (or file) can be rejected.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
BAD_USER_ID = "bad_user_id"
BAD_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
TOO_LONG = "line_too_long"
BINARY_FILE = "binary_file"


class CorpusError(ValueError):
    """A corpus line or file is unusable; ``str(err)`` names ``file:line`` and the problem."""

    def __init__(self, path: str | Path, line: int | None, reason: str, detail: str) -> None:
        self.path, self.line, self.reason, self.detail = str(path), line, reason, detail
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}: {detail}")


@dataclasses.dataclass
class BadLineReport:
    """What ``skip_bad_lines=True`` skipped: counts per reason and the first examples."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> lines skipped
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # reason -> ["file:line: detail", ...]
    max_examples: int = 3  # examples kept per reason

    def add(self, err: CorpusError) -> None:
        self.counts[err.reason] = self.counts.get(err.reason, 0) + 1
        ex = self.examples.setdefault(err.reason, [])
        if len(ex) < self.max_examples:
            ex.append(str(err))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    """Options shared by the corpus readers."""

    split: SplitConfig = SplitConfig()  # user -> split assignment and test fraction
    skip_bad_lines: bool = False  # False: first bad line raises CorpusError; True: skip and count
    max_line_bytes: int = 65_536  # longer lines are bad (line_too_long)


def _read_lines(f: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line_no, raw_line_without_newline)``; ``None`` for an over-long line (consumed)."""
    for n, _, raw in _read_lines_at(f, max_bytes):
        yield n, raw


def _read_lines_at(f: IO[bytes], max_bytes: int) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(line_no, byte_offset, raw_line_without_newline)``; ``None`` for an over-long line (consumed)."""
    n, pos = 0, f.tell()
    while True:
        raw = f.readline(max_bytes + 2)
        if not raw:
            return
        n += 1
        start, pos = pos, pos + len(raw)
        if len(raw.rstrip(b"\r\n")) > max_bytes:
            while not raw.endswith(b"\n"):  # drain the rest of the long line in chunks
                raw = f.readline(1 << 16)
                if not raw:
                    break
                pos += len(raw)
            yield n, start, None
            continue
        yield n, start, raw.rstrip(b"\n").rstrip(b"\r")


def _decode(path: Path, n: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(path, n, INVALID_UTF8, f"byte {e.start + 1} is not valid UTF-8") from None


class _Reader:
    """Shared split logic; subclasses provide ``_scan(split_filter)``."""

    def __init__(self, config: ReaderConfig) -> None:
        self.config = config
        self.report = BadLineReport()  # bad lines of the most recent pass
        self._counts: dict[str, int] | None = None

    def _bad(self, err: CorpusError, report: BadLineReport) -> None:
        if not self.config.skip_bad_lines:
            raise err
        report.add(err)

    def _scan(self, want: Split | None, report: BadLineReport) -> Iterator[tuple[str, list[str]]]:
        raise NotImplementedError

    def users(self, split: Split) -> Iterator[User]:
        """Users of ``split`` in order of first appearance (re-reads the corpus)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        report = BadLineReport()
        for uid, msgs in self._scan(split, report):
            yield make_user(uid, msgs, split, self.config.split.test_fraction)
        self.report = report

    def num_users(self, split: Split) -> int:
        if self._counts is None:
            counts = dict.fromkeys(SPLITS, 0)
            report = BadLineReport()
            for uid, _ in self._scan(None, report):
                counts[assign_split(uid, self.config.split)] += 1
            self._counts, self.report = counts, report
        return self._counts[split]

    def _describe(self, kind: str, path: str) -> dict:
        return {
            "kind": kind,
            "path": path,
            "seed": self.config.split.seed,
            "config": dataclasses.asdict(self.config),
            "users": {s: self.num_users(s) for s in SPLITS},
            "bad_lines": self.report.as_dict(),
        }


class JsonlCorpus(_Reader):
    """``{"user_id", "text"}`` JSON Lines file(s) as a ``UserSource``."""

    def __init__(self, paths: str | Path | Sequence[str | Path], config: ReaderConfig = ReaderConfig()) -> None:
        super().__init__(config)
        self.paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]

    def _parse(self, path: Path, n: int, raw: bytes | None) -> tuple[str, str]:
        if raw is None:
            raise CorpusError(path, n, TOO_LONG, f"line longer than max_line_bytes={self.config.max_line_bytes}")
        line = _decode(path, n, raw)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(path, n, INVALID_JSON, e.msg + f" (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise CorpusError(path, n, NOT_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
        for key in ("user_id", "text"):
            if key not in obj:
                raise CorpusError(path, n, MISSING_FIELD, f"missing field {key!r}")
        uid, text = obj["user_id"], obj["text"]
        if not isinstance(uid, str) or not uid:
            raise CorpusError(path, n, BAD_USER_ID, f"user_id must be a non-empty string, got {uid!r}"[:200])
        if not isinstance(text, str):
            raise CorpusError(path, n, BAD_TEXT, f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise CorpusError(path, n, EMPTY_TEXT, "text is empty")
        return uid, text

    def _scan(self, want: Split | None, report: BadLineReport) -> Iterator[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        split_of: dict[str, Split] = {}
        for path in self.paths:
            with open(path, "rb") as f:
                for n, raw in _read_lines(f, self.config.max_line_bytes):
                    if raw is not None and not raw.strip():
                        continue  # blank lines between records are allowed in JSONL
                    try:
                        uid, text = self._parse(path, n, raw)
                    except CorpusError as e:
                        self._bad(e, report)
                        continue
                    s = split_of.get(uid)
                    if s is None:
                        s = split_of[uid] = assign_split(uid, self.config.split)
                    if want is None:
                        groups.setdefault(uid, [])
                    elif s == want:
                        groups.setdefault(uid, []).append(text)
        yield from groups.items()

    def describe(self) -> dict:
        return self._describe("jsonl", ",".join(map(str, self.paths)))

    def split_view(self, split: Split) -> SplitView:
        """``split``'s users by index from a byte-offset index of their lines (one pass; text read per user).

        Same users, order and messages as :meth:`users`; a bad line raises (or is
        skipped and counted in ``self.report``) while the index is built.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        report = BadLineReport()
        index = JsonlIndex.build(self, split, report)
        self.report = report
        tf = self.config.split.test_fraction
        return FunctionView(
            len(index), lambda i: make_user(index.user_id(i), index.messages(i), split, tf), index.user_id
        )


class DirectoryCorpus(_Reader):
    """A directory with one UTF-8 text file per user (stem = user id, one message per line)."""

    def __init__(self, directory: str | Path, config: ReaderConfig = ReaderConfig(), pattern: str = "*") -> None:
        super().__init__(config)
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CorpusError(self.directory, None, "not_a_directory", "corpus directory does not exist")
        self.pattern = pattern

    def files(self) -> list[Path]:
        """User files in a stable (sorted) order; hidden files and subdirectories are ignored."""
        return sorted(p for p in self.directory.glob(self.pattern) if p.is_file() and not p.name.startswith("."))

    def _read_file(self, path: Path, report: BadLineReport) -> list[str]:
        msgs: list[str] = []
        with open(path, "rb") as f:
            head = f.read(8192)
            if b"\x00" in head:
                self._bad(
                    CorpusError(
                        path, None, BINARY_FILE, "file contains NUL bytes; expected UTF-8 text, one message per line"
                    ),
                    report,
                )
                return msgs
            f.seek(0)
            for n, raw in _read_lines(f, self.config.max_line_bytes):
                try:
                    if raw is None:
                        raise CorpusError(
                            path, n, TOO_LONG, f"line longer than max_line_bytes={self.config.max_line_bytes}"
                        )
                    text = _decode(path, n, raw)
                    if not text.strip():
                        raise CorpusError(path, n, EMPTY_TEXT, "empty line")
                except CorpusError as e:
                    self._bad(e, report)
                    continue
                msgs.append(text)
        return msgs

    def _scan(self, want: Split | None, report: BadLineReport) -> Iterator[tuple[str, list[str]]]:
        for path, msgs in self._scan_files(want, report):
            yield path.stem, msgs

    def _scan_files(self, want: Split | None, report: BadLineReport) -> Iterator[tuple[Path, list[str]]]:
        seen: set[str] = set()
        for path in self.files():
            uid = path.stem
            if uid in seen:
                raise CorpusError(path, None, "duplicate_user", f"another file already has user id {uid!r}")
            seen.add(uid)
            if want is None or assign_split(uid, self.config.split) == want:
                msgs = self._read_file(path, report)
                if msgs:  # a user left with no usable message is no user
                    yield path, msgs

    def describe(self) -> dict:
        return self._describe("directory", str(self.directory))

    def split_view(self, split: Split) -> SplitView:
        """``split``'s users by index: the list of their files (each file read again when its user is asked for)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        report = BadLineReport()
        paths = [path for path, _ in self._scan_files(split, report)]
        self.report = report
        tf = self.config.split.test_fraction

        def user(i: int) -> User:
            return make_user(paths[i].stem, self._read_file(paths[i], BadLineReport()), split, tf)

        return FunctionView(len(paths), user, lambda i: paths[i].stem)


# A byte-offset index of a JSONL corpus's users: their lines located, never loaded.
#
# One pass over the file(s) parses and validates every line (so a bad line is
# reported with its ``file:line`` exactly as the streaming reader does) and keeps,
# for each user of one split, where its lines are: file number, byte offset and
# line number, three int64 arrays sorted by user. Reading a user seeks to its
# lines and parses them again. Memory is the arrays (24 bytes a line) and the
# split's user ids, never the text.
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
