"""Personalized against global, on training users' own later messages.

Each training user's messages are in time order (:mod:`keyboard_fl.data.splits`):
the earlier ``User.train`` part builds the personal state on the device, the
later ``User.test`` part is typed and scored. Inside ``User.train`` the last
``validation_fraction`` validates the personal state's one weight (the cache's
λ, the bias's μ): state from the part before, scored on the part held out.

Variants, each a :class:`~keyboard_fl.suggester.Suggester` for KSR:

==============  ==================================================================
``global``      the global model, public word list only (what every phone gets)
``dictionary``  + the words this user typed join the dictionary (no new scores)
``cache``       + the personal word/bigram cache mixed in with the user's λ
``bias``        + the output bias fine-tuned on the user's training messages
``cache+bias``  the cache mixed with the bias-tuned model (same λ)
==============  ==================================================================

During the scored messages the device keeps learning, as a keyboard does: each
message joins the cache and the dictionary once it has been typed (the bias
stays as fitted). Top-1 / top-3 are over in-vocabulary targets as everywhere
in the project (:mod:`keyboard_fl.eval.metrics`); ``entity`` counts only the
words of the user's personal entities (friends, partner, pets, street,
workplace, team: :mod:`keyboard_fl.data.persona`), in vocabulary or not.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from keyboard_fl import text as text_lib
from keyboard_fl.data import Population
from keyboard_fl.dictionary import Dictionary
from keyboard_fl.eval.ksr import type_message
from keyboard_fl.eval.metrics import PERCENTILES, TopKCounter
from keyboard_fl.eval.neural import predict_messages
from keyboard_fl.personal.bias import BiasConfig, fit_bias, with_bias
from keyboard_fl.personal.cache import BOS, CacheConfig, CachedSuggester, NgramCache, mix
from keyboard_fl.personal.global_models import GlobalModel
from keyboard_fl.personal.users import PersonalUser, training_users
from keyboard_fl.suggest import Suggester

VARIANTS = ("global", "dictionary", "cache", "bias", "cache+bias")
PERSONALIZED = VARIANTS[1:]
CANDIDATES = 24  # every word the search reaches (beam 8 × depth 3), filtered afterwards

__all__ = ["PERSONALIZED", "PersonalEvalConfig", "VARIANTS", "evaluate_model"]


@dataclasses.dataclass(frozen=True)
class PersonalEvalConfig:
    """Which training users are scored and how their personal state is built."""

    users: int = 200  # the first training users with held-out messages (modest: this runs on 2 cores)
    max_test_messages: int = 12  # each user's earliest held-out messages scored (as the run's eval)
    max_train_messages: int = 400  # the user's most recent training messages forming the personal state
    validation_fraction: float = 0.2  # later share of the training messages that validates λ and μ
    weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)  # λ grid of the cache
    # Shrinkage of each user's λ toward the population's: the users' mean validation hits per λ
    # count as this many extra users (0: each user's own few messages alone decide).
    prior_users: float = 1.0
    ksr_messages: int = 100  # first held-out message of the first users, typed with each variant's strip
    min_targets: int = 5  # users with fewer scored targets are left out of the per-user spread
    common_words: int = 1000  # entity words exclude the public list's most frequent ones ("the", "city")
    cache: CacheConfig = CacheConfig()  # smoothing of the cache (its weight is validated per user)
    bias: BiasConfig = BiasConfig()  # the output-bias fine-tuning

    def __post_init__(self) -> None:
        if self.users < 1 or self.max_test_messages < 1 or self.max_train_messages < 1:
            raise ValueError("PersonalEvalConfig needs users, max_test_messages, max_train_messages >= 1")
        if not self.weights or not all(0.0 <= w <= 1.0 for w in self.weights):
            raise ValueError(f"PersonalEvalConfig.weights must be in [0, 1], got {self.weights}")
        if not self.prior_users >= 0:
            raise ValueError(f"PersonalEvalConfig.prior_users must be >= 0, got {self.prior_users}")


def _scored(model: GlobalModel, params, messages: list[str]) -> list[list[tuple[str, str, dict[str, float]]]]:
    """Per message: ``(target, previous word, {word: P_global})`` at each target (no dictionary filter)."""
    preds, _, _ = predict_messages(
        model.graphdef, params, model.tokenizer, messages, k=CANDIDATES, scored=True, batch_size=16
    )
    out = []
    for m, per in zip(messages, preds, strict=True):
        ws, ts = text_lib.words(m), list(text_lib.targets(m))
        if [t.word for t in ts] != [w for w, _ in per]:
            raise AssertionError(f"targets of {m!r} differ between the tokenizer and keyboard_fl.text")
        out.append(
            [
                (t.word, ws[t.index - 1] if t.index else BOS, {w: math.exp(s) for w, s in c})
                for t, (_, c) in zip(ts, per)
            ]
        )
    return out


def _filtered(probs: dict[str, float], accepts: Callable[[str], bool]) -> dict[str, float]:
    return {w: p for w, p in probs.items() if accepts(w)}


def _weight_hits(val: list, fit_messages: list[str], public: Dictionary, cfg: PersonalEvalConfig) -> np.ndarray:
    """Top-1 + top-3 hits of each λ of ``cfg.weights`` on one user's validation messages."""
    cache = NgramCache(cfg.cache.alpha).learn_all(fit_messages)
    hits = np.zeros(len(cfg.weights))
    for per_target, message in val:
        for target, prev, probs in per_target:
            g = _filtered(probs, lambda w: w in public or w in cache)  # noqa: B023
            c = cache.candidates(prev)
            for i, lam in enumerate(cfg.weights):
                top = [w for w, _ in mix(g, c, lam, 3)]
                hits[i] += (top[:1] == [target]) + (target in top)
        cache.learn(message)
    return hits


