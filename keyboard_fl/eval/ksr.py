"""Keystroke savings rate (KSR) of a suggestion strip, by simulated typing.

Typing model (DESIGN.md §3), over ``m = text.normalize(message)``:

* The user types ``m`` left to right with a cursor ``i`` (characters of ``m``
  typed so far) and a keystroke count, both starting at 0.
* If ``i`` lies at the start of, or inside, a prediction target word
  ``w = m[s:e]`` (``text.targets``: a word that starts the message or follows
  whitespace), the keyboard shows ``suggest(m[:i])`` — next-word suggestions
  when ``i == s``, completions of the partial word ``m[s:i]`` otherwise — and
  only its first ``k`` (3) entries count. If ``w`` is among them the user taps
  it: **1 keystroke**, the cursor jumps to ``e``, and, as phone keyboards do,
  a space is inserted after the word: if ``m[e]`` is a space (``" "``) it is
  consumed too (``i = e + 1``). If ``m[e]`` is anything else (punctuation,
  newline) the user types it normally; the keyboard's auto-space is assumed
  to be removed at no cost (smart punctuation). Suggestions other than ``w``
  are ignored (no wrong taps, no partial-word insertion).
* Otherwise the user types the character ``m[i]``: 1 keystroke, ``i += 1``.
  Spaces, punctuation and non-target words (e.g. glued to punctuation) are
  always typed; ``suggest`` is not called there.
* ``suggest`` is called at most once per cursor position, and after a word
  is accepted not again for it.

Per message ``KSR = 1 − keystrokes / len(m)``; the aggregate is
``1 − Σ keystrokes / Σ len(m)`` (character-weighted). A perfect oracle saves
everything but one tap per target word; a strip that is never right has KSR 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from keyboard_fl import text as _text
from keyboard_fl.suggester import Suggester

Suggest = Callable[[str], Sequence[str]]  # a bare strip function, e.g. a test's oracle


def _strip(suggester: Suggester | Suggest) -> Suggest:
    """The strip of a :class:`~keyboard_fl.suggester.Suggester` (or a bare function, as is)."""
    if isinstance(suggester, Suggester):
        return suggester.suggest
    if callable(suggester):
        return suggester
    raise TypeError(f"need a Suggester or a function text -> words, got {type(suggester).__name__}")


def type_message(message: str, suggester: Suggester | Suggest, k: int = 3) -> dict:
    """Simulate typing one message; returns its counts (see module docstring)."""
    suggest = _strip(suggester)
    m = _text.normalize(message)
    spans = {}  # cursor position inside a target → end of that target
    for t in _text.targets(message):
        for pos in range(t.start, t.start + len(t.word)):
            spans[pos] = (t.word, t.start + len(t.word))
    i = keystrokes = accepted = calls = 0
    n = len(m)
    while i < n:
        span = spans.get(i)
        if span is not None:
            word, end = span
            calls += 1
            if word in list(suggest(m[:i]))[:k]:
                keystrokes += 1
                accepted += 1
                i = end + 1 if end < n and m[end] == " " else end
                continue
        keystrokes += 1
        i += 1
    return {
        "keystrokes": keystrokes,
        "characters": n,
        "ksr": 1.0 - keystrokes / n if n else float("nan"),
        "accepted_words": accepted,
        "suggest_calls": calls,
    }


def keystroke_savings(messages: Iterable[str], suggester: Suggester | Suggest, k: int = 3) -> dict:
    """KSR over ``messages`` with a suggester's strip (``suggester.suggest(text_so_far) -> words``).

    Returns ``ksr`` (aggregate, character-weighted; ``nan`` if no characters),
    ``keystrokes``, ``characters``, ``accepted_words``, ``suggest_calls``,
    ``messages`` (count) and ``per_message`` (list of ``type_message`` dicts,
    in input order).
    """
    suggest = _strip(suggester)
    per = [type_message(m, suggest, k) for m in messages]
    keys = sum(p["keystrokes"] for p in per)
    chars = sum(p["characters"] for p in per)
    return {
        "ksr": 1.0 - keys / chars if chars else float("nan"),
        "keystrokes": keys,
        "characters": chars,
        "accepted_words": sum(p["accepted_words"] for p in per),
        "suggest_calls": sum(p["suggest_calls"] for p in per),
        "messages": len(per),
        "per_message": per,
    }
