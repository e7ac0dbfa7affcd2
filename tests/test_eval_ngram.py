"""Kneser–Ney trigram baseline: hand-computed probabilities, normalization, exact top-k."""

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyboard_fl.eval.ngram import EOS, UNK, KneserNeyTrigram, evaluate_ngram, modified_kn_discounts

# <s> <s> a b </s> (twice) and <s> <s> b </s>.
TINY = ["a b", "A b!", "b"]


@pytest.fixture(scope="module")
def tiny():
    return KneserNeyTrigram.fit(TINY)


def test_discounts_by_hand():
    # n1=2, n2=3, n3=n4=0: Y = 2/8; D1 = 1 - 2Y*3/2 = .25; D2, D3 not estimable → fallback 1, 1.5.
    assert modified_kn_discounts(np.array([2, 2, 2, 1, 1])) == pytest.approx((0.25, 1.0, 1.5))
    # n1..n4 = 4, 2, 1, 1: Y = 4/8; D1 = 1 - 2*.5*2/4 = .5; D2 = 2 - 3*.5*1/2 = 1.25; D3 = 3 - 4*.5*1/1 = 1.
    assert modified_kn_discounts(np.array([1, 1, 1, 1, 2, 2, 3, 4, 9])) == pytest.approx((0.5, 1.25, 1.0))
    # D2 = 2 - 3*(1/3)*10/1 < 0 (n3 >> n2) → fallback 1.
    assert modified_kn_discounts(np.array([1, 2] + [3] * 10))[1] == 1.0


def test_tiny_corpus_by_hand(tiny):
    # Trigram counts: (<s><s>a)=2 (<s>ab)=2 (ab</s>)=2 (<s><s>b)=1 (<s>b</s>)=1 → D3 = (.25, 1, 1.5)
    # Continuation N1+(•vw): (<s>a)=1 (<s>b)=1 (ab)=1 (b</s>)=2 → D2 = (.6, 1, 1.5)
    # N1+(•w): a=1 b=2 </s>=1, total 4 → D1 = (.5, 1, 1.5); γ1 = (.5*2 + 1*1)/4 = .5; |V'| = 4
    assert tiny.discounts[3] == pytest.approx((0.25, 1.0, 1.5))
    assert tiny.discounts[2] == pytest.approx((0.6, 1.0, 1.5))
    assert tiny.discounts[1] == pytest.approx((0.5, 1.0, 1.5))
    p1 = {"a": 0.5 / 4 + 0.5 / 4, "b": 1 / 4 + 0.5 / 4, EOS: 0.5 / 4 + 0.5 / 4, UNK: 0.5 / 4}
    # Unigram: unseen context backs off twice.
    for w, p in p1.items():
        assert tiny.prob(w, ["zzz", "qqq"]) == pytest.approx(p)
    assert tiny.prob("never-seen", ["zzz"]) == pytest.approx(p1[UNK])
    # Bigram: P2(b|a) = (1 - .6)/1 + γ2(a) P1(b), γ2(a) = .6*1/1; context (<unk>, a) unseen as trigram.
    assert tiny.prob("b", ["qqq", "a"]) == pytest.approx(0.4 + 0.6 * 0.375) == pytest.approx(0.625)
    # Trigram: P3(b|<s><s>) = (1 - .25)/3 + γ3 P2(b|<s>); γ3 = (.25 + 1)/3;
    # P2(b|<s>) = (1 - .6)/2 + (.6*2/2) P1(b) = .2 + .6*.375 = .425.
    assert tiny.prob("b", []) == pytest.approx(0.25 + 1.25 / 3 * 0.425)
    # P3(a|<s><s>) = (2 - 1)/3 + γ3 P2(a|<s>), P2(a|<s>) = .2 + .6*.25 = .35.
    assert tiny.prob("a", []) == pytest.approx(1 / 3 + 1.25 / 3 * 0.35)
    # P3(</s>|<s> b) = (1 - .25)/1 + .25 P2(</s>|b), P2(</s>|b) = (2 - 1)/2 + (1*1/2) P1(</s>) = .625.
    assert tiny.prob(EOS, ["b"]) == pytest.approx(0.75 + 0.25 * 0.625)
    assert tiny.prob("a", ["b"]) == pytest.approx(0.25 * 0.5 * 0.25)
    assert tiny.log_prob("a", ["b"]) == pytest.approx(math.log(0.03125))
    assert tiny.prob("<s>", []) == 0.0
    assert tiny.top_k([], 3) == ["a", "b"]  # only two words in the vocabulary


