"""The keyboard's dictionary: only real words reach the suggestion strip.

The model spells words piece by piece, so its search can end on a spelling no
one writes ("ises", "you's"). Keyboards check candidates against a lexicon
(a public word list plus the words this user has typed, kept on the device);
so do we, in every back-end: the JAX :class:`~keyboard_fl.suggest.Suggester`,
:class:`~keyboard_fl.export.runner.OnnxSuggester` and the in-page search.

The public word list is the evaluation vocabulary of the run: the 10,000 most
frequent words of the *public* split (as the 10k word vocabulary of Gboard,
Hard et al. 2018, and Stack Overflow NWP, Reddi et al. 2021), so it carries no
training user's text (DESIGN §3). It is saved as ``words.txt`` (one normalized
word a line, most frequent first) in the run directory and in its export.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from keyboard_fl import text as text_lib

WORDS_NAME = "words.txt"
WORD_LIST_SIZE = 10_000  # as the 10k word vocabulary of Gboard / Stack Overflow NWP (the eval vocabulary)


def public_vocabulary(messages: Iterable[str], size: int = WORD_LIST_SIZE) -> list[str]:
    """The ``size`` most frequent normalized words of ``messages``, most frequent first (ties: first seen)."""
    counts = collections.Counter(w for m in messages for w in text_lib.words(m))
    return [w for w, _ in counts.most_common(size)]


@dataclasses.dataclass(frozen=True)
class Dictionary:
    """A set of normalized words; ``word in d`` is the filter every back-end applies."""

    public: frozenset[str]  # the run's public word list (no private text)
    user: frozenset[str] = frozenset()  # words this user typed: kept on the device only, never sent

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and (word in self.public or word in self.user)

    def __len__(self) -> int:
        return len(self.public | self.user)

    def with_user_text(self, text: str) -> Dictionary:
        """A new dictionary that also accepts the words of ``text`` (typed by this user)."""
        return dataclasses.replace(self, user=self.user | frozenset(text_lib.words(text)))

    @classmethod
    def load(cls, path: str | Path) -> Dictionary:
        """Read a ``words.txt``; a line that is not one normalized word is an error naming file and line."""
        return cls(frozenset(read_words(path)))


def read_words(path: str | Path) -> list[str]:
    """The words of a ``words.txt``, in order; a damaged file (not UTF-8, a line that is not one
    normalized word, empty) is a ValueError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word list not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: word list is not UTF-8 text (byte {e.start}; corrupt file?)") from None
    words = []
    for n, line in enumerate(text.splitlines(), 1):
        w = line.strip()
        if not w:
            continue
        if text_lib.normalize(w) != w or not text_lib.WORD_RE.fullmatch(w):
            raise ValueError(f"{path}:{n}: not a normalized word: {w[:40]!r}")
        words.append(w)
    if not words:
        raise ValueError(f"{path}: the word list is empty (truncated write?)")
    return words


def save_words(path: str | Path, words: Iterable[str]) -> None:
    """Write a word list atomically (one word a line)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    tmp.replace(path)


def run_word_list(run_dir: str | Path) -> list[str]:
    """The run's public word list: ``<run_dir>/words.txt``, rebuilt from the run's config when absent.

    The public split is a pure function of the run's config (seed, population or
    corpus), so the list is exactly the evaluation vocabulary of the run; it is
    cached in the run directory after the first rebuild.
    """
    run_dir = Path(run_dir)
    path = run_dir / WORDS_NAME
    if path.is_file():
        return read_words(path)
    from keyboard_fl.config import RunConfig

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {WORDS_NAME} and no config.json to rebuild it from")
    cfg = RunConfig.load(cfg_path)
    from keyboard_fl.sources import source_of

    source = source_of(cfg)
    words = public_vocabulary(m for u in source.users("public") for m in u.train)
    save_words(path, words)
    return words


def run_dictionary(run_dir: str | Path) -> Dictionary:
    """:class:`Dictionary` of a run's public word list (see :func:`run_word_list`)."""
    return Dictionary(frozenset(run_word_list(run_dir)))


__all__ = [
    "WORDS_NAME",
    "WORD_LIST_SIZE",
    "Dictionary",
    "public_vocabulary",
    "read_words",
    "run_dictionary",
    "run_word_list",
    "save_words",
]
