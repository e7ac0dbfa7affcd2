"""Descriptive statistics of a ``UserSource`` (pure functions returning data).

The CLI renders these with rich; nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..text import words
from .splits import Split, UserSource


def distribution(values: Sequence[int]) -> dict:
    """min / mean / median / p90 / p99 / max of ``values`` (zeros when empty)."""
    if not len(values):
        return {"min": 0, "mean": 0.0, "median": 0.0, "p90": 0.0, "p99": 0.0, "max": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"min": int(a.min()), "mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": int(a.max())}


def _messages(user, part: str) -> tuple[str, ...]:
    if part == "all":
        return tuple(user.train) + tuple(user.test)
    return getattr(user, part)


def compute_stats(source: UserSource, split: Split = "train", *, part: str = "all", max_users: int | None = None,
                  overlap_pairs: int = 500, num_samples: int = 12, seed: int = 0) -> dict:
    """Counts, per-user distributions, vocabulary, overlap and samples of one split.

    ``part``: ``"train"``, ``"test"`` or ``"all"`` (both) messages of each user.
    ``overlap_pairs``: random user pairs for the mean Jaccard vocabulary overlap.
    ``max_users``: stop after this many users (None = all).
    """
    vocab: Counter = Counter()  # word -> occurrences
    users_of: Counter = Counter()  # word -> number of users using it
    user_vocabs: list[frozenset[str]] = []
    wpu, mpu, samples = [], [], []
    n_users = n_msgs = n_words = 0
    for user in source.users(split):
        if max_users is not None and n_users >= max_users:
            break
        msgs = _messages(user, part)
        n_users += 1
        uw: set[str] = set()
        count = 0
        for m in msgs:
            ws = words(m)
            count += len(ws)
            vocab.update(ws)
            uw.update(ws)
        users_of.update(uw)
        user_vocabs.append(frozenset(uw))
        n_msgs += len(msgs)
        n_words += count
        wpu.append(count)
        mpu.append(len(msgs))
        if len(samples) < num_samples and msgs:  # one message from each of the first users
            samples.append(msgs[len(msgs) // 2])
    rng = np.random.default_rng(seed)
    jac = []
    if len(user_vocabs) >= 2:
        for _ in range(overlap_pairs):
            i, j = rng.choice(len(user_vocabs), size=2, replace=False)
            a, b = user_vocabs[i], user_vocabs[j]
            if a or b:
                jac.append(len(a & b) / len(a | b))
    personal_types = [w for w, c in users_of.items() if c <= 1]
    return {
        "split": split, "part": part, "users": n_users, "messages": n_msgs, "words": n_words,
        "words_per_user": distribution(wpu), "messages_per_user": distribution(mpu),
        "vocabulary_size": len(vocab),
        "mean_pairwise_jaccard": float(np.mean(jac)) if jac else 0.0,
        "personal_word_fraction": len(personal_types) / max(len(vocab), 1),  # share of word types used by <= 1 user
        "personal_token_fraction": sum(vocab[w] for w in personal_types) / max(n_words, 1),  # share of running words
        "sample_messages": samples,
    }


population_stats = compute_stats  # the name the CLI uses


def rank_frequency(source: UserSource, split: Split = "train", part: str = "all", max_users: int | None = None) -> list[int]:
    """Word counts sorted descending (rank 1 first)."""
    c: Counter = Counter()
    for i, user in enumerate(source.users(split)):
        if max_users is not None and i >= max_users:
            break
        for m in _messages(user, part):
            c.update(words(m))
    return sorted(c.values(), reverse=True)


def rank_frequency_plot(source: UserSource, path: str | Path, split: Split = "train", *, part: str = "all",
                        max_users: int | None = None, reference_n: int = 20_000) -> Path:
    """Save a log-log rank-frequency PNG of ``source`` beside wordfreq's English list.

    Needs ``matplotlib``; the reference curve needs ``wordfreq`` (skipped with a
    note on the plot when it is not installed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(rank_frequency(source, split, part, max_users), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if counts.size:
        ax.loglog(np.arange(1, counts.size + 1), counts / counts.sum(), label=f"corpus ({split}, {counts.size} words)")
    try:
        import wordfreq

        ref = wordfreq.top_n_list("en", reference_n)
        f = np.array([wordfreq.word_frequency(w, "en") for w in ref])
        ax.loglog(np.arange(1, len(f) + 1), f / f.sum(), "--", label="wordfreq English")
    except ImportError:
        ax.text(0.05, 0.05, "wordfreq not installed: no reference", transform=ax.transAxes)
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title("Word rank-frequency")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
