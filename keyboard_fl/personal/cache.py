"""A personal word and bigram cache, interpolated with the global model: the keyboard's memory of its user.

The global model learns what many users type; by design (user-level DP) it
does not learn what only one user types. Keyboards pair it with personal state
kept on the device (Hard et al. 2018, arXiv 1811.03604, §2: a user n-gram
cache). Ours is the cache language model of Kuhn & De Mori (1990), made of
the words this user typed and the word pairs they typed:

    P_cache(w | v) = (c(v, w) + α · c(w) / N) / (c(v) + α)

with ``v`` the previous word (``<s>`` at the start of a message), ``c(v, w)``
the pair counts, ``c(v)`` their sum over ``w``, ``c(w)`` the word counts and
``N`` their sum (a Dirichlet-smoothed bigram over the unigram, MacKay & Peto
1995). The strip ranks words by the linear interpolation

    P(w | ctx) = (1 − λ) · P_global(w | ctx) + λ · P_cache(w | v)

where ``P_global`` is the word probability of the model's word search
(:func:`keyboard_fl.suggest.word_search`); a word the search did not reach
gets ``P_global = 0`` (a lower bound). With a typed prefix both terms are the
probabilities of whole words that start with it, so the ranking is the
prefix-constrained one. ``λ`` is chosen per user on their own held-out
messages (:mod:`keyboard_fl.personal.evaluate`); the demo mirrors this module
in ``demo/static/ondevice/personal.js``.

The cache never leaves the device and is not part of any training: the global
model's ε does not cover it and it does not change ε (README, privacy note).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence

from keyboard_fl import text as text_lib
from keyboard_fl.dictionary import Dictionary
from keyboard_fl.suggester import StripMixin, Suggester

BOS = "<s>"  # the previous word at the start of a message (never a word: text.WORD_RE cannot match it)

__all__ = ["BOS", "CacheConfig", "CachedSuggester", "NgramCache", "interpolate", "mix", "previous_word"]


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """How the personal cache is smoothed and mixed with the global model."""

    alpha: float = 1.0  # Dirichlet prior weight of the unigram under the bigram (MacKay & Peto 1995)
    weight: float = 0.2  # λ, the cache's share when none was validated (the demo's default)
    global_k: int = 8  # global candidates kept per context before mixing (the beam width)

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"CacheConfig.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"CacheConfig.weight must be in [0, 1], got {self.weight}")
        if self.global_k < 1:
            raise ValueError(f"CacheConfig.global_k must be >= 1, got {self.global_k}")


def previous_word(context: str) -> str:
    """The word before the next one: the last word of ``context`` (``BOS`` when there is none)."""
    ws = text_lib.words(context)
    return ws[-1] if ws else BOS


class NgramCache:
    """Word and word-pair counts of one user's messages (on the device only)."""

    def __init__(self, alpha: float = CacheConfig.alpha):
        self.alpha = alpha
        self.unigrams: collections.Counter[str] = collections.Counter()
        self.bigrams: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.total = 0

    def learn(self, message: str) -> None:
        """Count the words of one typed message and their pairs (the first word follows ``BOS``)."""
        prev = BOS
        for w in text_lib.words(message):
            self.unigrams[w] += 1
            self.bigrams[prev][w] += 1
            self.total += 1
            prev = w

    def learn_all(self, messages: Iterable[str]) -> NgramCache:
        for m in messages:
            self.learn(m)
        return self

    def __contains__(self, word: object) -> bool:
        return word in self.unigrams

    def prob(self, word: str, prev: str) -> float:
        """``P_cache(word | prev)`` (module docstring); 0 for an empty cache."""
        if not self.total:
            return 0.0
        following = self.bigrams.get(prev)
        pair, seen = (following[word], following.total()) if following else (0, 0)
        return (pair + self.alpha * self.unigrams[word] / self.total) / (seen + self.alpha)

    def candidates(self, prev: str, prefix: str = "") -> dict[str, float]:
        """``{word: P_cache(word | prev)}`` for every cached word that starts with ``prefix``."""
        return {w: self.prob(w, prev) for w in self.unigrams if w.startswith(prefix)}


def mix(global_probs: dict[str, float], cache_probs: dict[str, float], weight: float, k: int = 3):
    """Top ``k`` of ``(1 − λ) P_global + λ P_cache`` as ``(word, log P)``, best first (ties: by word)."""
    mixed = {w: (1.0 - weight) * p for w, p in global_probs.items()}
    if weight > 0:
        for w, p in cache_probs.items():
            mixed[w] = mixed.get(w, 0.0) + weight * p
    ranked = sorted(((w, math.log(p)) for w, p in mixed.items() if p > 0), key=lambda wp: (-wp[1], wp[0]))
    return ranked[:k]


def interpolate(
    global_scored: Sequence[tuple[str, float]],
    cache: NgramCache,
    prev: str,
    prefix: str,
    weight: float,
    k: int = 3,
) -> list[tuple[str, float]]:
    """Top ``k`` of ``(1 − λ) P_global(w | ctx) + λ P_cache(w | prev)`` over words starting with ``prefix``.

    ``global_scored`` are the global model's ``(word, log P)`` (already filtered
    by the dictionary); words absent from it have ``P_global = 0``.
    """
    cached = cache.candidates(prev, prefix) if weight > 0 else {}
    return mix({w: math.exp(lp) for w, lp in global_scored}, cached, weight, k)


class CachedSuggester(StripMixin):
    """A :class:`~keyboard_fl.suggester.Suggester` whose strip mixes a base back-end with a personal cache.

    The base's dictionary also accepts the words this user typed (the cache's
    words): a user's own names reach the strip. ``learn(message)`` adds a sent
    message to both.
    """

    def __init__(self, base: Suggester, cache: NgramCache | None = None, config: CacheConfig = CacheConfig()):
        self.base, self.config = copy.copy(base), config  # a copy: the dictionary below is this user's
        self.cache = cache if cache is not None else NgramCache(config.alpha)
        self.weight = config.weight  # λ: set from validation by the evaluation (per user)
        public = getattr(self.base, "dictionary", None)
        self._public = public if isinstance(public, Dictionary) else None
        self._sync_dictionary()

    def _sync_dictionary(self) -> None:
        if self._public is not None:
            self.base.dictionary = Dictionary(self._public.public, frozenset(self.cache.unigrams))

    def learn(self, message: str) -> None:
        """A message this user sent joins the cache and the dictionary (on the device)."""
        self.cache.learn(message)
        self._sync_dictionary()

    def split_context(self, text: str) -> tuple[str, str]:
        return self.base.split_context(text)

    def context_state(self, context: str):
        return self.base.context_state(context), previous_word(context)

    def suggest_from(self, state, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        base_state, prev = state
        scored = self.base.suggest_from(base_state, prefix, max(k, self.config.global_k))
        return interpolate(scored, self.cache, prev, prefix, self.weight, k)
