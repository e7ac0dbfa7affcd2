"""Model-agnostic keyboard quality metrics: next-word top-k accuracy, perplexity.

Whole-word correctness (DESIGN.md §3): at each prediction target
(``text.targets``: a word that starts the message or follows whitespace) the
model sees the previous words and suggests up to k words; the prediction is
*correct* iff the word actually typed next is among the first k suggestions
(exact string equality on normalized words). Targets outside the evaluation
vocabulary (OOV) cannot be predicted by a closed-vocabulary model: they are
excluded from ``top1``/``top3`` and reported separately (``oov_targets``,
``oov_rate``); ``top1_all``/``top3_all`` count them as misses. Specials
(``<s>``, ``</s>``, ``<unk>``, …) are never targets, since ``text.words``
cannot produce them.

Result dict (``summarize_topk`` / ``evaluate_topk``), the shape every model's
evaluation reports:

=================  ============================================================
``top1``/``top3``  hits / in-vocabulary targets, micro-averaged over all users
``top1_all``       hits / all targets (OOV targets count as misses); ``top3_all``
``targets``        number of in-vocabulary (scored) targets
``oov_targets``    number of OOV targets
``oov_rate``       oov_targets / (targets + oov_targets)
``per_user_top1``  distribution of per-user top-1 over users with at least
                   ``min_targets`` scored targets: ``mean``, ``p10``, ``p25``,
                   ``median``, ``p75``, ``p90`` (linear interpolation), ``users``
``users``          number of users evaluated (all, whatever their target count)
=================  ============================================================

Undefined ratios (no targets) are ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from keyboard_fl import text as _text

KS = (1, 3)
PERCENTILES = {"p10": 10, "p25": 25, "median": 50, "p75": 75, "p90": 90}


def topk_hits(predictions: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> np.ndarray:
    """Boolean array: ``targets[i]`` is among the first ``k`` of ``predictions[i]``."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return np.array([t in list(p)[:k] for p, t in zip(predictions, targets)], dtype=bool)


@dataclass
class UserCounts:
    """One user's tallies: scored targets, OOV targets, hits at each k in ``KS``."""

    targets: int = 0
    oov: int = 0
    hits: dict[int, int] = field(default_factory=lambda: {k: 0 for k in KS})


@dataclass
class TopKCounter:
    """Accumulates per-user top-k hits; ``vocab=None`` means nothing is OOV."""

    vocab: frozenset[str] | set[str] | None = None
    per_user: dict[Hashable, UserCounts] = field(default_factory=dict)

    def add(self, user: Hashable, predictions: Sequence[Sequence[str]], targets: Sequence[str]) -> None:
        """Record one batch of (suggestions, word typed) pairs for ``user``."""
        c = self.per_user.setdefault(user, UserCounts())
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for p, t in zip(predictions, targets):
            if self.vocab is not None and t not in self.vocab:
                c.oov += 1
                continue
            c.targets += 1
            p = list(p)
            for k in KS:
                c.hits[k] += t in p[:k]

    def summary(self, min_targets: int = 1) -> dict:
        return summarize_topk(self.per_user, min_targets=min_targets)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize_topk(per_user: Mapping[Hashable, UserCounts], min_targets: int = 1) -> dict:
    """Micro-averaged top-k and the per-user top-1 distribution (module docstring)."""
    tgt = sum(c.targets for c in per_user.values())
    oov = sum(c.oov for c in per_user.values())
    hits = {k: sum(c.hits[k] for c in per_user.values()) for k in KS}
    per = np.array([c.hits[1] / c.targets for c in per_user.values() if c.targets >= max(min_targets, 1)])
    dist = {"mean": float(per.mean()) if per.size else float("nan")}
    dist.update({name: float(np.percentile(per, q)) if per.size else float("nan") for name, q in PERCENTILES.items()})
    dist["users"] = int(per.size)
    return {
        "top1": _ratio(hits[1], tgt),
        "top3": _ratio(hits[3], tgt),
        "top1_all": _ratio(hits[1], tgt + oov),
        "top3_all": _ratio(hits[3], tgt + oov),
        "targets": tgt,
        "oov_targets": oov,
        "oov_rate": _ratio(oov, tgt + oov),
        "per_user_top1": dist,
        "users": len(per_user),
    }


def evaluate_topk(
    predict: Callable[[list[str]], Sequence[str]],
    test_users: Mapping[Hashable, Iterable[str]],
    *,
    vocab: frozenset[str] | set[str] | None = None,
    min_targets: int = 1,
) -> dict:
    """Run ``predict(previous_words) -> suggestions`` at every target of every message.

    Context for a target is ``text.words(message)[:target.index]``. ``predict``
    must return at least 3 suggestions for ``top3`` to be meaningful. It is
    not called for OOV targets (they are misses whatever it returns).
    """
    counter = TopKCounter(vocab=vocab)
    for user, messages in test_users.items():
        preds: list[Sequence[str]] = []
        tgts: list[str] = []
        for m in messages:
            ws = _text.words(m)
            for t in _text.targets(m):
                tgts.append(t.word)
                preds.append(() if vocab is not None and t.word not in vocab else predict(ws[: t.index]))
        counter.add(user, preds, tgts)
    return counter.summary(min_targets=min_targets)


def perplexity(total_neg_log_prob: float, num_tokens: int) -> float:
    """Per-token perplexity ``exp(total / num_tokens)``.

    ``total_neg_log_prob`` is Σ −ln P(token | context) in *nats* (natural log)
    over ``num_tokens`` predicted tokens; the result is per token of whatever
    unit was scored (words for the n-gram baseline, including ``</s>``).
    """
    if num_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(total_neg_log_prob / num_tokens)