def _random_corpus(seed, n_msgs=60, vocab=25):
    rng = random.Random(seed)
    words = [f"w{i:02d}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(0, 8))) for _ in range(n_msgs)]


@pytest.mark.parametrize("seed", range(4))
def test_sums_to_one_seen_and_unseen_contexts(seed):
    model = KneserNeyTrigram.fit(_random_corpus(seed), vocab={f"w{i:02d}" for i in range(30)} | {"extra"})
    contexts = [
        [],
        ["w00"],
        ["w01", "w00"],
        ["w03", "w24"],
        ["nope"],
        ["nope", "nada"],
        ["w00", "nope"],
        ["extra", "extra"],
    ]
    events = [*model.vocab, EOS, UNK]
    for ctx in contexts:
        assert model.distribution(ctx).sum() == pytest.approx(1.0, abs=1e-12)
        total = sum(model.prob(w, ctx) for w in events)
        assert total == pytest.approx(1.0, abs=1e-12)
        assert all(model.prob(w, ctx) > 0 for w in events)


def _brute_top_k(model, ctx, k):
    d = model.distribution(ctx)
    ids = np.arange(3, len(model.tokens))
    order = ids[np.lexsort((ids, -d[ids]))]
    return [model.tokens[i] for i in order[:k]]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 6), vocab=st.integers(3, 40))
def test_top_k_is_exact(seed, k, vocab):
    corpus = _random_corpus(seed, n_msgs=40, vocab=vocab)
    model = KneserNeyTrigram.fit(corpus, min_count=2 if seed % 2 else 1)
    rng = random.Random(seed)
    words = sorted(model.vocab) + ["oov"]
    contexts = [[]] + [rng.sample(words, min(2, len(words))) for _ in range(8)] + [[w] for w in words[:5]]
    for ctx in contexts:
        got = model.top_k(ctx, k)
        assert got == _brute_top_k(model, ctx, k)
        assert model.top_k(ctx, k) == got  # cached answer is the same
        assert not {"<s>", "</s>", "<unk>"} & set(got)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_exact_on_larger_vocab(k):
    # Large candidate sets exercise the partition step; ties are common in sparse contexts.
    corpus = _random_corpus(7, n_msgs=800, vocab=300)
    model = KneserNeyTrigram.fit(corpus, vocab={f"w{i:02d}" for i in range(250)})
    rng = random.Random(k)
    words = sorted(model.vocab)
    for _ in range(60):
        ctx = rng.sample(words, rng.randint(0, 2))
        assert model.top_k(ctx, k) == _brute_top_k(model, ctx, k)
        prefix = rng.choice(words)[: rng.randint(1, 3)]
        d = model.distribution(ctx)
        best = sorted((w for w in words if w.startswith(prefix)), key=lambda w: (-d[model.tokens.index(w)], w))[:k]
        assert model.complete(ctx, prefix, k) == best


def test_complete(tiny):
    model = KneserNeyTrigram.fit(["the cat sat", "the car is red", "the cat is here", "they came", "a cart"])
    assert model.complete(["the"], "ca", k=3)[0] == "cat"
    assert set(model.complete(["the"], "ca", k=5)) == {"cat", "car", "came", "cart"}
    assert model.complete([], "th", k=2) == ["the", "they"]
    assert model.complete(["the"], "Ca", k=1) == ["cat"]  # prefix is normalized
    assert model.complete(["the"], "zz") == []
    assert model.complete(["the"], "", k=2) == model.top_k(["the"], 2)
    for prefix in ["c", "ca", "car", "t", "th", "the"]:
        d = model.distribution(["the"])
        cands = [w for w in model.vocab if w.startswith(prefix)]
        best = sorted(cands, key=lambda w: (-d[model.tokens.index(w)], w))[:3]
        assert model.complete(["the"], prefix) == best


def test_suggest_strip():
    model = KneserNeyTrigram.fit(["the cat sat", "the cat ran", "the dog ran"])
    assert model.suggest("") == model.top_k([], 3)
    assert model.suggest("The ") == model.top_k(["the"], 3)
    assert model.suggest("the ca") == model.complete(["the"], "ca")


def test_min_count_and_vocab():
    model = KneserNeyTrigram.fit(["a a b", "a c"], min_count=2)
    assert model.vocab == {"a"}
    model = KneserNeyTrigram.fit(["a a b", "a c"], vocab={"b", "z"})
    assert model.vocab == {"b", "z"}
    assert model.prob("z", []) > 0
    assert model.prob("a", []) == model.prob(UNK, [])


def test_evaluate_ngram_shape():
    train = ["the cat sat on the mat"] * 3 + ["the dog sat on the log"] * 2
    test = {"u1": ["the cat sat on the mat"], "u2": ["the dog sat on a log", "hello"]}
    out = evaluate_ngram(train, test, vocab={"the", "cat", "dog", "sat", "on", "mat", "log"}, ksr=True)
    for key in (
        "top1",
        "top3",
        "top1_all",
        "top3_all",
        "targets",
        "oov_targets",
        "oov_rate",
        "per_user_top1",
        "users",
        "perplexity",
        "ksr",
    ):
        assert key in out
    assert out["targets"] == 6 + 5 and out["oov_targets"] == 2 and out["users"] == 2
    assert out["top3"] >= out["top1"] >= out["top1_all"]
    assert 0 < out["ksr"] < 1 and out["perplexity"] > 1
