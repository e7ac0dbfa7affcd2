"""Secret Sharer canaries: measure what a model memorised about one user.

Carlini et al. 2019, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks" (USENIX Security). Secret phrases of a fixed
format (``my pin is four nine two seven``; digits are spelled by default because
the default tokenizer maps digits to ``<unk>``) are planted in chosen training users' messages.
After training, each canary's log-likelihood is ranked among reference
phrases of the same format that were never trained on:

    exposure = log2 |R| − log2 rank(canary)

Exposure near 1 is chance (the canary ranks like a random phrase); the maximum
with |R| references is log2 |R|. When the canary ranks first, the rank says
only "above every reference", so an *extrapolated* exposure is estimated from
a normal distribution fitted to the references' scores (Carlini et al. §4.3):
``−log2 P(score_ref ≥ score_canary)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats

from keyboard_fl.data.splits import Split, User, UserSource
from keyboard_fl.rng import Stream, generator, user_hash


@dataclasses.dataclass(frozen=True)
class CanaryConfig:
    prefix: str = "my pin is"  # the typed context before the secret
    digits: int = 4  # secret = this many random digits separated by spaces (10^digits possible secrets)
    spell: bool = True  # write digits as words ("four nine …"): the default tokenizer's public text has too few digits to cover them
    num_canaries: int = 3  # distinct secrets planted
    repetitions: tuple[int, ...] = (1, 50, 500)  # times each canary is typed (one entry per canary; cycled)
    users_per_canary: int = 1  # training users who type the same canary
    references: int = 2000  # never-trained phrases of the same format ranked against each canary (≥ 1,000)
    seed: int = 0  # canary and reference draw (streams CANARIES, CANARY_PLACEMENT); keyboard-fl sets the run's seed

    def __post_init__(self):
        object.__setattr__(self, "repetitions", tuple(int(r) for r in self.repetitions))  # JSON gives lists
        if self.digits < 1 or self.num_canaries < 1 or self.users_per_canary < 1:
            raise ValueError("canaries need digits, num_canaries and users_per_canary ≥ 1")
        if not self.repetitions or min(self.repetitions) < 1:
            raise ValueError(f"canary repetitions must be ≥ 1, got {self.repetitions}")
        if self.references < 1000:
            raise ValueError(f"use at least 1,000 reference phrases, got {self.references}")
        if self.references + self.num_canaries > 10**self.digits:
            raise ValueError(f"{self.digits} digits allow only {10**self.digits} distinct phrases")


@dataclasses.dataclass(frozen=True)
class Canary:
    secret: str  # "4 9 2 7"
    repetitions: int
    user_ids: tuple[str, ...]

    def phrase(self, prefix: str) -> str:
        return f"{prefix} {self.secret}"


_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _secret(value: int, digits: int, spell: bool = False) -> str:
    chars = str(value).zfill(digits)
    return " ".join(_WORDS[int(c)] for c in chars) if spell else " ".join(chars)


def draw_canaries(config: CanaryConfig, train_user_ids: Sequence[str]) -> tuple[list[Canary], list[str]]:
    """Canaries (secret, repetitions, carriers) and the reference secrets, all distinct."""
    rng = generator(config.seed, Stream.CANARIES)
    values = rng.choice(10**config.digits, size=config.num_canaries + config.references, replace=False)
    need = config.num_canaries * config.users_per_canary
    if need > len(train_user_ids):
        raise ValueError(f"{need} canary carriers requested but only {len(train_user_ids)} training users")
    carriers = rng.choice(len(train_user_ids), size=need, replace=False)
    canaries = []
    for i in range(config.num_canaries):
        ids = tuple(
            train_user_ids[int(j)] for j in carriers[i * config.users_per_canary : (i + 1) * config.users_per_canary]
        )
        reps = config.repetitions[i % len(config.repetitions)]
        canaries.append(Canary(_secret(int(values[i]), config.digits, config.spell), reps, ids))
    refs = [_secret(int(v), config.digits, config.spell) for v in values[config.num_canaries :]]
    return canaries, refs


class CanarySource:
    """A ``UserSource`` that plants canaries in the *training* part of chosen users.

    Each carrier's training messages get the canary phrase ``repetitions``
    times at random positions; nothing else changes. Held-out messages and the
    public split are untouched, so no evaluation or tokenizer text holds a secret.
    """

    def __init__(
        self, source: UserSource, canaries: Sequence[Canary], prefix: str, seed: int, path: tuple[int, ...] = ()
    ):
        self.source, self.canaries, self.prefix, self.seed = source, list(canaries), prefix, seed
        self.path = tuple(path)  # appended to the placement stream's path (another set of canaries: other positions)
        self._by_user: dict[str, list[Canary]] = {}
        for c in self.canaries:
            for u in c.user_ids:
                self._by_user.setdefault(u, []).append(c)

    def num_users(self, split: Split) -> int:
        return self.source.num_users(split)

    def describe(self) -> dict:
        return {**self.source.describe(), "canaries": len(self.canaries)}

    def users(self, split: Split) -> Iterator[User]:
        for user in self.source.users(split):
            yield self._plant(user, split)

    def split_view(self, split: Split, inner=None):
        """The wrapped source's view of ``split`` (``inner`` when already built), carriers planted as users are made."""
        from keyboard_fl.data.access import FunctionView, split_view

        inner = inner if inner is not None else split_view(self.source, split)
        return FunctionView(len(inner), lambda i: self._plant(inner.user(i), split), inner.user_id)

    def _plant(self, user: User, split: Split) -> User:
        planted = self._by_user.get(user.user_id) if split == "train" else None
        if not planted:
            return user
        msgs = list(user.train)
        rng = generator(self.seed, Stream.CANARY_PLACEMENT, user_hash(user.user_id), *self.path)
        for c in planted:
            for _ in range(c.repetitions):
                msgs.insert(int(rng.integers(0, len(msgs) + 1)), c.phrase(self.prefix))
        return dataclasses.replace(user, train=tuple(msgs))


def exposure(canary_score: float, reference_scores: Sequence[float]) -> float:
    """log2 |R| − log2 rank, rank 1 = the canary is more likely than every reference.

    Scores are log-likelihoods (higher = more likely). Ties count against the
    canary (rank = 1 + number of references scoring ≥ it), so exposure is never
    overstated.
    """
    refs = np.asarray(reference_scores, np.float64)
    if refs.size == 0:
        raise ValueError("exposure needs reference phrases")
    rank = 1 + int(np.sum(refs >= canary_score))
    return math.log2(refs.size) - math.log2(rank)


def extrapolated_exposure(canary_score: float, reference_scores: Sequence[float]) -> float:
    """−log2 P(reference ≥ canary) under a normal fitted to the reference scores."""
    refs = np.asarray(reference_scores, np.float64)
    mu, sd = float(refs.mean()), float(refs.std(ddof=1))
    if sd == 0:
        return float("inf") if canary_score > mu else 0.0
    log_sf = stats.norm.logsf(canary_score, loc=mu, scale=sd)  # ln P(X ≥ score)
    return float(-log_sf / math.log(2))
