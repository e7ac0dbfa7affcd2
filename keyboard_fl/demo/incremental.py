"""Keystroke-to-keystroke reuse of the context's LSTM state.

While a word is being typed only the partial word changes; the context before
it — and so the model's state after reading it — stays the same. The plain
:class:`~keyboard_fl.suggest.Suggester` re-reads the whole context on every
key press (about a third of a suggestion's time with the default model);
:class:`IncrementalSuggester` remembers the state for the *last* context only
and recomputes it when a word boundary is crossed.

Remembering the context also skips re-tokenizing it: ``Tokenizer.encode``
hands SentencePiece a list of chunks, which it encodes on a fresh thread pool —
cheap on average but with multi-millisecond spikes on a busy machine.

It calls the very same jitted functions with the very same inputs as
``Suggester.suggest_scored``, so its answers are identical. Only the last
context (its text and state) is held, replaced at the next word boundary:
typed text is not accumulated.
"""

from __future__ import annotations

import threading

import jax.numpy as jnp
import numpy as np

from keyboard_fl import suggest as suggest_lib
from keyboard_fl.suggest import Suggester


class IncrementalSuggester:
    """Drop-in for ``Suggester.suggest``/``suggest_scored``, caching the last context's state."""

    def __init__(self, base: Suggester):
        self.base = base
        self._lock = threading.Lock()
        self._context_text: str | None = None
        self._state = None
        self.hits = self.misses = 0

    def _context(self, context: str):
        with self._lock:
            if context == self._context_text:
                self.hits += 1
                return self._state
        ids = self.base.tokenizer.encode(context, eos=False)
        # The same bucketing as Suggester.suggest_scored, so the compiled shapes are shared.
        bucket = max(16, 1 << (len(ids) - 1).bit_length())
        padded = np.zeros((1, bucket), np.int32)
        padded[0, : len(ids)] = ids[-bucket:] if len(ids) > bucket else ids
        out = suggest_lib._context_state(
            self.base.graphdef, self.base.params, jnp.asarray(padded), jnp.asarray([min(len(ids), bucket)])
        )
        with self._lock:
            self._context_text, self._state = context, out
            self.misses += 1
        return out

    def suggest_scored(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        b = self.base
        context, prefix = b.split_context(text)
        if len(prefix) > b.config.max_prefix:
            return []
        state, logits = self._context(context)
        allowed, advance = b._tables_for(prefix)
        pieces, scores = suggest_lib.word_search(
            b.graphdef, b.params, state, logits, allowed[None], advance,
            jnp.asarray([len(prefix)], jnp.int32), b.boundary,
            beam=b.config.beam, depth=b.config.depth,
        )
        return suggest_lib.collect_words(
            b.tokenizer, np.asarray(pieces[0]), np.asarray(scores[0]), k, prefix, getattr(b, "dictionary", None)
        )

    def suggest(self, text: str, k: int = 3) -> list[str]:
        return [w for w, _ in self.suggest_scored(text, k)]

    def split_context(self, text: str) -> tuple[str, str]:
        return self.base.split_context(text)

    def forget(self) -> None:
        """Drop the remembered context (e.g. when a message is sent)."""
        with self._lock:
            self._context_text = self._state = None


__all__ = ["IncrementalSuggester"]