def choose_weight(hits: np.ndarray, population: np.ndarray, cfg: PersonalEvalConfig) -> float:
    """One user's λ: the most validation hits once ``cfg.prior_users`` × the population's mean hits
    per λ are added (shrinkage toward the population's choice, as in empirical Bayes: a user's
    dozen validation messages alone pick λ noisily); ties go to the λ closest to the default."""
    score = np.asarray(hits, float) + cfg.prior_users * np.asarray(population, float)
    best = score.max()
    ties = [w for w, h in zip(cfg.weights, score) if np.isclose(h, best)]
    return min(ties, key=lambda w: (abs(w - cfg.cache.weight), w))


class _Tally:
    """Per-variant counters: in-vocabulary targets (project metric) and personal-entity targets."""

    def __init__(self, vocab: frozenset[str]):
        self.vocab = {v: TopKCounter(vocab=vocab) for v in VARIANTS}
        self.entity = {v: TopKCounter() for v in VARIANTS}

    def add(self, user: str, target: str, is_entity: bool, tops: dict[str, list[str]]) -> None:
        for v, top in tops.items():
            self.vocab[v].add(user, [top], [target])
            if is_entity:
                self.entity[v].add(user, [top], [target])


def _score_user(
    user: PersonalUser, glob: list, tuned: list, lam: float, public: Dictionary, tally: _Tally, alpha: float
):
    """Type the user's held-out messages with every variant, learning each message after it is typed."""
    cache = NgramCache(alpha).learn_all(user.train)
    for message, g_per, b_per in zip(user.test, glob, tuned, strict=True):
        for (target, prev, g), (_, _, b) in zip(g_per, b_per, strict=True):
            own = lambda w: w in public or w in cache  # noqa: E731, B023
            gd, bd, c = _filtered(g, own), _filtered(b, own), cache.candidates(prev)
            tops = {
                "global": mix(_filtered(g, public.__contains__), {}, 0.0),
                "dictionary": mix(gd, {}, 0.0),
                "cache": mix(gd, c, lam),
                "bias": mix(bd, {}, 0.0),
                "cache+bias": mix(bd, c, lam),
            }
            tally.add(user.user_id, target, target in user.entities, {v: [w for w, _ in t] for v, t in tops.items()})
        cache.learn(message)


def _ksr(model: GlobalModel, users: list[PersonalUser], lam: dict, deltas: dict, cfg: PersonalEvalConfig) -> dict:
    """Keystroke savings of each variant's strip over each user's first held-out message."""
    keys = {v: 0 for v in VARIANTS}
    chars = 0
    for user in [u for u in users if u.test][: cfg.ksr_messages]:
        own = Dictionary(model.dictionary.public, frozenset(w for m in user.train for w in text_lib.words(m)))
        glob = Suggester(model.graphdef, model.params, model.tokenizer, dictionary=model.dictionary)
        tuned = Suggester(
            model.graphdef, with_bias(model.params, deltas[user.user_id]), model.tokenizer, dictionary=own
        )
        cache = NgramCache(cfg.cache.alpha).learn_all(user.train)
        strips = {
            "global": glob,
            "dictionary": Suggester(model.graphdef, model.params, model.tokenizer, dictionary=own),
            "cache": CachedSuggester(glob, cache, dataclasses.replace(cfg.cache, weight=lam[user.user_id])),
            "bias": tuned,
            "cache+bias": CachedSuggester(tuned, cache, dataclasses.replace(cfg.cache, weight=lam[user.user_id])),
        }
        for v, s in strips.items():
            keys[v] += type_message(user.test[0], s)["keystrokes"]
        chars += len(text_lib.normalize(user.test[0]))
    return {v: (1.0 - keys[v] / chars if chars else float("nan")) for v in VARIANTS} | {"characters": chars}


