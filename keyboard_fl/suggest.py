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
``allowed[ℓ, piece]`` is built on the host from the piece texts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from keyboard_fl import text as text_lib
from keyboard_fl.models import Params, merge
from keyboard_fl.tokenizer import BOS_ID, BOUNDARY, CONTINUATION, WORD_START, Tokenizer

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    beam: int = 8  # hypotheses kept per depth; > k so that segmentations and rivals survive
    depth: int = 3  # pieces per word; with a ~4k vocabulary almost every word is ≤ 3 pieces
    max_prefix: int = 24  # longest partial word a completion search accepts (characters)


def prefix_tables(tokenizer: Tokenizer, prefix: str, max_prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """(allowed [max_prefix+2, V] bool, advance [V] int32) for a typed ``prefix``.

    Row 0 lists the pieces that may start the word. Row ``1 + ℓ`` lists the
    continuation pieces that may follow a beam that has spelled ``prefix[:ℓ]``
    (ℓ is clipped at ``len(prefix)``, where every continuation is allowed).
    ``advance[v]`` is the number of characters piece v spells.
    """
    if len(prefix) > max_prefix:
        raise ValueError(f"prefix longer than max_prefix={max_prefix}: {prefix!r}")
    kinds, texts = tokenizer.piece_kinds, tokenizer.piece_text
    is_start, is_cont = kinds == WORD_START, kinds == CONTINUATION
    n, v = len(prefix), len(texts)
    allowed = np.zeros((max_prefix + 2, v), bool)
    allowed[1:] = is_cont
    advance = np.fromiter((len(t) for t in texts), np.int32, count=v)
    if n == 0:
        allowed[0] = is_start
        return allowed, advance
    by_first = tokenizer.pieces_by_first_char
    allowed[0, tokenizer.bare_start_ids] = True  # bare "▁": letters follow in continuations
    for i in by_first.get(prefix[0], ()):
        t = texts[i]
        if is_start[i] and (t.startswith(prefix) or prefix.startswith(t)):
            allowed[0, i] = True
    for ell in range(n):
        rest = prefix[ell:]
        allowed[1 + ell] = False
        for i in by_first.get(rest[0], ()):
            t = texts[i]
            if is_cont[i] and (t.startswith(rest) or rest.startswith(t)):
                allowed[1 + ell, i] = True
    return allowed, advance


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
            lambda s: s.reshape(n, beam, *s.shape[1:])[rows, parent].reshape(n * beam, *s.shape[1:]), state
        )
    return jnp.stack(all_pieces, 1), jnp.stack(all_scores, 1)


def collect_words(
    tokenizer: Tokenizer, pieces: np.ndarray, scores: np.ndarray, k: int, prefix: str = ""
) -> list[tuple[str, float]]:
    """Top-k distinct words (with log-probabilities) from one context's search output."""
    best: dict[str, float] = {}
    depth = pieces.shape[0]
    for d in range(depth):
        for b in range(pieces.shape[1]):
            s = float(scores[d, b])
            if not np.isfinite(s):
                continue
            word = tokenizer.word_of(pieces[d, b, : d + 1])
            if not word or not word.startswith(prefix) or not text_lib.WORD_RE.fullmatch(word):
                continue
            best[word] = float(np.logaddexp(best[word], s)) if word in best else s
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _context_state(graphdef, params, ids: jax.Array, length: jax.Array):
    """State and next-piece logits after reading ``ids[:, :length]`` (right-padded)."""
    model = merge(graphdef, params)
    states = model.states(ids)
    last = jnp.maximum(length - 1, 0)
    state = jax.tree.map(lambda s: s[jnp.arange(ids.shape[0]), last], states)
    return state, model.logits(state[1])


class Suggester:
    """Top-k word suggestions for a text being typed, from one trained model."""

    def __init__(self, graphdef: nnx.GraphDef, params: Params, tokenizer: Tokenizer, config: SearchConfig = SearchConfig()):
        self.graphdef, self.params, self.tokenizer, self.config = graphdef, params, tokenizer, config
        self.boundary = jnp.asarray(tokenizer.ends_word)
        self._tables: dict[str, tuple[jax.Array, jax.Array]] = {}

    def _tables_for(self, prefix: str):
        if prefix not in self._tables:
            if len(self._tables) >= 256:  # bounded: typed prefixes are not kept around
                self._tables.pop(next(iter(self._tables)))
            allowed, advance = prefix_tables(self.tokenizer, prefix, self.config.max_prefix)
            self._tables[prefix] = (jnp.asarray(allowed), jnp.asarray(advance))
        return self._tables[prefix]

    @staticmethod
    def split_context(text: str) -> tuple[str, str]:
        """(context, partial word): the word being typed, if the text ends inside one."""
        norm = text_lib.normalize(text)
        if not norm or norm[-1].isspace():
            return norm, ""
        cut = len(norm.rstrip()) - len(norm.split()[-1])
        head, last = norm[:cut], norm[cut:]
        if text_lib.WORD_RE.fullmatch(last) or (last.endswith("'") and text_lib.WORD_RE.fullmatch(last[:-1])):
            return head, last  # a trailing apostrophe is inside a word being typed ("don'")
        return norm + " ", ""

    def suggest(self, text: str, k: int = 3) -> list[str]:
        return [w for w, _ in self.suggest_scored(text, k)]

    def suggest_scored(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        context, prefix = self.split_context(text)
        if len(prefix) > self.config.max_prefix:
            return []
        ids = self.tokenizer.encode(context, eos=False)
        bucket = max(16, 1 << (len(ids) - 1).bit_length())
        padded = np.zeros((1, bucket), np.int32)
        padded[0, : len(ids)] = ids[-bucket:] if len(ids) > bucket else ids
        state, logits = _context_state(self.graphdef, self.params, jnp.asarray(padded), jnp.asarray([min(len(ids), bucket)]))
        allowed, advance = self._tables_for(prefix)
        pieces, scores = word_search(
            self.graphdef, self.params, state, logits, allowed[None], advance,
            jnp.asarray([len(prefix)], jnp.int32), self.boundary,
            beam=self.config.beam, depth=self.config.depth,
        )
        return collect_words(self.tokenizer, np.asarray(pieces[0]), np.asarray(scores[0]), k, prefix)


__all__ = ["SearchConfig", "Suggester", "word_search", "collect_words", "prefix_tables", "BOS_ID"]
