"""Whole-word suggestions from a next-piece model: the keyboard's suggestion strip.

The model scores SentencePiece pieces; the strip shows words. A word is a
word-start piece (``▁…``) followed by zero or more continuation pieces and then
any piece that is not a continuation (a new word, punctuation, ``</s>``). Its probability is

    P(word | ctx) = Π P(piece_i | ctx, piece_<i) · P(boundary | ctx, pieces)

and different segmentations of the same word are summed. :func:`word_search`
finds the most likely words with a beam search over pieces of fixed width and
depth, batched over many contexts in one jitted call, so the same code serves
evaluation (thousands of contexts) and the demo (one context).

A partial word constrains the search (prefix-constrained decoding): for a typed
prefix ``p`` every beam tracks how many characters of ``p`` it has spelled,
``ℓ``; a piece is allowed when its text agrees with ``p[ℓ:]``, and a word may
end only once all of ``p`` is spelled. The compatibility table
``allowed[ℓ, piece]`` is built on the host from the piece texts
(:func:`keyboard_fl.strip.prefix_tables`, shared with the ONNX runner).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from keyboard_fl.models import Params, merge
from keyboard_fl.strip import SearchConfig, collect_words, prefix_tables, split_context
from keyboard_fl.suggester import StripMixin
from keyboard_fl.tokenizer import BOS_ID, Tokenizer

NEG_INF = -1e30
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)  # rows of a batched suggestion call (Suggester.suggest_many), padded up


@functools.partial(jax.jit, static_argnames=("graphdef", "beam", "depth"))
def word_search(
    graphdef,
    params: Params,
    state,
    first_logits: jax.Array,
    allowed: jax.Array,
    advance: jax.Array,
    prefix_len: jax.Array,
    boundary: jax.Array,
    *,
    beam: int,
    depth: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search for whole words after N contexts.

    Args:
      state: model state after each context (pytree with leading axis N).
      first_logits: [N, V] next-piece logits at each context.
      allowed: [N, P+2, V] tables from :func:`prefix_tables`; advance: [V].
      prefix_len: [N] length of each context's typed prefix (0: next word).
      boundary: [V] pieces that end the word before them (``Tokenizer.ends_word``:
        anything but a continuation).

    Returns:
      pieces [N, depth, beam, depth] (piece ids of the beam at each depth,
      padded with 0), scores [N, depth, beam] (log P of the word, −inf when not
      a valid complete word).
    """
    model = merge(graphdef, params)
    n, v = first_logits.shape
    rows = jnp.arange(n)[:, None]
    lp = jax.nn.log_softmax(first_logits)
    score, piece = jax.lax.top_k(jnp.where(allowed[:, 0, :], lp, NEG_INF), beam)  # [N, W]
    ell = jnp.minimum(advance[piece], prefix_len[:, None])
    seq = jnp.zeros((n, beam, depth), jnp.int32).at[:, :, 0].set(piece)
    state = jax.tree.map(lambda s: jnp.repeat(s, beam, axis=0), state)
    all_pieces, all_scores = [], []
    for d in range(depth):
        logits, state = model.step(state, piece.reshape(-1))
        lp = jax.nn.log_softmax(logits).reshape(n, beam, v)
        end = jax.nn.logsumexp(jnp.where(boundary, lp, NEG_INF), axis=-1)
        done = (ell == prefix_len[:, None]) & (score > NEG_INF / 2)
        all_pieces.append(seq)
        all_scores.append(jnp.where(done, score + end, -jnp.inf))
        if d == depth - 1:
            break
        ok = jnp.take_along_axis(allowed, 1 + ell[:, :, None], axis=1)  # [N, W, V]
        ext = jnp.where(ok, score[:, :, None] + lp, NEG_INF).reshape(n, beam * v)
        score, flat = jax.lax.top_k(ext, beam)
        parent, piece = flat // v, flat % v
        ell = jnp.minimum(jnp.take_along_axis(ell, parent, axis=1) + advance[piece], prefix_len[:, None])
        seq = jnp.take_along_axis(seq, parent[:, :, None], axis=1).at[:, :, d + 1].set(piece)
        state = jax.tree.map(
            lambda s: s.reshape(n, beam, *s.shape[1:])[rows, parent].reshape(n * beam, *s.shape[1:]),  # noqa: B023
            state,
        )
    return jnp.stack(all_pieces, 1), jnp.stack(all_scores, 1)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _context_state(graphdef, params, ids: jax.Array, length: jax.Array):
    """State and next-piece logits after reading ``ids[:, :length]`` (right-padded)."""
    model = merge(graphdef, params)
    states = model.states(ids)
    last = jnp.maximum(length - 1, 0)
    state = jax.tree.map(lambda s: s[jnp.arange(ids.shape[0]), last], states)
    return state, model.logits(state[1])


