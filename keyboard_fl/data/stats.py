"""Descriptive statistics of a ``UserSource`` (pure functions returning data).

The CLI renders these with rich; nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..text import words
from .splits import Split, UserSource


def distribution(values: Sequence[int]) -> dict:
    """min / mean / median / p90 / p99 / max of ``values`` (zeros when empty)."""
    if not len(values):
        return {"min": 0, "mean": 0.0, "median": 0.0, "p90": 0.0, "p99": 0.0, "max": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": int(a.min()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": int(a.max()),
    }


def _messages(user, part: str) -> tuple[str, ...]:
    if part == "all":
        return tuple(user.train) + tuple(user.test)
    return getattr(user, part)


def compute_stats(
    source: UserSource,
    split: Split = "train",
    *,
    part: str = "all",
    max_users: int | None = None,
    overlap_pairs: int = 500,
    num_samples: int = 12,
    seed: int = 0,
) -> dict:
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
        "split": split,
        "part": part,
        "users": n_users,
        "messages": n_msgs,
        "words": n_words,
        "words_per_user": distribution(wpu),
        "messages_per_user": distribution(mpu),
        "vocabulary_size": len(vocab),
        "mean_pairwise_jaccard": float(np.mean(jac)) if jac else 0.0,
        "personal_word_fraction": len(personal_types) / max(len(vocab), 1),  # share of word types used by <= 1 user
        "personal_token_fraction": sum(vocab[w] for w in personal_types) / max(n_words, 1),  # share of running words
        "sample_messages": samples,
    }


population_stats = compute_stats  # the name the CLI uses


def rank_frequency(
    source: UserSource, split: Split = "train", part: str = "all", max_users: int | None = None
) -> list[int]:
    """Word counts sorted descending (rank 1 first)."""
    c: Counter = Counter()
    for i, user in enumerate(source.users(split)):
        if max_users is not None and i >= max_users:
            break
        for m in _messages(user, part):
            c.update(words(m))
    return sorted(c.values(), reverse=True)


def rank_frequency_plot(
    source: UserSource,
    path: str | Path,
    split: Split = "train",
    *,
    part: str = "all",
    max_users: int | None = None,
    reference_n: int = 20_000,
) -> Path:
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


def _ngrams(ws: list[str], ns: tuple[int, ...]) -> set[str]:
    return {" ".join(ws[i : i + n]) for n in ns for i in range(len(ws) - n + 1)}


def register_gap_stats(
    source: UserSource,
    split: Split = "train",
    *,
    max_users: int | None = 2000,
    vocab_size: int = 10_000,
    min_share: float = 0.05,
    ngram: tuple[int, ...] = (2, 3),
    min_personal_uses: int = 3,
    top: int = 5,
) -> dict:
    """What private typing holds that the public split lacks, by kind.

    * ``shared_phrases``: word n-grams (``ngram``) typed by at least ``min_share``
      of ``split``'s users that no public text contains, made only of public
      vocabulary words (so a model pretrained on public text can score them), with
      their user share, most shared first;
    * ``single_user_words``: words that exactly one user types (at least
      ``min_personal_uses`` times) and public text never contains: personal
      names and the like;
    * ``oov_rate``: share of typed words outside the ``vocab_size`` most frequent
      public words (``train.run.WORD_VOCAB_SIZE``: the evaluation vocabulary).
    """
    pub_counts: Counter = Counter()
    pub_grams: set[str] = set()
    for user in source.users("public"):
        for m in user.train:
            ws = words(m)
            pub_counts.update(ws)
            pub_grams |= _ngrams(ws, ngram)
    vocab = {w for w, _ in pub_counts.most_common(vocab_size)}
    users_of_gram: Counter = Counter()
    users_of_word: Counter = Counter()
    uses: Counter = Counter()
    n_users = n_words = n_oov = 0
    for user in source.users(split):
        if max_users is not None and n_users >= max_users:
            break
        n_users += 1
        grams: set[str] = set()
        wc: Counter = Counter()
        for m in tuple(user.train) + tuple(user.test):
            ws = words(m)
            wc.update(ws)
            grams |= _ngrams(ws, ngram)
        n_words += sum(wc.values())
        n_oov += sum(c for w, c in wc.items() if w not in vocab)
        users_of_gram.update(g for g in grams if g not in pub_grams)
        users_of_word.update(wc.keys())
        uses.update(wc)
    shared = [
        (g, c / max(n_users, 1))
        for g, c in users_of_gram.most_common()
        if c >= min_share * n_users and all(w in vocab for w in g.split())
    ]
    shown: list[tuple[str, float]] = []
    seen: set[str] = set()  # word bigrams of the phrases shown: overlapping n-grams of one phrase are shown once
    for g, share in shared:
        bi = _ngrams(g.split(), (2,))
        if len(shown) < top and not bi & seen:
            shown.append((g, share))
        seen |= bi
    single = sorted(
        (w for w, c in users_of_word.items() if c == 1 and uses[w] >= min_personal_uses and w not in pub_counts),
        key=lambda w: (-uses[w], w),
    )  # most typed first: the names a user keeps typing
    return {
        "users": n_users,
        "public_vocabulary": len(vocab),
        "oov_rate": n_oov / max(n_words, 1),
        "shared_phrases": len(shared),
        "top_shared_phrases": [{"phrase": g, "user_share": s} for g, s in shown],
        "single_user_words": len(single),
        "single_user_word_examples": single[:top],
    }
