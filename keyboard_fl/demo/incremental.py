"""Keystroke-to-keystroke reuse of the context's state, for any suggester.

While a word is being typed only the partial word changes; the context before
it — and so the back-end's state after reading it — stays the same. A plain
suggester re-reads the whole context on every key press (for the JAX model
about a third of a suggestion's time with the default model);
:class:`IncrementalSuggester` remembers the state for the *last* context only
and recomputes it when a word boundary is crossed.

Remembering the context also skips re-tokenizing it: ``Tokenizer.encode``
hands SentencePiece a list of chunks, which it encodes on a fresh thread pool —
cheap on average but with multi-millisecond spikes on a busy machine.

It uses only the public :class:`keyboard_fl.suggester.Suggester` protocol
(``split_context``, ``context_state``, ``suggest_from``) of the wrapped
back-end, in the same order as its ``suggest_scored``, so its answers are
identical. Only the last context (its text and state) is held, replaced at the
next word boundary: typed text is not accumulated.
"""

from __future__ import annotations

import threading

from keyboard_fl.suggester import ContextState, StripMixin, Suggester


class IncrementalSuggester(StripMixin):
    """A :class:`~keyboard_fl.suggester.Suggester` over ``base`` that caches the last context's state."""

    def __init__(self, base: Suggester):
        self.base = base
        self._lock = threading.Lock()
        self._context_text: str | None = None
        self._state: ContextState = None
        self.hits = self.misses = 0

    def split_context(self, text: str) -> tuple[str, str]:
        return self.base.split_context(text)

    def context_state(self, context: str) -> ContextState:
        with self._lock:
            if context == self._context_text:
                self.hits += 1
                return self._state
        out = self.base.context_state(context)
        with self._lock:
            self._context_text, self._state = context, out
            self.misses += 1
        return out

    def suggest_from(self, state: ContextState, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        return self.base.suggest_from(state, prefix, k)

    def forget(self) -> None:
        """Drop the remembered context (e.g. when a message is sent)."""
        with self._lock:
            self._context_text = self._state = None


__all__ = ["IncrementalSuggester"]