class Suggester(StripMixin):
    """Top-k word suggestions for a text being typed, from one trained model (JAX).

    Implements :class:`keyboard_fl.suggester.Suggester`; the context state is
    ``(LSTM state, next-piece logits)`` after the context's pieces.
    """

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        params: Params,
        tokenizer: Tokenizer,
        config: SearchConfig = SearchConfig(),
        dictionary=None,
    ):
        self.graphdef, self.params, self.tokenizer, self.config = graphdef, params, tokenizer, config
        self.dictionary = dictionary  # keyboard_fl.dictionary.Dictionary: only real words reach the strip
        self.boundary = jnp.asarray(tokenizer.ends_word)
        self._tables: dict[str, tuple[jax.Array, jax.Array]] = {}
        self._host_tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def tables_for(self, prefix: str):
        """``(allowed, advance)`` device tables of a typed prefix (cached, bounded)."""
        if prefix not in self._tables:
            if len(self._tables) >= 256:  # bounded: typed prefixes are not kept around
                self._tables.pop(next(iter(self._tables)))
            allowed, advance = prefix_tables(self.tokenizer, prefix, self.config.max_prefix)
            self._tables[prefix] = (jnp.asarray(allowed), jnp.asarray(advance))
        return self._tables[prefix]

    split_context = staticmethod(split_context)

    def context_state(self, context: str):
        """``(state, logits)`` after the context's pieces (padded to a power-of-two bucket, so shapes are reused)."""
        ids = self.tokenizer.encode(context, eos=False)
        bucket = max(16, 1 << (len(ids) - 1).bit_length())
        padded = np.zeros((1, bucket), np.int32)
        padded[0, : len(ids)] = ids[-bucket:] if len(ids) > bucket else ids
        return _context_state(self.graphdef, self.params, jnp.asarray(padded), jnp.asarray([min(len(ids), bucket)]))

    def suggest_from(self, state, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        if len(prefix) > self.config.max_prefix:
            return []
        state, logits = state
        allowed, advance = self.tables_for(prefix)
        pieces, scores = word_search(
            self.graphdef,
            self.params,
            state,
            logits,
            allowed[None],
            advance,
            jnp.asarray([len(prefix)], jnp.int32),
            self.boundary,
            beam=self.config.beam,
            depth=self.config.depth,
        )
        return collect_words(self.tokenizer, np.asarray(pieces[0]), np.asarray(scores[0]), k, prefix, self.dictionary)

    def suggest_many(self, texts: list[str], k: int = 3) -> list[list[str]]:
        """``[suggest(t, k) for t in texts]`` in one batched context read and one batched search.

        The batch is padded to a power of two (and the contexts to one power-of-two
        length), so a server batching requests reuses a few compiled shapes
        (:data:`BATCH_SIZES`; more rows than the largest are searched in parts).
        """
        if len(texts) > BATCH_SIZES[-1]:
            m = BATCH_SIZES[-1]
            return [w for i in range(0, len(texts), m) for w in self.suggest_many(texts[i : i + m], k)]
        splits = [split_context(t) for t in texts]
        rows = [i for i, (_, p) in enumerate(splits) if len(p) <= self.config.max_prefix]
        out: list[list[str]] = [[] for _ in texts]
        if not rows:
            return out
        ids = [self.tokenizer.encode(splits[i][0], eos=False) for i in rows]
        n = next(b for b in BATCH_SIZES if b >= len(rows))
        bucket = max(16, 1 << (max(map(len, ids)) - 1).bit_length())
        padded, lengths = np.zeros((n, bucket), np.int32), np.ones(n, np.int32)
        for r, x in enumerate(ids):
            padded[r, : len(x)], lengths[r] = x, len(x)
        state, logits = _context_state(self.graphdef, self.params, jnp.asarray(padded), jnp.asarray(lengths))
        prefixes = [splits[i][1] for i in rows] + [""] * (n - len(rows))
        tables = [self.host_tables(p) for p in prefixes]
        pieces, scores = word_search(
            self.graphdef,
            self.params,
            state,
            logits,
            np.stack([t[0] for t in tables]),
            tables[0][1],
            np.asarray([len(p) for p in prefixes], np.int32),
            self.boundary,
            beam=self.config.beam,
            depth=self.config.depth,
        )
        pieces, scores = np.asarray(pieces), np.asarray(scores)
        for r, i in enumerate(rows):
            words = collect_words(self.tokenizer, pieces[r], scores[r], k, prefixes[r], self.dictionary)
            out[i] = [w for w, _ in words]
        return out

    def warm_batches(self, max_pieces: int = 32) -> None:
        """Compile :meth:`suggest_many` for every batch size and context bucket up to ``max_pieces`` pieces.

        A server calls this before it listens: a compile costs seconds, far above a key press's budget.
        """
        buckets = [b for b in (16, 32, 64, 128, 256, 512, 1024) if b <= max(16, max_pieces)]
        for n in BATCH_SIZES:
            for b in buckets:
                self.suggest_many(["the " * (b - 2) + "a"] * n)

    def host_tables(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """``(allowed, advance)`` numpy tables of a typed prefix (cached, bounded), for batched searches."""
        if prefix not in self._host_tables:
            if len(self._host_tables) >= 256:  # bounded: typed prefixes are not kept around
                self._host_tables.pop(next(iter(self._host_tables)))
            self._host_tables[prefix] = prefix_tables(self.tokenizer, prefix, self.config.max_prefix)
        return self._host_tables[prefix]


__all__ = ["SearchConfig", "Suggester", "word_search", "collect_words", "prefix_tables", "BOS_ID"]
