"""Host-side pieces of the suggestion strip, shared by every engine (numpy only, no JAX).

The JAX engine (:mod:`keyboard_fl.suggest`) and the on-device ONNX runner
(:mod:`keyboard_fl.export.runner`) run the same word search; what happens on
the host around it lives here so that both use one definition and the runner
installs without JAX:

* :func:`split_context` — the text before the word being typed, and that partial word;
* :func:`prefix_tables` — which pieces may extend a beam that has spelled part of the
  typed prefix (prefix-constrained decoding);
* :func:`collect_words` — merge the search's segmentations into top-k distinct words.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Container

import numpy as np

from keyboard_fl import text as text_lib
from keyboard_fl.tokenizer import CONTINUATION, WORD_START, Tokenizer


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


def collect_words(
    tokenizer: Tokenizer,
    pieces: np.ndarray,
    scores: np.ndarray,
    k: int,
    prefix: str = "",
    dictionary: Container[str] | None = None,
) -> list[tuple[str, float]]:
    """Top-k distinct words (with log-probabilities) from one context's search output.

    With a ``dictionary`` (:class:`keyboard_fl.dictionary.Dictionary`) only real words are kept.
    A server calls this for every request of a batch, so it works on Python lists (``tolist`` once,
    not a numpy scalar per entry) and checks each distinct word once.
    """
    texts, word_re = tokenizer.piece_text, text_lib.WORD_RE
    piece_rows, score_rows = pieces.tolist(), scores.tolist()
    best: dict[str, float] = {}
    valid: dict[str, bool] = {}  # word -> a real word (regex, dictionary); segmentations repeat words
    for d, row in enumerate(score_rows):  # complete words only, in (depth, beam) order
        for b, s in enumerate(row):
            if not math.isfinite(s):
                continue
            word = "".join([texts[i] for i in piece_rows[d][b][: d + 1]])
            if not word.startswith(prefix):
                continue
            ok = valid.get(word)
            if ok is None:
                ok = valid[word] = (
                    bool(word) and bool(word_re.fullmatch(word)) and (dictionary is None or word in dictionary)
                )
            if not ok:
                continue
            best[word] = float(np.logaddexp(best[word], s)) if word in best else s
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


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


__all__ = ["SearchConfig", "collect_words", "prefix_tables", "split_context"]
