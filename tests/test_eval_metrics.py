"""Top-k accuracy, OOV accounting, per-user distribution, perplexity: hand-computed cases."""

import math

import numpy as np
import pytest

from keyboard_fl.eval.metrics import TopKCounter, UserCounts, evaluate_topk, perplexity, summarize_topk, topk_hits


def test_topk_hits():
    preds = [["a", "b", "c"], ["x", "y", "z"], ["q"], []]
    tgts = ["b", "z", "q", "q"]
    assert topk_hits(preds, tgts, 1).tolist() == [False, False, True, False]
    assert topk_hits(preds, tgts, 2).tolist() == [True, False, True, False]
    assert topk_hits(preds, tgts, 3).tolist() == [True, True, True, False]
    assert topk_hits([["a", "b", "c", "d"]], ["d"], 3).tolist() == [False]  # only the first k count
    with pytest.raises(ValueError):
        topk_hits([["a"]], ["a", "b"], 1)


def test_oov_excluded_and_counted():
    c = TopKCounter(vocab={"a", "b", "c"})
    # targets: a (top1 hit), b (top3 hit), zz (OOV, even though predicted), c (miss)
    c.add("u", [["a", "b", "c"], ["a", "c", "b"], ["zz"], ["a", "b", "x"]], ["a", "b", "zz", "c"])
    s = c.summary()
    assert (s["targets"], s["oov_targets"]) == (3, 1)
    assert s["top1"] == pytest.approx(1 / 3)
    assert s["top3"] == pytest.approx(2 / 3)
    assert s["top1_all"] == pytest.approx(1 / 4)
    assert s["top3_all"] == pytest.approx(2 / 4)
    assert s["oov_rate"] == pytest.approx(1 / 4)
    assert s["users"] == 1


def test_no_vocab_means_no_oov():
    c = TopKCounter()
    c.add(1, [["zz"]], ["zz"])
    assert c.summary()["top1"] == 1.0 and c.summary()["oov_targets"] == 0


def test_per_user_distribution_and_micro_average():
    per_user = {
        "a": UserCounts(targets=4, oov=0, hits={1: 0, 3: 1}),  # top1 0
        "b": UserCounts(targets=4, oov=2, hits={1: 1, 3: 2}),  # .25
        "c": UserCounts(targets=2, oov=0, hits={1: 1, 3: 2}),  # .5
        "d": UserCounts(targets=2, oov=0, hits={1: 2, 3: 2}),  # 1
        "e": UserCounts(targets=1, oov=0, hits={1: 1, 3: 1}),  # below min_targets=2
        "f": UserCounts(targets=0, oov=3, hits={1: 0, 3: 0}),  # nothing scored
    }
    s = summarize_topk(per_user, min_targets=2)
    # micro: 5 hits@1 and 8 hits@3 over 13 scored targets, 5 OOV.
    assert s["top1"] == pytest.approx(5 / 13) and s["top3"] == pytest.approx(8 / 13)
    assert s["top1_all"] == pytest.approx(5 / 18) and s["oov_rate"] == pytest.approx(5 / 18)
    assert s["users"] == 6
    d = s["per_user_top1"]
    # values 0, .25, .5, 1 with linear interpolation at (n-1)q.
    assert d["users"] == 4
    assert d["mean"] == pytest.approx(0.4375)
    assert d["median"] == pytest.approx(0.375)
    assert d["p25"] == pytest.approx(0.1875)
    assert d["p75"] == pytest.approx(0.625)
    assert d["p10"] == pytest.approx(0.075)
    assert d["p90"] == pytest.approx(0.85)
    assert summarize_topk(per_user)["per_user_top1"]["users"] == 5  # min_targets=1 keeps e, never f


def test_empty_summary_is_nan():
    s = summarize_topk({})
    assert math.isnan(s["top1"]) and math.isnan(s["per_user_top1"]["median"]) and s["users"] == 0


def test_evaluate_topk_contexts_and_targets():
    seen = []

    def predict(ctx):
        seen.append(list(ctx))
        return ["how", "are", "you"]

    out = evaluate_topk(predict, {"u1": ["Hi, how are you?"], "u2": ["(hi) you"]}, vocab={"hi", "how", "are", "you"})
    # targets: u1 hi, how, are, you; u2 "(hi" is glued to punctuation → only "you".
    assert seen == [[], ["hi"], ["hi", "how"], ["hi", "how", "are"], ["hi"]]
    assert out["targets"] == 5 and out["oov_targets"] == 0
    assert out["top1"] == pytest.approx(1 / 5)  # "how" after "hi"
    assert out["top3"] == pytest.approx(4 / 5)
    assert out["per_user_top1"]["mean"] == pytest.approx((1 / 4 + 0) / 2)


def test_perplexity_of_known_distribution():
    # Uniform over 4 outcomes: perplexity 4 whatever the count.
    assert perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    # p = (1/2, 1/4, 1/4) scored on a sample with exactly those frequencies: 2^H = 2^1.5.
    probs = np.array([0.5, 0.5, 0.25, 0.25])
    assert perplexity(float(-np.log(probs).sum()), 4) == pytest.approx(2**1.5)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)
