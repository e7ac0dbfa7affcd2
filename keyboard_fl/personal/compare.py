"""Which global model does personalization help most? A paired comparison over the same users.

Every global model of a run is personalised for the *same* training users
(:mod:`keyboard_fl.personal.evaluate`), so the gains of two models are paired
by user. The gain of a personalized strip over the global one is pooled over
users, as the project's top-k is (hits over scored targets):

    gain(model) = Σ_u (hits_u(personalized) − hits_u(global)) / Σ_u targets_u

and the question "does it help model A more than model B" is the sign of
``gain(A) − gain(B)``. Users, not words, are the independent unit (a user's
words share their cache and their λ), so its uncertainty is a paired bootstrap
over users (Efron & Tibshirani 1993, ch. 13; the user-level resampling of
keyboard A/B metrics): each resample draws users with replacement and
recomputes both pooled gains on the same draw. ``scipy.stats.bootstrap``
does the resampling (percentile interval, seeded).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

__all__ = ["comparison_table", "gain_difference", "pooled_gain"]


def pooled_gain(targets, personal_hits, global_hits) -> float:
    """``Σ (personal − global) hits / Σ targets`` (NaN with no targets)."""
    n = np.sum(targets)
    return float((np.sum(personal_hits) - np.sum(global_hits)) / n) if n else float("nan")


def _arrays(result: dict, variant: str, k: int, users: list) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, personal − global hits)`` per user of ``users``, in that order."""
    pu = result["per_user"]
    if f"top{k}" not in pu or variant not in pu[f"top{k}"]:
        raise ValueError(f"result of {result.get('model')!r} has no top-{k} counts for strip {variant!r}")
    index = {u: i for i, u in enumerate(pu["users"])}
    rows = [index[u] for u in users]
    hits = pu[f"top{k}"]
    targets = np.asarray(pu["targets"], float)[rows]
    return targets, (np.asarray(hits[variant], float) - np.asarray(hits["global"], float))[rows]


def gain_difference(
    a: dict,
    b: dict,
    variant: str = "cache",
    k: int = 1,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """``gain(a) − gain(b)`` of strip ``variant`` over the users both results scored, with a paired bootstrap CI.

    ``a`` and ``b`` are :func:`~keyboard_fl.personal.evaluate.evaluate_model` results.
    Returns the two pooled gains, their difference, the interval ``[low, high]``
    and the number of users.
    """
    for r in (a, b):
        if not r.get("per_user"):
            raise ValueError(f"result of {r.get('model')!r} has no per-user counts (re-run the evaluation)")
    users = sorted(set(a["per_user"]["users"]) & set(b["per_user"]["users"]), key=str)
    if not users:
        raise ValueError(f"{a.get('model')!r} and {b.get('model')!r} scored no user in common")
    na, da = _arrays(a, variant, k, users)
    nb, db = _arrays(b, variant, k, users)

    def statistic(na, da, nb, db, axis=-1):
        return np.sum(da, axis) / np.sum(na, axis) - np.sum(db, axis) / np.sum(nb, axis)

    out = {
        "variant": variant,
        "k": k,
        "users": len(users),
        "gain_a": pooled_gain(na, da, 0),
        "gain_b": pooled_gain(nb, db, 0),
    }
    out["difference"] = out["gain_a"] - out["gain_b"]
    res = stats.bootstrap(
        (na, da, nb, db),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    out.update(low=float(res.confidence_interval.low), high=float(res.confidence_interval.high), confidence=confidence)
    return out


def comparison_table(report: dict, variants: tuple[str, ...] = ("cache", "cache+bias"), k: int = 1) -> str:
    """Markdown: for every pair of models, the difference of their top-``k`` gains with its 95% interval."""
    results = report["results"]
    rows = []
    for (na, a), (nb, b) in itertools.combinations(results.items(), 2):
        for v in variants:
            d = gain_difference(a, b, v, k)
            verdict = "A more" if d["low"] > 0 else "B more" if d["high"] < 0 else "no clear difference"
            rows.append(
                f"| {na} | {nb} | {v} | {100 * d['gain_a']:+.2f} | {100 * d['gain_b']:+.2f} "
                f"| {100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] | {verdict} |"
            )
    head = (
        f"| model A | model B | strip | A's top-{k} gain (pp) | B's top-{k} gain (pp) "
        "| A − B [95% paired bootstrap over users] | personalization helps |\n"
        "|---|---|---|---:|---:|---|---|\n"
    )
    return head + "\n".join(rows) + "\n"
