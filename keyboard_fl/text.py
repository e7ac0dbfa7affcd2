"""Whole-word view of typed text, shared by the data, evaluation and suggestion code.

A keyboard suggests *words*, so every metric is counted over whole words
(DESIGN.md §3). This module fixes what a word is, once, for everybody:

* text is compared case-insensitively (``normalize``: NFKC + casefold), as the
  tokenizer's ``nmt_nfkc_cf`` normalisation does;
* a word is a run of letters or digits, with inner apostrophes (``don't``);
* a word is a *prediction target* when it starts the message or follows
  whitespace (the moment a keyboard shows next-word suggestions); punctuation,
  emoji and words glued to punctuation (``"(hi"``) are not targets.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import NamedTuple

WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def normalize(text: str) -> str:
    """NFKC + casefold: the form in which words are compared."""
    return unicodedata.normalize("NFKC", text).casefold()


def words(text: str) -> list[str]:
    """All words of ``text`` in normalized form, in order."""
    return WORD_RE.findall(normalize(text))


class Target(NamedTuple):
    """A next-word prediction target inside a normalized message."""

    start: int  # character offset of the word in the normalized text
    word: str  # the word itself (normalized)
    index: int  # position of the word in ``words(text)``


def targets(text: str) -> Iterator[Target]:
    """Yield the words of ``text`` that a keyboard would have to predict.

    ``text`` is normalized first; offsets refer to ``normalize(text)``.
    """
    norm = normalize(text)
    for i, m in enumerate(WORD_RE.finditer(norm)):
        s = m.start()
        if s == 0 or norm[s - 1].isspace():
            yield Target(s, m.group(0), i)
