"""On-device personalization (issue 22): the cache's interpolation on a hand-computed case, the
cached strip behind the Suggester protocol, and the output-bias fine-tuning on a toy model.

Hand computation (α = 1, λ = 0.25), cache of "hi bob" and "hi bob hi ann":
unigrams hi 3, bob 2, ann 1 (N = 6); pairs <s>→hi 2, hi→bob 2, bob→hi 1, hi→ann 1.

* P_cache(bob | hi) = (2 + 1·2/6) / (3 + 1) = (7/3) / 4 = 7/12
* P_cache(ann | hi) = (1 + 1/6) / 4 = 7/24
* P_cache(hi | hi) = (0 + 3/6) / 4 = 1/8
* P_cache(bob | zed) (unseen previous word) = P_uni(bob) = 2/6 = 1/3

Global word probabilities after "hi": bob 0.1, the 0.5, and 0.3.
Mixed: the 0.75·0.5 = 0.375; bob 0.75·0.1 + 0.25·7/12 = 0.075 + 0.1458… = 0.2208…;
and 0.225; ann 0.25·7/24 = 0.0729…; hi 0.25/8 = 0.03125.
"""

from __future__ import annotations

import math

import pytest

from keyboard_fl.personal import BOS, CacheConfig, CachedSuggester, NgramCache, interpolate, previous_word
from keyboard_fl.suggester import StripMixin, Suggester


def _cache() -> NgramCache:
    return NgramCache(alpha=1.0).learn_all(["Hi Bob", "hi bob, hi Ann!"])


def test_cache_probabilities_by_hand():
    c = _cache()
    assert c.unigrams == {"hi": 3, "bob": 2, "ann": 1} and c.total == 6
    assert c.bigrams[BOS] == {"hi": 2}
    assert c.prob("bob", "hi") == pytest.approx(7 / 12)
    assert c.prob("ann", "hi") == pytest.approx(7 / 24)
    assert c.prob("hi", "hi") == pytest.approx(1 / 8)
    assert c.prob("bob", "zed") == pytest.approx(1 / 3)
    assert c.prob("nobody", "hi") == 0.0
    # a proper distribution over the cached words after any previous word
    for prev in ("hi", "bob", "ann", BOS, "zed"):
        assert sum(c.candidates(prev).values()) == pytest.approx(1.0)
    assert NgramCache().prob("bob", "hi") == 0.0  # empty cache


def test_interpolation_by_hand():
    g = [("the", math.log(0.5)), ("and", math.log(0.3)), ("bob", math.log(0.1))]
    got = interpolate(g, _cache(), "hi", "", weight=0.25, k=5)
    want = [("the", 0.375), ("and", 0.225), ("bob", 0.075 + 0.25 * 7 / 12), ("ann", 0.25 * 7 / 24), ("hi", 0.25 / 8)]
    want.sort(key=lambda wp: -wp[1])
    assert [w for w, _ in got] == [w for w, _ in want]
    assert [math.exp(s) for _, s in got] == pytest.approx([p for _, p in want])
    # with a typed prefix only the words that start with it compete
    got = interpolate([("bed", math.log(0.1))], _cache(), "hi", "b", weight=0.25, k=3)
    assert [w for w, _ in got] == ["bob", "bed"]
    assert math.exp(got[0][1]) == pytest.approx(0.25 * 7 / 12) and math.exp(got[1][1]) == pytest.approx(0.075)
    # λ = 0 is the global strip, λ = 1 the cache alone
    assert [w for w, _ in interpolate(g, _cache(), "hi", "", 0.0)] == ["the", "and", "bob"]
    assert [w for w, _ in interpolate(g, _cache(), "hi", "", 1.0)] == ["bob", "ann", "hi"]


def test_previous_word_and_config_errors():
    assert previous_word("") == BOS and previous_word("Hi Bob, ") == "bob"
    with pytest.raises(ValueError, match="weight"):
        CacheConfig(weight=1.5)
    with pytest.raises(ValueError, match="alpha"):
        CacheConfig(alpha=0)


class _Fixed(StripMixin):
    """A back-end whose word distribution ignores the context (a stand-in global model)."""

    dictionary = None
    probs = {"the": 0.5, "and": 0.3, "bed": 0.1}

    def split_context(self, text):
        from keyboard_fl.strip import split_context

        return split_context(text)

    def context_state(self, context):
        return context

    def suggest_from(self, state, prefix, k=3):
        ws = sorted((w for w in self.probs if w.startswith(prefix)), key=lambda w: -self.probs[w])
        return [(w, math.log(self.probs[w])) for w in ws[:k]]


def test_cached_suggester_is_a_suggester_and_learns():
    s = CachedSuggester(_Fixed(), config=CacheConfig(weight=0.5))
    assert isinstance(s, Suggester)
    assert s.suggest("hi b") == ["bed"]
    s.learn("hi zorbel")
    s.learn("hi zorbel")
    assert s.suggest("hi zo") == ["zorbel"]
    assert s.suggest("hi ")[0] == "zorbel"  # 0.5·(2 + 1·2/4)/(2 + 1) = 0.4167 > 0.5·0.5 (the)
    assert s.suggest("hello b") == ["bed"]  # the cache's words start with "h" or "z"


def test_weight_choice_shrinks_toward_the_population():
    """A user's λ: own validation hits plus prior_users × the population's mean hits (hand case)."""
    import numpy as np

    from keyboard_fl.personal.evaluate import PersonalEvalConfig, choose_weight

    weights = (0.0, 0.1, 0.2, 0.7)
    own = np.array([3.0, 3.0, 3.0, 4.0])  # one lucky hit favours λ = 0.7 on a dozen messages
    population = np.array([2.0, 4.0, 3.5, 1.0])  # most users do best at λ = 0.1
    alone = PersonalEvalConfig(weights=weights, prior_users=0.0)
    assert choose_weight(own, population, alone) == 0.7
    shrunk = PersonalEvalConfig(weights=weights, prior_users=1.0)  # scores 5, 7, 6.5, 5
    assert choose_weight(own, population, shrunk) == 0.1
    # ties go to the λ closest to the cache's default weight (0.2): 0.1 and 0.2 both score 6 here
    assert choose_weight(np.array([3.0, 2.0, 2.5, 0.0]), np.array([0.0, 4.0, 3.5, 0.0]), shrunk) == 0.2
    with pytest.raises(ValueError, match="prior_users"):
        PersonalEvalConfig(prior_users=-1.0)
