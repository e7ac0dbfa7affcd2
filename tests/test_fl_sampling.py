"""Tests for keyboard_fl.fl.sampling (Poisson rate, independence, no truncation)."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort, sample_cohort_exact, sample_fixed_cohort


def test_capacity_covers_six_std_and_is_multiple_of_8():
    for n, q in [(1000, 0.05), (10_000, 0.01), (50, 0.5), (3, 0.9), (1_000_000, 1e-4)]:
        cap = cohort_capacity(n, q)
        assert cap % 8 == 0 and cap >= 8
        assert cap >= min(n, n * q + 6 * math.sqrt(n * q * (1 - q)))


def test_rate_matches_q_binomial():
    n, q, rounds = 1000, 0.05, 300
    cap = cohort_capacity(n, q)
    keys = jax.random.split(jax.random.key(0), rounds)
    idx, mask, count = jax.vmap(lambda k: sample_cohort(k, n, q, cap))(keys)
    count = np.asarray(count)
    assert count.max() <= cap
    total = int(count.sum())
    assert stats.binomtest(total, n * rounds, q).pvalue > 1e-3
    # Per-user inclusion counts are Binomial(rounds, q): chi-square on the dispersion.
    inc = np.zeros(n)
    for i, m in zip(np.asarray(idx), np.asarray(mask)):
        inc[i[m]] += 1
    var_ratio = inc.var() / (rounds * q * (1 - q))
    assert 0.85 < var_ratio < 1.15
    # Realized cohort sizes have the binomial variance (not fixed-size).
    assert 0.7 < count.var() / (n * q * (1 - q)) < 1.3


def test_layout_sorted_unique_and_masked():
    n, q = 500, 0.1
    cap = cohort_capacity(n, q)
    idx, mask, count = sample_cohort(jax.random.key(3), n, q, cap)
    idx, mask, count = np.asarray(idx), np.asarray(mask), int(count)
    assert idx.dtype == np.int32 and mask.dtype == bool and idx.shape == mask.shape == (cap,)
    assert mask.sum() == count and np.all(mask[:count]) and not np.any(mask[count:])
    real = idx[mask]
    assert np.all(np.diff(real) > 0) and real.min() >= 0 and real.max() < n
    assert np.all(idx[~mask] == 0)


def test_determinism_and_independence_of_keys():
    n, q = 2000, 0.2
    cap = cohort_capacity(n, q)
    a1 = np.asarray(sample_cohort(jax.random.key(7), n, q, cap)[0])
    a2 = np.asarray(sample_cohort(jax.random.key(7), n, q, cap)[0])
    np.testing.assert_array_equal(a1, a2)
    # Different keys: inclusion indicators are independent, so overlap ~ Binomial(N, q^2).
    keys = jax.random.split(jax.random.key(11), 2)
    sets = []
    for k in keys:
        i, m, _ = sample_cohort(k, n, q, cap)
        sets.append(set(np.asarray(i)[np.asarray(m)].tolist()))
    overlap = len(sets[0] & sets[1])
    assert stats.binomtest(overlap, n, q * q).pvalue > 1e-3
    # Split keys over many rounds: masks of consecutive rounds uncorrelated.
    ks = jax.random.split(jax.random.key(5), 64)
    ind = np.stack(
        [np.isin(np.arange(n), np.asarray(i)[np.asarray(m)]) for i, m, _ in [sample_cohort(k, n, q, cap) for k in ks]]
    ).astype(float)
    c = np.corrcoef(ind)[np.triu_indices(64, 1)]
    assert np.abs(c).max() < 6 / np.sqrt(n)


def test_never_truncates_reports_true_count_and_regrows():
    n, q, small = 200, 0.5, 8
    key = jax.random.key(0)
    idx, mask, count = sample_cohort(key, n, q, small)
    assert int(count) > small  # true count, larger than the capacity
    assert int(np.asarray(mask).sum()) == small  # arrays alone are not a usable cohort
    full_idx, full_mask, full_count = sample_cohort(key, n, q, 256)
    assert int(full_count) == int(count)  # draw does not depend on capacity
    ex_idx, ex_mask, ex_count = sample_cohort_exact(key, n, q, capacity=small)
    assert int(ex_count) == int(count) and len(ex_idx) % 8 == 0 and len(ex_idx) >= int(count)
    np.testing.assert_array_equal(np.asarray(ex_idx)[np.asarray(ex_mask)], np.asarray(full_idx)[np.asarray(full_mask)])


def test_fixed_cohort():
    idx, mask, count = sample_fixed_cohort(jax.random.key(0), 100, 16)
    idx = np.asarray(idx)
    assert int(count) == 16 and np.all(np.asarray(mask)) and len(set(idx.tolist())) == 16
    assert idx.min() >= 0 and idx.max() < 100
    with pytest.raises(ValueError):
        sample_fixed_cohort(jax.random.key(0), 10, 11)
