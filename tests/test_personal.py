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


def _result(name: str, targets, global_hits, cache_hits, users=None) -> dict:
    """A per-user slice of an evaluate_model result (top-1 of the global and cache strips)."""
    users = list(range(len(targets))) if users is None else users
    return {
        "model": name,
        "per_user": {"users": users, "targets": targets, "top1": {"global": global_hits, "cache": cache_hits}},
    }


def test_gain_difference_by_hand():
    """Pooled gains Σ(personal − global)/Σ targets, paired by user: hand case and the interval's verdicts."""
    import numpy as np

    from keyboard_fl.personal.compare import comparison_table, gain_difference, pooled_gain

    # a: (1 + 1 + 2) / 40 = 0.1; b: no change; user 3 is b's only and is left out of the pairing
    a = _result("a", [10, 10, 20], [1, 2, 3], [2, 3, 5])
    b = _result("b", [10, 10, 20, 5], [4, 4, 4, 1], [4, 4, 4, 5], users=[0, 1, 2, 3])
    d = gain_difference(a, b, "cache", n_resamples=2000)
    assert d["users"] == 3
    assert d["gain_a"] == pytest.approx(0.1) and d["gain_b"] == 0.0 and d["difference"] == pytest.approx(0.1)
    assert pooled_gain([10, 10, 20], [2, 3, 5], [1, 2, 3]) == pytest.approx(0.1)
    assert math.isnan(pooled_gain([0], [0], [0]))

    rng = np.random.default_rng(1)
    n = rng.integers(5, 30, size=80).tolist()
    g = [int(rng.integers(0, k)) for k in n]
    helped = [h + int(rng.integers(1, 3)) for h in g]  # a's cache adds 1-2 hits for every user
    noisy = [h + int(rng.integers(-1, 2)) for h in g]  # b's adds -1..1: about nothing
    clear = gain_difference(_result("a", n, g, helped), _result("b", n, g, noisy), n_resamples=2000)
    assert 0 < clear["low"] < clear["difference"] < clear["high"]
    same = gain_difference(_result("a", n, g, noisy), _result("b", n, g, noisy), n_resamples=2000)
    assert same["difference"] == 0.0 and same["low"] <= 0.0 <= same["high"]
    swapped = gain_difference(_result("b", n, g, noisy), _result("a", n, g, helped), n_resamples=2000)
    assert swapped["high"] < 0

    report = {"results": {"a": _result("a", n, g, helped), "b": _result("b", n, g, noisy)}}
    table = comparison_table(report, variants=("cache",))
    assert "| a | b | cache |" in table and "A more" in table
    with pytest.raises(ValueError, match="no per-user counts"):
        gain_difference({"model": "old"}, b)
    with pytest.raises(ValueError, match="no user in common"):
        gain_difference(a, _result("c", [5], [1], [1], users=[9]))


def test_report_over_trained_runs_pairs_the_same_users(tiny_runs):
    """End to end on the tiny runs: every strip scored, per-user counts that add up to the pooled
    top-1, and the paired comparison of two global models over the same users."""
    from keyboard_fl.personal.compare import comparison_table, gain_difference
    from keyboard_fl.personal.evaluate import VARIANTS, PersonalEvalConfig
    from keyboard_fl.personal.report import markdown_table, personalization_report

    root = tiny_runs["fedavg"].parent
    cfg = PersonalEvalConfig(users=4, max_test_messages=3, max_train_messages=40, ksr_messages=1, min_targets=1)
    report = personalization_report(root, cfg, ("fedavg", "dp-fedavg"), log=lambda s: None)
    a, b = report["results"]["fedavg"], report["results"]["dp-fedavg"]
    for r in (a, b):
        pu = r["per_user"]
        assert 0 < len(pu["users"]) <= 4 and sum(pu["targets"]) == r["variants"]["global"]["targets"]
        for v in VARIANTS:
            assert sum(pu["top1"][v]) == pytest.approx(r["variants"][v]["top1"] * sum(pu["targets"]))
            assert all(h1 <= h3 <= n for h1, h3, n in zip(pu["top1"][v], pu["top3"][v], pu["targets"]))
    assert a["per_user"]["users"] == b["per_user"]["users"]  # the same users for every model
    d = gain_difference(a, b, "cache", n_resamples=500)
    assert d["users"] == len(a["per_user"]["users"]) and d["low"] <= d["difference"] <= d["high"]
    assert "| fedavg | dp-fedavg | cache |" in comparison_table(report)
    assert "| fedavg (" in markdown_table(report)
