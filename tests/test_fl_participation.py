"""Tests for keyboard_fl.fl.participation (block-cyclic Poisson: bands, min-sep, rate)."""

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from keyboard_fl.fl.participation import (
    CyclicPoisson,
    cyclic_capacity,
    sample_cyclic_cohort,
    sample_cyclic_cohort_exact,
    user_bands,
)


def test_bands_balanced_seeded_and_reproducible():
    b1 = np.asarray(user_bands(jax.random.key(3), 1003, 7))
    b2 = np.asarray(user_bands(jax.random.key(3), 1003, 7))
    b3 = np.asarray(user_bands(jax.random.key(4), 1003, 7))
    np.testing.assert_array_equal(b1, b2)
    assert (b1 != b3).any()
    sizes = np.bincount(b1, minlength=7)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 1003
    # not a contiguous split: bands are a random partition of the user ids
    assert len(set(b1[:150].tolist())) == 7


def test_only_active_band_min_separation_and_max_participations():
    p = CyclicPoisson.for_cohort(num_users=600, num_bands=5, expected_cohort=40)
    bands = user_bands(jax.random.key(0), p.num_users, p.num_bands)
    rounds = 23
    seen: dict[int, list[int]] = {}
    counts = []
    for t in range(rounds):
        idx, mask, count = sample_cyclic_cohort_exact(jax.random.fold_in(jax.random.key(1), t), bands, t, p)
        users = np.asarray(idx)[np.asarray(mask)]
        counts.append(int(count))
        assert (np.asarray(bands)[users] == t % p.num_bands).all()
        for u in users:
            seen.setdefault(int(u), []).append(t)
    for ts in seen.values():
        assert len(ts) <= p.max_participations(rounds)
        assert all(b - a >= p.min_separation for a, b in itertools.pairwise(ts))
    # Poisson within the band: total draws are Binomial(sum of band sizes, q_b)
    band_sizes = np.bincount(np.asarray(bands), minlength=p.num_bands)
    trials = int(sum(band_sizes[t % p.num_bands] for t in range(rounds)))
    assert stats.binomtest(sum(counts), trials, p.sampling_prob).pvalue > 1e-3
    assert abs(np.mean(counts) - p.expected_cohort) < 6 * np.sqrt(p.expected_cohort / rounds)


def test_capacity_growth_gives_same_draw():
    p = CyclicPoisson(num_users=400, num_bands=2, sampling_prob=0.5)
    bands = user_bands(jax.random.key(0), 400, 2)
    key = jax.random.key(9)
    small = sample_cyclic_cohort(key, bands, 1, 2, 0.5, 8)
    assert int(small[2]) > 8
    idx, mask, count = sample_cyclic_cohort_exact(key, bands, 1, p, capacity=8)
    big = sample_cyclic_cohort(key, bands, 1, 2, 0.5, cyclic_capacity(p))
    n = int(count)
    np.testing.assert_array_equal(np.asarray(idx)[:n], np.asarray(big[0])[:n])
    assert int(big[2]) == n and int(np.asarray(mask).sum()) == n


def test_one_band_is_plain_poisson_and_q1_is_whole_band():
    p = CyclicPoisson(num_users=50, num_bands=5, sampling_prob=1.0)
    bands = user_bands(jax.random.key(0), 50, 5)
    for t in range(5):
        idx, mask, count = sample_cyclic_cohort_exact(jax.random.key(t), bands, t, p)
        assert int(count) == 10
        assert sorted(np.asarray(idx)[np.asarray(mask)].tolist()) == np.flatnonzero(np.asarray(bands) == t).tolist()
    assert CyclicPoisson(10, 1, 0.3).expected_cohort == pytest.approx(3.0)


def test_validation_messages():
    with pytest.raises(ValueError, match="q_b = 2"):
        CyclicPoisson.for_cohort(100, 10, expected_cohort=20)
    with pytest.raises(ValueError, match="num_bands"):
        CyclicPoisson(10, 0, 0.5)
    with pytest.raises(ValueError, match="exceeds num_users"):
        CyclicPoisson(10, 11, 0.5)
    with pytest.raises(ValueError, match="sampling_prob"):
        CyclicPoisson(10, 2, 0.0)
    with pytest.raises(ValueError, match="expected"):
        sample_cyclic_cohort_exact(jax.random.key(0), user_bands(jax.random.key(0), 9, 2), 0, CyclicPoisson(10, 2, 0.5))
    with pytest.raises(ValueError, match="scheme 'poisson'"):
        CyclicPoisson.from_dict({"scheme": "poisson", "num_users": 10, "num_bands": 1, "sampling_prob": 0.1})
