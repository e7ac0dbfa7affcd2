"""Phrase canaries: many Secret Sharer phrases, half planted, for an empirical ε of any mode.

Canary clients (:mod:`keyboard_fl.fl.canary_clients`) need clients; the
central baseline has none. Here ``count`` random phrases of one template
(``"my secret words are" w₁ w₂``, words drawn from the simulator's long tail of
common English words, all distinct) are drawn and each gets an independent
fair coin (Steinke, Nasr, Jagielski 2023 assume one per canary). A phrase whose
coin says "in" is typed ``repetitions`` times by its carrier, one training user,
the way Secret Sharer canaries are (Carlini et al. 2019,
:class:`~keyboard_fl.privacy.canaries.CanarySource`); the others are never
typed. After training each phrase is scored by the model's log-likelihood
(minus the public starting point's, when there is one, which removes how
likely a phrase was before any private data), and the in/out scores go to the
one-run bound (:func:`keyboard_fl.privacy.empirical.one_run_bound`) and the
Gaussian-fit ε_est.

Carriers are drawn for every phrase, in or out, before the coins, among the
first ``baseline_users`` training users: the users the central baseline trains
on (``eval.baseline_users``), so all three modes can see every planted phrase.
Planting a phrase changes one existing user's data, so the bound to compare
with is the replace-one-user ε (``REPLACE_ONE`` in dp-accounting), not the
add/remove ε the ledger reports; :func:`replace_one_epsilon` computes it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

from keyboard_fl.privacy.canaries import Canary
from keyboard_fl.rng import Stream, generator

__all__ = ["PLACEMENT_PATH", "PhraseCanaries", "PhraseCanaryConfig", "draw_phrases", "replace_one_epsilon"]

_PATH = 1  # stream path of the phrases under CANARIES / CANARY_PLACEMENT (the Secret Sharer canaries use none)


@dataclasses.dataclass(frozen=True)
class PhraseCanaryConfig:
    """Planted phrases for the empirical-ε audit of any mode (central included)."""

    count: int = 200  # phrases drawn (in + out); about half are planted
    repetitions: int = 50  # times a planted phrase is typed by its carrier (the Secret Sharer canaries: 1, 50, 500)
    prefix: str = "my secret words are"  # the template's fixed words
    words: int = 2  # random words after the prefix (a phrase is unique by them)
    confidence: float = 0.95  # confidence level of the one-run lower bound ε_lower
    fpr: float = 1e-3  # false-positive rate at which the attack's TPR is reported

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 4):
            raise ValueError(f"phrase_canaries.count must be an integer ≥ 4, got {self.count!r}")
        if not (isinstance(self.repetitions, int) and self.repetitions >= 1):
            raise ValueError(f"phrase_canaries.repetitions must be an integer ≥ 1, got {self.repetitions!r}")
        if not (isinstance(self.words, int) and self.words >= 1):
            raise ValueError(f"phrase_canaries.words must be an integer ≥ 1, got {self.words!r}")
        if not self.prefix.strip():
            raise ValueError("phrase_canaries.prefix must not be empty")
        for name in ("confidence", "fpr"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"phrase_canaries.{name} must be in (0, 1), got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class PhraseCanaries:
    """A run's drawn phrases: text, coin and carrier of each (carriers of "out" phrases type nothing)."""

    prefix: str
    secrets: tuple[str, ...]  # each phrase's random words
    inserted: np.ndarray  # bool[count]: the coin
    carriers: tuple[str, ...]  # training user id of each phrase's carrier
    repetitions: int

    @property
    def phrases(self) -> list[str]:
        """Every phrase, prefix included, in draw order."""
        return [f"{self.prefix} {s}" for s in self.secrets]

    def planted(self) -> list[Canary]:
        """The "in" phrases as Secret Sharer canaries (plant with ``CanarySource(..., prefix, seed, path=(1,))``)."""
        return [Canary(s, self.repetitions, (u,)) for s, u, i in zip(self.secrets, self.carriers, self.inserted) if i]


POOL_WORDS = 3000  # the most frequent words of the simulator's long tail (few pieces each: easier to memorise)


def _word_pool() -> list[str]:
    from keyboard_fl.data.resources import load_resources

    pool = [w for w in load_resources().common_words.values if re.fullmatch("[a-z]{3,}", w)]  # by frequency
    return list(dict.fromkeys(pool))[:POOL_WORDS]


def draw_phrases(
    config: PhraseCanaryConfig, seed: int, train_user_ids: Sequence[str], baseline_users: int
) -> PhraseCanaries:
    """Phrases, coins and carriers (stream ``CANARIES``, path 1); carriers among the first ``baseline_users`` users.

    Words are distinct across all phrases while the pool allows (else drawn
    with replacement); carriers are distinct while there are enough users.
    """
    n_users = min(int(baseline_users), len(train_user_ids))
    if n_users < 1:
        raise ValueError("phrase canaries need at least one training user")
    rng = generator(seed, Stream.CANARIES, _PATH)
    pool = _word_pool()
    need = config.count * config.words
    words = rng.choice(len(pool), size=need, replace=need > len(pool)).reshape(config.count, config.words)
    secrets = tuple(" ".join(pool[int(i)] for i in row) for row in words)
    carriers = rng.choice(n_users, size=config.count, replace=config.count > n_users)
    inserted = rng.random(config.count) < 0.5
    ids = tuple(train_user_ids[int(c)] for c in carriers)
    return PhraseCanaries(config.prefix, secrets, inserted, ids, config.repetitions)


PLACEMENT_PATH = (_PATH,)  # CanarySource(path=...) of the phrases: their own positions in a carrier's messages


def replace_one_epsilon(metrics: dict) -> float | None:
    """The run's ε for replacing one user's data (what planting a phrase does); ∞ without DP, None if unknown.

    Same mechanism, rounds and δ as the ledger, accounted by PLD with the
    ``REPLACE_ONE`` relation (its sensitivity is the clip norm either way: a
    replaced update moves the sum by at most 2C, from −C·v to +C·v).
    """
    from keyboard_fl.runs import is_private

    if not is_private(metrics):
        return math.inf
    if metrics.get("neighbouring") == "replace-one user":
        return float(metrics["epsilon"])
    import dp_accounting

    from keyboard_fl.privacy.accountant import event_epsilon
    from keyboard_fl.privacy.mechanism import mechanism_from_dict

    try:
        event = mechanism_from_dict(metrics["mechanism"]).dp_event(int(metrics["rounds"]))
        return event_epsilon(event, float(metrics["delta"]), relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    except (KeyError, ValueError, NotImplementedError, TypeError):
        return None