def _spread(tally: _Tally, variant: str, min_targets: int) -> dict:
    """Per-user top-1 gain of ``variant`` over ``global`` (users with ≥ ``min_targets`` targets)."""
    base, pers = tally.vocab["global"].per_user, tally.vocab[variant].per_user
    gains = np.array(
        [pers[u].hits[1] / c.targets - c.hits[1] / c.targets for u, c in base.items() if c.targets >= min_targets]
    )
    if not gains.size:
        return {"users": 0}
    out = {"users": int(gains.size), "mean": float(gains.mean())}
    out.update({k: float(np.percentile(gains, q)) for k, q in PERCENTILES.items()})
    out.update(better=float(np.mean(gains > 0)), worse=float(np.mean(gains < 0)), same=float(np.mean(gains == 0)))
    return out


def _per_user(tally: _Tally) -> dict:
    """Each scored user's in-vocabulary targets and top-1 / top-3 hits per variant (for paired comparisons)."""
    users = sorted(tally.vocab["global"].per_user)
    counts = {v: tally.vocab[v].per_user for v in VARIANTS}
    return {
        "users": users,
        "targets": [counts["global"][u].targets for u in users],
        **{f"top{k}": {v: [counts[v][u].hits[k] for u in users] for v in VARIANTS} for k in (1, 3)},
    }


def evaluate_model(model: GlobalModel, cfg: PersonalEvalConfig, log: Callable[[str], None] = print) -> dict:
    """Every variant's top-1 / top-3 / KSR, per-user gain spread and personal-entity accuracy for ``model``."""
    t0 = time.perf_counter()
    users = training_users(
        Population(model.config.population),
        cfg.users,
        cfg.max_train_messages,
        cfg.max_test_messages,
        cfg.validation_fraction,
        frozenset(model.words[: cfg.common_words]),
    )
    public = model.dictionary
    val_msgs = [m for u in users for m in u.validation]
    flat = _scored(model, model.params, val_msgs + [m for u in users for m in u.test])
    val, test, lam, mu, deltas = {}, {}, {}, {}, {}
    for u in users:
        val[u.user_id] = list(zip(flat[: len(u.validation)], u.validation))
        flat = flat[len(u.validation) :]
    for u in users:
        test[u.user_id], flat = flat[: len(u.test)], flat[len(u.test) :]
    log(f"{model.name}: global predictions for {len(users)} users ({time.perf_counter() - t0:.0f}s)")
    tally = _Tally(public.public)
    hits = {u.user_id: _weight_hits(val[u.user_id], list(u.fit), public, cfg) for u in users}
    population = np.mean(list(hits.values()), axis=0)  # validation messages only: no test data
    for i, u in enumerate(users):
        lam[u.user_id] = choose_weight(hits[u.user_id], population, cfg)
        deltas[u.user_id], mu[u.user_id], _ = fit_bias(
            model.graphdef, model.params, model.tokenizer, list(u.train), model.config.seq_len, cfg.bias
        )
        tuned = _scored(model, with_bias(model.params, deltas[u.user_id]), list(u.test))
        _score_user(u, test[u.user_id], tuned, lam[u.user_id], public, tally, cfg.cache.alpha)
        if (i + 1) % 50 == 0:
            log(f"{model.name}: {i + 1}/{len(users)} users personalised ({time.perf_counter() - t0:.0f}s)")
    ksr = _ksr(model, users, lam, deltas, cfg) if cfg.ksr_messages else {}
    out = {"model": model.name, "privacy": model.privacy, "users": len(users), "variants": {}}
    for v in VARIANTS:
        s, e = tally.vocab[v].summary(cfg.min_targets), tally.entity[v].summary(1)
        out["variants"][v] = {
            **{k: s[k] for k in ("top1", "top3", "top1_all", "top3_all", "targets", "oov_targets")},
            "entity_top1": e["top1"],
            "entity_top3": e["top3"],
            "entity_targets": e["targets"],
            "ksr": ksr.get(v, float("nan")),
            "per_user_gain_top1": _spread(tally, v, cfg.min_targets) if v != "global" else None,
        }
    out["per_user"] = _per_user(tally)
    out["ksr_characters"] = ksr.get("characters", 0)
    out["weights"] = {str(w): sum(x == w for x in lam.values()) for w in cfg.weights}
    out["bias_l2"] = {str(m): sum(x == m for x in mu.values()) for m in (*cfg.bias.l2_grid, float("inf"))}
    out["seconds"] = time.perf_counter() - t0
    return out
