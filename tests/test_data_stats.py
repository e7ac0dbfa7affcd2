"""Statistics and the rank-frequency plot on a tiny population."""

from __future__ import annotations

import pytest

from keyboard_fl.data import (
    Population,
    PopulationConfig,
    compute_stats,
    distribution,
    rank_frequency,
    rank_frequency_plot,
)

POP = Population(PopulationConfig(seed=5, num_train_users=60, num_heldout_users=10, num_public_users=10))


def test_distribution():
    d = distribution([1, 2, 3, 4, 100])
    assert d["min"] == 1 and d["max"] == 100 and d["median"] == 3
    assert distribution([])["max"] == 0


def test_compute_stats_tiny_population():
    s = compute_stats(POP, "train", overlap_pairs=100)
    assert s["users"] == 60
    assert s["messages"] == sum(len(POP.messages(POP.user_id(i))) for i in range(60))
    assert s["words"] > s["messages"]
    wpu = s["words_per_user"]
    assert wpu["min"] <= wpu["median"] <= wpu["p90"] <= wpu["p99"] <= wpu["max"]
    assert s["messages_per_user"]["max"] >= s["messages_per_user"]["median"]
    assert 0.0 < s["mean_pairwise_jaccard"] < 0.5  # users share a language but differ
    assert 0.0 < s["personal_word_fraction"] < 1.0
    assert s["vocabulary_size"] > 500
    assert len(s["sample_messages"]) == 12 and all(isinstance(x, str) and x for x in s["sample_messages"])
    part = compute_stats(POP, "train", part="test", max_users=10)
    assert part["users"] == 10 and part["messages"] < s["messages"]


def test_rank_frequency_sorted():
    f = rank_frequency(POP, "public")
    assert f == sorted(f, reverse=True) and f[0] > f[-1]


def test_rank_frequency_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = rank_frequency_plot(POP, tmp_path / "rf.png", "heldout", reference_n=2000)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
