"""benchmarks/paired_users.py: the paired per-user bootstrap behind the README's real-chat comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from keyboard_fl.eval.metrics import TopKCounter

_spec = importlib.util.spec_from_file_location(
    "paired_users", Path(__file__).parents[1] / "benchmarks" / "paired_users.py"
)
paired_users = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_users)


def _counter(hits_per_user: list[int], targets: int = 10) -> TopKCounter:
    c = TopKCounter()
    for u, h in enumerate(hits_per_user):
        c.add(u, [["w"]] * h + [["x"]] * (targets - h), ["w"] * targets)
    return c


def test_bootstrap_pairs_users_and_reports_the_pooled_difference():
    model, ngram = _counter([3, 4, 5, 6] * 10), _counter([2, 3, 4, 5] * 10)  # +1 hit in 10 for every user
    r = paired_users.paired_bootstrap(model, ngram, resamples=200)
    assert r["users"] == 40 and r["targets"] == 400
    t1 = r["top1"]
    assert t1["difference"] == pytest.approx(0.1) and t1["ci95"] == pytest.approx([0.1, 0.1])  # paired: no spread
    assert t1["model_wins_share"] == 1.0 and t1["users_model_better"] == 40 and t1["users_ngram_better"] == 0


def test_bootstrap_of_a_model_against_itself_is_a_tie():
    c = _counter([1, 7, 3, 9, 0, 5])
    t1 = paired_users.paired_bootstrap(c, c, resamples=50)["top1"]
    assert t1["difference"] == 0 and t1["model_wins_share"] == 0 and t1["ci95"] == [0, 0]
