"""Training users as a phone sees them: earlier messages for personal state, later ones to score.

:class:`PersonalUser` divides one simulated training user's time-ordered
messages: ``train`` (the earlier ``User.train``, at most the most recent
``max_train`` messages) builds the state on the device, ``fit`` + ``validation``
is the same part cut once more to choose its weight, and ``test`` (the earliest
``max_test`` of the later ``User.test``) is typed and scored. ``entities``
holds the words of the user's personal entities (:mod:`keyboard_fl.data.persona`:
friends, partner, pets, street, workplace, team) that are not common words:
not among the most frequent public words (``common``: "the", "united", "city")
nor generic suffixes ("street", "labs", "fc").
"""

from __future__ import annotations

import dataclasses

from keyboard_fl import text as text_lib
from keyboard_fl.data import Population
from keyboard_fl.data.persona import Persona

PERSONAL_SLOTS = ("friend", "partner", "pet", "street", "work", "team")  # not local_*: shared by a community

__all__ = ["PERSONAL_SLOTS", "PersonalUser", "entity_words", "training_users"]


@dataclasses.dataclass(frozen=True)
class PersonalUser:
    """One training user's messages, divided for on-device personalisation."""

    user_id: str
    train: tuple[str, ...]  # earlier messages: the personal state (cache, dictionary, bias)
    fit: tuple[str, ...]  # train minus validation: the state while its weight is chosen
    validation: tuple[str, ...]  # last part of train: chooses the weight
    test: tuple[str, ...]  # later messages (User.test): typed and scored
    entities: frozenset[str]  # words of the user's personal entities


def entity_words(persona: Persona, generic: frozenset[str]) -> frozenset[str]:
    """Words of the persona's personal entity names, less the ``generic`` ones."""
    out = set()
    for slot in PERSONAL_SLOTS:
        for value in persona.entities[slot].values:
            out.update(w for w in text_lib.words(value) if w not in generic)
    return frozenset(out)


def training_users(
    population: Population,
    n: int,
    max_train: int,
    max_test: int,
    validation_fraction: float,
    common: frozenset[str] = frozenset(),
) -> list[PersonalUser]:
    """The first ``n`` training users that have held-out messages, in id order (``common``: not entity words)."""
    p = population.res.persona
    suffixes = (*p["street_suffixes"], *p["workplace_suffixes"], "fc")
    generic = common | frozenset(w for s in suffixes for w in text_lib.words(s))
    out = []
    for index in population.user_ids("train"):
        if len(out) == n:
            break
        uid = population.user_id(index)
        user = population.user(uid, "train")
        if not user.test or not user.train:
            continue
        train = user.train[-max_train:]
        k = int(round(len(train) * validation_fraction))
        k = min(k, len(train) - 1)
        fit, val = (train[: len(train) - k], train[len(train) - k :]) if k > 0 else (train, ())
        persona, _ = population.persona(uid)
        out.append(PersonalUser(uid, train, fit, val, user.test[:max_test], entity_words(persona, generic)))
    return out
