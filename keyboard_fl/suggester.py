"""The suggestion strip's one interface: what every suggester back-end implements.

A keyboard asks for the strip after each key press. Every back-end answers in
the same three steps, which this protocol makes public so that callers can
reuse work between key presses (the context before the word being typed does
not change while the word is typed):

1. ``split_context(text) -> (context, prefix)``: the text before the word being
   typed, and the partial word (``""`` at a word boundary: next-word prediction);
2. ``context_state(context) -> state``: the back-end's state after reading the
   context (an LSTM state and next-piece logits, or the last two words);
3. ``suggest_from(state, prefix, k) -> [(word, log P)]``: the ``k`` most
   likely words after that state that start with ``prefix``.

``suggest_scored(text, k)`` chains the three; ``suggest(text, k)`` keeps the
words. :class:`StripMixin` supplies those two from the three steps.

Back-ends: :class:`keyboard_fl.suggest.Suggester` (JAX),
:class:`keyboard_fl.export.runner.OnnxSuggester` (onnxruntime + numpy) and
:class:`keyboard_fl.eval.ngram.KneserNeyTrigram` (the n-gram baseline). Users
(:mod:`keyboard_fl.interactive`, :mod:`keyboard_fl.demo`,
:mod:`keyboard_fl.eval.ksr`) rely on this protocol only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["ContextState", "StripMixin", "Suggester"]

ContextState = Any  # opaque to callers: only the back-end that made it reads it


@runtime_checkable
class Suggester(Protocol):
    """A suggestion strip: top-k words for the text typed so far."""

    def split_context(self, text: str) -> tuple[str, str]:
        """(context, partial word being typed); ``""`` when ``text`` ends at a word boundary."""
        ...

    def context_state(self, context: str) -> ContextState:
        """The back-end's state after reading ``context`` (the first part of :meth:`split_context`)."""
        ...

    def suggest_from(self, state: ContextState, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely words starting with ``prefix`` after ``state``, with their log-probabilities."""
        ...

    def suggest_scored(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """``suggest_from(context_state(context), prefix, k)`` for ``split_context(text)``."""
        ...

    def suggest(self, text: str, k: int = 3) -> list[str]:
        """The words of :meth:`suggest_scored`, best first."""
        ...


class StripMixin:
    """``suggest_scored`` and ``suggest`` from the three steps of :class:`Suggester`."""

    def suggest_scored(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        context, prefix = self.split_context(text)  # type: ignore[attr-defined]
        return self.suggest_from(self.context_state(context), prefix, k)  # type: ignore[attr-defined]

    def suggest(self, text: str, k: int = 3) -> list[str]:
        return [w for w, _ in self.suggest_scored(text, k)]
