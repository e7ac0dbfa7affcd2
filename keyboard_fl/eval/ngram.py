"""Word trigram baseline with interpolated modified Kneser–Ney smoothing.

DESIGN.md §3 asks for an n-gram baseline beside every model. This is the
classic one: a word trigram model with *interpolated modified Kneser–Ney*
smoothing (Chen & Goodman, "An Empirical Study of Smoothing Techniques for
Language Modeling", Harvard TR-10-98, 1998, §3.6 / eq. 17 and 26).

Event space and padding
    Each message is ``text.words(message)``, mapped to ``<unk>`` outside the
    vocabulary, padded on the left with two ``<s>`` and closed with ``</s>``:
    ``<s> <s> w1 … wn </s>``. Every predicted token (``w1 … wn, </s>``) thus
    has a full two-word context. The distribution is over
    ``V' = vocab ∪ {</s>, <unk>}``; ``<s>`` is never predicted (probability 0).
    ``prob`` of a word outside the vocabulary is ``P(<unk> | context)``.

Estimates (``c`` raw counts, ``N1+(• v w)`` number of distinct left words)
    P3(w|u v) = max(c(uvw) − D3(c), 0) / c(uv•) + γ3(uv) · P2(w|v)
    P2(w|v)   = max(N1+(•vw) − D2(·), 0) / Σ_w N1+(•vw) + γ2(v) · P1(w)
    P1(w)     = max(N1+(•w) − D1(·), 0) / Σ_w N1+(•w) + γ1 / |V'|
    γ(h)      = (D(1)·N1(h•) + D(2)·N2(h•) + D(3+)·N3+(h•)) / total(h)
An unseen context backs off entirely to the next lower order (γ = 1). Each
order has three discounts from its own count-of-counts n1…n4:
``Y = n1/(n1+2 n2)``, ``D(1) = 1 − 2Y n2/n1``, ``D(2) = 2 − 3Y n3/n2``,
``D(3+) = 3 − 4Y n4/n3`` — with fallbacks (0.5, 1, 1.5) where the counts are
too sparse to estimate them (tiny corpora), so that every discount lies in
``(0, k)`` and every token of ``V'`` keeps a positive probability. The distribution sums to 1 for every context, seen or not.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from keyboard_fl import text as _text
from keyboard_fl.suggester import StripMixin

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIALS = (UNK, EOS, BOS)  # ids 0, 1, 2; vocabulary words follow, sorted
_UNK, _EOS, _BOS = 0, 1, 2
_FIRST_WORD = 3
MIN_DISCOUNT = 0.05  # keeps γ1 > 0, hence P(w) > 0 for every w in V'
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # for counts too sparse to estimate D(k)
_CACHE_LIMIT = 1 << 16  # entries per cache before it is cleared

Discounts = tuple[float, float, float]  # D(1), D(2), D(3+)


def modified_kn_discounts(counts: np.ndarray) -> Discounts:
    """Chen & Goodman's three discounts from the positive ``counts`` of one order.

    ``D(k)`` needs ``n_1, n_k, n_{k+1} > 0``; where that fails, or the
    estimate falls outside ``(0, k)`` (tiny corpora), the discount falls back
    to ``FALLBACK_DISCOUNTS[k-1]`` (KenLM's ``--discount_fallback`` values).
    """
    counts = np.asarray(counts)
    n = [int(np.count_nonzero(counts == i)) for i in (1, 2, 3, 4)]
    out = []
    for k in (1, 2, 3):
        d = FALLBACK_DISCOUNTS[k - 1]
        if n[k - 1] > 0 and n[k] > 0 and n[0] > 0:
            y = n[0] / (n[0] + 2 * n[1])
            est = k - (k + 1) * y * n[k] / n[k - 1]
            if 0 < est < k:
                d = est
        out.append(float(max(d, MIN_DISCOUNT)))
    return tuple(out)  # type: ignore[return-value]


def _discounted(counts: np.ndarray, d: Discounts) -> np.ndarray:
    """max(c − D(c), 0), with 0 where c == 0."""
    counts = np.asarray(counts, dtype=np.float64)
    dk = np.asarray(d)[np.clip(counts, 1, 3).astype(np.int64) - 1]
    return np.where(counts > 0, np.maximum(counts - dk, 0.0), 0.0)


def _gammas(counts: np.ndarray, starts: np.ndarray, totals: np.ndarray, d: Discounts) -> np.ndarray:
    """Back-off weight γ(h) for each context segment of ``counts``."""
    dk = np.asarray(d)[np.clip(counts, 1, 3).astype(np.int64) - 1]
    return np.add.reduceat(dk, starts) / totals


class _Level:
    """One order, grouped by context: ``seg[ctx] = (sorted ids, max(c − D, 0) / total, γ)``."""

    def __init__(self, ctx_keys: list, ids: np.ndarray, counts: np.ndarray, starts: np.ndarray, d: Discounts):
        totals = np.add.reduceat(counts.astype(np.float64), starts)
        gammas = _gammas(counts, starts, totals, d)
        ends = np.append(starts[1:], len(ids))
        disc = _discounted(counts, d)
        self.d = d
        self.seg = {
            key: (ids[s:e], disc[s:e] / t, float(g)) for key, s, e, t, g in zip(ctx_keys, starts, ends, totals, gammas)
        }

    def apply(self, key, lower: np.ndarray, cand: np.ndarray | None = None) -> np.ndarray:
        """Interpolate this order onto ``lower`` (probs of ``cand`` ids, or dense if None)."""
        seg = self.seg.get(key)
        if seg is None:
            return lower
        ids, alpha, g = seg
        if cand is None:
            out = g * lower
            out[ids] += alpha
            return out
        pos = np.searchsorted(ids, cand)
        pos_c = np.minimum(pos, len(ids) - 1)
        hit = ids[pos_c] == cand
        return g * lower + np.where(hit, alpha[pos_c], 0.0)


class KneserNeyTrigram(StripMixin):
    """Immutable word trigram LM (interpolated modified Kneser–Ney); build with ``fit``.

    Contexts are sequences of previous words (``text.words(msg)[:i]``); an
    empty context means the start of a message. Only the last two words are
    used. Per-context results of ``top_k`` and ``complete`` are cached inside
    the instance (results only, bounded); the model itself never changes.
    """

    def __init__(
        self, tokens: list[str], levels: tuple[_Level, _Level], p_uni: np.ndarray, unigram_discounts: Discounts
    ):
        self.tokens = tokens  # id → token: SPECIALS, then the sorted vocabulary
        self._words = tokens[_FIRST_WORD:]
        self._ids = {w: i for i, w in enumerate(tokens)}
        self._tri, self._bi = levels
        self._uni = p_uni
        self.discounts = {1: unigram_discounts, 2: self._bi.d, 3: self._tri.d}
        allowed = np.arange(_FIRST_WORD, len(tokens))
        self._uni_order = allowed[np.lexsort((allowed, -p_uni[allowed]))]  # by (−P1, id)
        self._topk_cache: dict = {}
        self._complete_cache: dict = {}

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, messages: Iterable[str], *, vocab: set[str] | None = None, min_count: int = 1) -> KneserNeyTrigram:
        """Count trigrams over ``text.words`` of each message and smooth them.

        ``vocab`` (normalized words) fixes the vocabulary exactly, including
        words never seen in training; otherwise it is every training word seen
        at least ``min_count`` times (``min_count`` is ignored when ``vocab``
        is given). Other words become ``<unk>``.
        """
        msgs = [_text.words(m) for m in messages]
        if vocab is None:
            freq = Counter(w for ws in msgs for w in ws)
            vocab = {w for w, c in freq.items() if c >= min_count}
        vocab_words = sorted(set(vocab) - set(SPECIALS))
        tokens = [*SPECIALS, *vocab_words]
        ids = {w: i for i, w in enumerate(tokens)}

        tri_counts: Counter = Counter()
        for ws in msgs:
            seq = [_BOS, _BOS, *(ids.get(w, _UNK) for w in ws), _EOS]
            tri_counts.update(zip(seq, seq[1:], seq[2:]))
        v_size = len(tokens)
        if tri_counts:
            grams = np.array(list(tri_counts.keys()), dtype=np.int64).reshape(-1, 3)
            counts3 = np.array(list(tri_counts.values()), dtype=np.int64)
        else:
            grams = np.zeros((0, 3), np.int64)
            counts3 = np.zeros(0, np.int64)

        # Trigram level: raw counts grouped by (u, v).
        order = np.lexsort((grams[:, 2], grams[:, 1], grams[:, 0]))
        grams, counts3 = grams[order], counts3[order]
        tri = cls._level(grams[:, :2], grams[:, 2], counts3, modified_kn_discounts(counts3), pair=True)

        # Bigram level: continuation counts N1+(• v w) = distinct u per (v, w).
        if len(grams):
            vw, kn2 = np.unique(grams[:, 1:], axis=0, return_counts=True)
        else:
            vw, kn2 = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
        bi = cls._level(vw[:, :1], vw[:, 1], kn2, modified_kn_discounts(kn2), pair=False)

        # Unigram level: N1+(• w) = distinct v per w, interpolated with uniform over V'.
        kn1 = np.bincount(vw[:, 1], minlength=v_size).astype(np.float64)
        d1 = modified_kn_discounts(kn1[kn1 > 0])
        total1 = kn1.sum()
        n_events = v_size - 1  # V' excludes <s>
        if total1 > 0:
            pos = kn1 > 0
            g1 = float(np.asarray(d1)[np.clip(kn1[pos], 1, 3).astype(np.int64) - 1].sum() / total1)
            p_uni = _discounted(kn1, d1) / total1 + g1 / n_events
        else:
            p_uni = np.full(v_size, 1.0 / n_events)
        p_uni[_BOS] = 0.0
        return cls(tokens, (tri, bi), p_uni, d1)

    @staticmethod
    def _level(ctx: np.ndarray, w: np.ndarray, counts: np.ndarray, d: Discounts, *, pair: bool) -> _Level:
        if len(w) == 0:
            return _empty_level(d)
        new = np.ones(len(w), dtype=bool)
        new[1:] = np.any(ctx[1:] != ctx[:-1], axis=1)
        starts = np.flatnonzero(new)
        keys = [tuple(int(x) for x in ctx[s]) if pair else int(ctx[s, 0]) for s in starts]
        return _Level(keys, w.astype(np.int64), counts, starts, d)

    # ------------------------------------------------------------ querying
    @property
    def vocab(self) -> frozenset[str]:
        return frozenset(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids and self._ids[word] >= _FIRST_WORD

    def _ctx(self, context: Sequence[str]) -> tuple[int, int]:
        tail = [self._ids.get(w, _UNK) for w in list(context)[-2:]]
        tail = [_BOS] * (2 - len(tail)) + tail
        return tail[0], tail[1]

    def _probs(self, ctx: tuple[int, int], cand: np.ndarray | None) -> np.ndarray:
        lower = self._uni.copy() if cand is None else self._uni[cand]
        p2 = self._bi.apply(ctx[1], lower, cand)
        return self._tri.apply(ctx, p2, cand)

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """P(token | context) for every token of ``self.tokens`` (sums to 1)."""
        return self._probs(self._ctx(context), None)

    def prob(self, word: str, context: Sequence[str]) -> float:
        """P(word | context); ``word`` may be ``</s>``; OOV words get P(<unk>)."""
        wid = self._ids.get(word, _UNK)
        return float(self._probs(self._ctx(context), np.array([wid]))[0])

    def log_prob(self, word: str, context: Sequence[str]) -> float:
        """Natural log of ``prob`` (``-inf`` only for ``<s>``)."""
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def message_nll(self, message: str, *, skip_oov: bool = True, include_end: bool = True) -> tuple[float, int]:
        """(Σ −ln P, tokens scored) over the words of ``message`` (+ ``</s>``).

        With ``skip_oov`` out-of-vocabulary words are not scored (they still
        appear in later contexts, as ``<unk>``).
        """
        ws = _text.words(message)
        seq = ws + ([EOS] if include_end else [])
        nll, n = 0.0, 0
        for i, w in enumerate(seq):
            if skip_oov and w != EOS and w not in self:
                continue
            nll -= self.log_prob(w, ws[:i])
            n += 1
        return nll, n

    def _rank(self, ctx: tuple[int, int], cand: np.ndarray, k: int) -> list[str]:
        """The ``k`` best of ``cand`` (distinct ids) by (−P, id)."""
        if len(cand) == 0 or k <= 0:
            return []
        p = self._probs(ctx, cand)
        if len(cand) > 4 * k:  # keep everything tied with the k-th best, then sort exactly
            kth = np.partition(p, len(p) - k)[len(p) - k]
            keep = p >= kth
            cand, p = cand[keep], p[keep]
        best = cand[np.lexsort((cand, -p))[:k]]  # ties broken by id, i.e. alphabetically
        return [self.tokens[i] for i in best]

    def top_k(self, context: Sequence[str], k: int = 3) -> list[str]:
        """The ``k`` most likely next words (never ``<s>``, ``</s>``, ``<unk>``).

        Exact, without scoring the whole vocabulary. For a word w observed
        after neither the trigram context (u v) nor the bigram context (v),
        both discounted terms vanish, so P(w|uv) = γ3(uv)·γ2(v)·P1(w): among
        such words the ranking is the unigram ranking. Let U_k be the k best
        words by (P1, id). Any word w outside C = S3 ∪ S2 ∪ U_k satisfies, for
        each u ∈ U_k, P(w|uv) = γ3γ2·P1(w) ≤ γ3γ2·P1(u) ≤ P(u|uv) (the
        discounted terms are ≥ 0), with the id tie-break favouring u when
        equal; so k candidates in C rank at least as high as w, and the top k
        of C is the top k of the vocabulary. (S3 ⊆ S2, see below, so C is
        S2 ∪ U_k.) Results are cached per (last two context ids, k).
        """
        ctx = self._ctx(context)
        key = (ctx, k)
        hit = self._topk_cache.get(key)
        if hit is not None:
            return list(hit)
        # Every trigram type (u v w) also makes (v w) a bigram type, so S3 ⊆ S2
        # and the candidates are S2 ∪ U_k.
        uk = self._uni_order[:k]
        seg = self._bi.seg.get(ctx[1])
        if seg is None:
            cand = uk
        else:
            s2 = seg[0][np.searchsorted(seg[0], _FIRST_WORD) :]  # ids sorted; specials first
            pos = np.minimum(np.searchsorted(s2, uk), max(len(s2) - 1, 0))
            fresh = uk if len(s2) == 0 else uk[s2[pos] != uk]
            cand = np.concatenate([s2, fresh])
        result = self._rank(ctx, cand, k)
        if len(self._topk_cache) >= _CACHE_LIMIT:
            self._topk_cache.clear()
        self._topk_cache[key] = tuple(result)
        return result

    def complete(self, context: Sequence[str], prefix: str, k: int = 3) -> list[str]:
        """The ``k`` most likely vocabulary words that start with ``prefix``.

        ``prefix`` is normalized; an empty prefix is ``top_k``. Words sharing a
        prefix form one contiguous id range (ids follow sorted order), found
        by bisection, and scored exactly.
        """
        prefix = _text.normalize(prefix)
        if not prefix:
            return self.top_k(context, k)
        ctx = self._ctx(context)
        key = (ctx, prefix, k)
        hit = self._complete_cache.get(key)
        if hit is not None:
            return list(hit)
        lo = bisect.bisect_left(self._words, prefix)
        hi = lo
        if lo < len(self._words) and self._words[lo].startswith(prefix):
            hi = bisect.bisect_left(self._words, prefix + "\U0010ffff", lo)
            while hi < len(self._words) and self._words[hi].startswith(prefix):
                hi += 1  # words containing characters above U+10FFFF's sort key
        result = self._rank(ctx, np.arange(lo, hi, dtype=np.int64) + _FIRST_WORD, k)
        if len(self._complete_cache) >= _CACHE_LIMIT:
            self._complete_cache.clear()
        self._complete_cache[key] = tuple(result)
        return result

    # --- the Suggester protocol (keyboard_fl.suggester) -----------------------

    @staticmethod
    def split_context(text: str) -> tuple[str, str]:
        """The fragment after the last whitespace is the partial word being
        typed; empty means a word boundary (next-word prediction)."""
        norm = _text.normalize(text)
        cut = max((i for i, ch in enumerate(norm) if ch.isspace()), default=-1) + 1
        return norm[:cut], norm[cut:]

    def context_state(self, context: str) -> tuple[str, ...]:
        """The context's words (only the last two matter to a trigram)."""
        return tuple(_text.words(context))

    def suggest_from(self, state: Sequence[str], prefix: str, k: int = 3) -> list[tuple[str, float]]:
        words = self.complete(state, prefix, k) if prefix else self.top_k(state, k)
        return [(w, self.log_prob(w, state)) for w in words]

    def suggest(self, text_so_far: str, k: int = 3) -> list[str]:
        """Suggestion strip for ``ksr.keystroke_savings``: next words or completions (no scoring)."""
        context, fragment = self.split_context(text_so_far)
        state = self.context_state(context)
        return self.complete(state, fragment, k) if fragment else self.top_k(state, k)


def _empty_level(d: Discounts) -> _Level:
    lvl = _Level.__new__(_Level)
    lvl.d = d
    lvl.seg = {}
    return lvl


def evaluate_ngram(
    train_messages: Iterable[str],
    test_users: Mapping[object, Iterable[str]],
    vocab: set[str] | None,
    k: int = 3,
    *,
    min_targets: int = 1,
    ksr: bool = False,
) -> dict:
    """Fit the trigram baseline on ``train_messages`` and score it on ``test_users``.

    Returns ``metrics.evaluate_topk``'s dict (``top1``, ``top3``, ``top1_all``,
    ``top3_all``, ``targets``, ``oov_targets``, ``oov_rate``,
    ``per_user_top1``, ``users``) plus ``perplexity`` (per in-vocabulary word
    token and ``</s>``, natural-log based, OOV tokens not scored) and, when
    ``ksr`` is set, ``ksr``/``keystrokes``/``characters``/``accepted_words``
    from ``ksr.keystroke_savings`` with the model's own suggestion strip.
    ``vocab`` is both the model vocabulary and the OOV definition (None: all
    training words; nothing counts as OOV).
    """
    from keyboard_fl.eval.ksr import keystroke_savings
    from keyboard_fl.eval.metrics import evaluate_topk, perplexity

    model = KneserNeyTrigram.fit(train_messages, vocab=vocab)
    users = {u: list(msgs) for u, msgs in test_users.items()}
    out = evaluate_topk(lambda ctx: model.top_k(ctx, max(k, 3)), users, vocab=vocab, min_targets=min_targets)
    nll, n = 0.0, 0
    for msgs in users.values():
        for m in msgs:
            a, b = model.message_nll(m)
            nll, n = nll + a, n + b
    out["perplexity"] = perplexity(nll, n) if n else float("nan")
    if ksr:
        res = keystroke_savings([m for msgs in users.values() for m in msgs], model)
        out.update({key: res[key] for key in ("ksr", "keystrokes", "characters", "accepted_words")})
    return out
