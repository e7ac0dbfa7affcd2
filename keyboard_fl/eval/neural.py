"""Keyboard metrics for a trained next-piece model.

For every held-out message: per-piece negative log-likelihood (for
perplexity) and, at every prediction target (:func:`keyboard_fl.text.targets`),
the model's top-3 whole words from :func:`keyboard_fl.suggest.word_search`.
Contexts are batched: one forward pass per batch of messages gives the state
before every target, then one jitted beam search serves thousands of targets.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keyboard_fl.models import Params, merge
from keyboard_fl.suggest import SearchConfig, collect_words, prefix_tables, word_search
from keyboard_fl.tokenizer import PAD_ID, Tokenizer


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(graphdef, params: Params, ids: jax.Array):
    """States, logits and per-position NLL for right-padded ids [B, T]."""
    model = merge(graphdef, params)
    states = model.states(ids[:, :-1])
    logits = model.logits(states[1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])
    return states, logits, nll


def predict_messages(
    graphdef,
    params: Params,
    tokenizer: Tokenizer,
    messages: Sequence[str],
    *,
    search: SearchConfig = SearchConfig(),
    k: int = 3,
    batch_size: int = 64,
    search_batch: int = 512,
    dictionary=None,
    scored: bool = False,
) -> tuple[list[list[tuple[str, list]]], float, int]:
    """Top-k predictions at each target of each message, and total piece NLL.

    Returns ``(per_message, nll_sum, num_pieces)`` where ``per_message[i]`` is a
    list of ``(target_word, predicted_words)`` in the message's order
    (``(word, log P)`` pairs instead of words when ``scored``).
    """
    encoded = [tokenizer.encode_with_targets(m) for m in messages]
    order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")
    nll_sum, num_pieces = 0.0, 0
    pending_state, pending_logits, pending_meta = [], [], []
    results: list[list[tuple[str, list[str]]]] = [[] for _ in messages]
    allowed, advance = prefix_tables(tokenizer, "", 0)
    boundary = jnp.asarray(tokenizer.ends_word)

    def flush():
        if not pending_meta:
            return
        n = len(pending_meta)
        size = max(64, 1 << (n - 1).bit_length())  # few distinct shapes → few compilations
        state = jax.tree.map(lambda *xs: np.concatenate(xs), *pending_state)
        logits = np.concatenate(pending_logits)
        pad = size - n
        state = jax.tree.map(lambda s: np.pad(s, [(0, pad)] + [(0, 0)] * (s.ndim - 1)), state)
        logits = np.pad(logits, [(0, pad), (0, 0)])
        pieces, scores = word_search(
            graphdef,
            params,
            state,
            logits,
            jnp.broadcast_to(allowed, (size, *allowed.shape)),
            jnp.asarray(advance),
            jnp.zeros((size,), jnp.int32),
            boundary,
            beam=search.beam,
            depth=search.depth,
        )
        pieces, scores = np.asarray(pieces), np.asarray(scores)
        for j, (mi, word) in enumerate(pending_meta):
            words = collect_words(tokenizer, pieces[j], scores[j], k, "", dictionary)
            results[mi].append((word, words if scored else [w for w, _ in words]))
        pending_state.clear(), pending_logits.clear(), pending_meta.clear()

    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        width = max(16, -(-width // 16) * 16)
        ids = np.full((batch_size, width), PAD_ID, np.int32)
        for r, i in enumerate(idx):
            ids[r, : len(encoded[i][0])] = encoded[i][0]
        states, logits, nll = _forward(graphdef, params, jnp.asarray(ids))
        mask = ids[:, 1:] != PAD_ID
        nll_sum += float(np.sum(np.asarray(nll) * mask))
        num_pieces += int(mask.sum())
        rows, cols, meta = [], [], []
        for r, i in enumerate(idx):
            for pos, word in encoded[i][1]:
                rows.append(r), cols.append(pos - 1), meta.append((i, word))
        if not meta:
            continue
        rows, cols = np.asarray(rows), np.asarray(cols)
        pending_state.append(jax.tree.map(lambda s: np.asarray(s)[rows, cols], states))  # noqa: B023 (used within this iteration)  # noqa: B023 (used within this iteration)
        pending_logits.append(np.asarray(logits)[rows, cols])
        pending_meta.extend(meta)
        if len(pending_meta) >= search_batch:
            flush()
    flush()
    return results, nll_sum, num_pieces
