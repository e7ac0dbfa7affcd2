"""Who a simulated user is: the :class:`Persona` and its construction.

A persona is drawn from one user's random stream (:class:`UniformStream` over the
user's ``numpy.random.Generator``) given the population-wide :class:`PersonaKit`
(name lists, topic mixes, communities). The order of the draws is part of the
format: changing it changes every generated user.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections.abc import Callable

import numpy as np

from .register import Community, Register, community_cum
from .resources import Resources, WordList, zipf_cum


class UniformStream:
    """Uniform floats drawn from a Generator in blocks (fast scalar draws)."""

    __slots__ = ("rng", "buf", "i")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buf: list[float] = rng.random(1024).tolist()
        self.i = 0

    def u(self) -> float:
        i = self.i
        if i >= len(self.buf):
            self.buf = self.rng.random(1024).tolist()
            i = 0
        self.i = i + 1
        return self.buf[i]

    def pick(self, values, cum) -> object:
        return values[bisect_right(cum, self.u() * cum[-1])]


@dataclasses.dataclass(frozen=True)
class Persona:
    """Who a simulated user is and how they type."""

    topics: tuple[str, ...]  # topics this user writes about
    topic_cum: tuple[float, ...]  # cumulative topic weights (sparse Dirichlet mix)
    entities: dict[str, WordList]  # personal slots: friend, pet, street, work, team, partner
    pet_words: tuple[str, ...]  # long-tail words this user favours
    pet_word_p: float  # chance a long-tail slot uses one of pet_words
    greet_p: float  # chance a message opens with a greeting
    greeting: WordList  # this user's greetings
    signoff_p: float
    signoff: WordList
    abbrevs: tuple[tuple[str, str], ...]  # (" word ", " abbr ") pairs this user uses
    abbrev_p: float  # chance each applicable abbreviation fires
    filler_p: float  # chance of a "lol"/"haha" filler after a clause
    fillers: tuple[str, ...]
    emoji_p: float
    emoji: tuple[str, ...]
    case: str  # "lower" | "sentence" | "upper_i" (only the pronoun I capitalised)
    end_punct_p: float  # chance a message ends with punctuation
    clause_sep: str  # how clauses are joined: ". ", ", ", " ", "! "
    mean_extra_clauses: float  # Poisson mean of clauses beyond the first
    stay_on_topic_p: float  # chance the next message continues the previous topic
    chatter_p: float  # chance a clause is free-form chatter (class Markov chain) instead of a template
    mention_p: float  # chance a chatter subject / greeting names one of the user's people
    num_messages: int
    register: str = "chat"  # "chat" (private users) or "public" (the public split writes web/news-like text)
    community: int = 0  # index of the user's community (register.py): its local names are in entities["local_*"]
    phrase_p: float = 0.0  # chance a message carries one of the shared chat phrases
    local_p: float = 0.0  # chance a {place} slot names a local place of the user's community


@dataclasses.dataclass(frozen=True)
class PersonaKit:
    """Population-wide inputs of persona construction (no randomness of its own)."""

    res: Resources
    reg: Register
    communities: tuple[Community, ...]
    topic_mix: dict[str, tuple[tuple[str, ...], np.ndarray]]  # register -> (topics, Dirichlet alphas)
    community_cum: tuple[float, ...]
    first: WordList  # first names
    petnames: WordList
    teams: WordList
    abbr: tuple[tuple[str, str], ...]  # (" word ", " abbr ") pairs
    syl: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # name syllables: onset, vowel, coda


def persona_kit(res: Resources, reg: Register, communities: tuple[Community, ...]) -> PersonaKit:
    """The :class:`PersonaKit` of resources ``res`` with register ``reg``."""
    p = res.persona
    topics = tuple(res.topics)
    pop = p.get("topic_popularity", {})
    chat = {t: float(reg.chat_topics.get(t, pop.get(t, 1.0))) for t in topics}
    public = {t: float(reg.public_topics.get(t, 0.0)) for t in topics}
    # per register: (topics it writes about, Dirichlet alphas); a zero-popularity topic is never used
    topic_mix = {
        r: (tuple(t for t in topics if w[t] > 0), np.array([0.25 * w[t] for t in topics if w[t] > 0]))
        for r, w in (("chat", chat), ("public", public))
    }
    sy = p["name_syllables"]
    return PersonaKit(
        res=res,
        reg=reg,
        communities=communities,
        topic_mix=topic_mix,
        community_cum=community_cum(reg),
        first=WordList(tuple(p["first_names"]), tuple(zipf_cum(len(p["first_names"]), 0.8))),
        petnames=WordList(tuple(p["pet_names"]), tuple(zipf_cum(len(p["pet_names"]), 0.8))),
        teams=WordList(tuple(p["teams"]), tuple(zipf_cum(len(p["teams"]), 1.0))),
        abbr=tuple((f" {k} ", f" {v} ") for k, v in p["abbreviations"].items()),
        syl=(tuple(sy["onset"]), tuple(sy["vowel"]), tuple(sy["coda"])),
    )


def make_persona(
    kit: PersonaKit,
    s: UniformStream,
    register: str,
    *,
    mean_messages: float,
    messages_sigma: float,
    max_messages: int,
) -> Persona:
    """The persona of one user of ``register`` ("chat" or "public"), drawn from ``s``.

    ``s`` is the user's fresh stream; on return it is positioned after the persona.
    The message count is lognormal (mean ``mean_messages``), capped at ``max_messages``.
    """
    mu = math.log(mean_messages) - messages_sigma**2 / 2
    n_msgs = int(min(max_messages, max(1, round(s.rng.lognormal(mu, messages_sigma)))))
    topics, cum = _topics(kit, register, s)
    ents, community = _entities(kit, s)
    persona = _habits(kit, s, topics, cum, ents, community, n_msgs)
    return _apply_register(persona, kit.reg, register, s)


def _topics(kit: PersonaKit, register: str, s: UniformStream) -> tuple[list[str], list[float]]:
    """Up to five topics of a sparse Dirichlet mix and their cumulative weights."""
    reg_topics, alpha = kit.topic_mix[register]
    w = s.rng.dirichlet(alpha)
    has_pet = s.u() < 0.4
    order = np.argsort(-w, kind="stable")[:5]
    topics, cum, tot = [], [], 0.0
    for j in order.tolist():
        t = reg_topics[j]
        if t == "pets" and not has_pet:
            continue
        tot += float(w[j]) + 1e-9
        topics.append(t)
        cum.append(tot)
    return topics, cum


def _uniq(gen: Callable[[], str], k: int) -> WordList:
    """Up to ``k`` distinct values of ``gen`` (at most ``3 k`` tries), Zipf-weighted."""
    vals = []
    for _ in range(k * 3):
        v = gen()
        if v not in vals:
            vals.append(v)
        if len(vals) == k:
            break
    return WordList(tuple(vals), tuple(zipf_cum(len(vals), 1.2)))


def _name(syl: tuple[tuple[str, ...], ...], s: UniformStream) -> str:
    """A made-up name of two or three syllables."""
    on, vo, co = syl
    n = 2 if s.u() < 0.7 else 3
    parts = []
    for _ in range(n):
        parts.append(on[int(s.u() * len(on))] + vo[int(s.u() * len(vo))])
    parts.append(co[int(s.u() * len(co))])
    return "".join(parts)


def _entities(kit: PersonaKit, s: UniformStream) -> tuple[dict[str, WordList], int]:
    """The user's personal names and community (whose local names join them)."""
    p, syl = kit.res.persona, kit.syl
    first, petnames, teams = kit.first, kit.petnames, kit.teams
    person = lambda: _name(syl, s) if s.u() < 0.5 else s.pick(first.values, first.cum)
    ents = {
        "friend": _uniq(person, 2 + int(s.u() * 6)),
        "partner": _uniq(person, 1),
        "pet": _uniq(
            lambda: _name(syl, s) if s.u() < 0.6 else s.pick(petnames.values, petnames.cum),
            1 + (s.u() < 0.2),
        ),
        "street": _uniq(lambda: _name(syl, s) + " " + p["street_suffixes"][int(s.u() * len(p["street_suffixes"]))], 1),
        "work": _uniq(
            lambda: _name(syl, s) + " " + p["workplace_suffixes"][int(s.u() * len(p["workplace_suffixes"]))], 1
        ),
        "team": _uniq(
            lambda: _name(syl, s) + " fc" if s.u() < 0.3 else s.pick(teams.values, teams.cum),
            1 + (s.u() < 0.3),
        ),
    }
    community = bisect_right(kit.community_cum, s.u() * kit.community_cum[-1])
    com = kit.communities[community]
    ents.update(local_place=com.places, local_team=com.teams, local_event=com.events)
    return ents, community


def _habits(
    kit: PersonaKit,
    s: UniformStream,
    topics: list[str],
    cum: list[float],
    ents: dict[str, WordList],
    community: int,
    n_msgs: int,
) -> Persona:
    """The chat persona: long-tail words and typing habits on top of topics and names."""
    p, res = kit.res.persona, kit.res
    cw = res.common_words
    pet_words = tuple(cw.values[bisect_right(cw.cum, s.u() * cw.cum[-1])] for _ in range(15 + int(s.u() * 30)))
    g, so = p["greetings"], p["signoffs"]
    gz, sz = zipf_cum(len(g)), zipf_cum(len(so))
    greet = _uniq(lambda: g[bisect_right(gz, s.u() * gz[-1])], 1 + int(s.u() * 3))
    sign = _uniq(lambda: so[bisect_right(sz, s.u() * sz[-1])], 1 + int(s.u() * 3))
    abbrev_user = s.u() ** 2  # most users abbreviate little, some a lot
    abbrevs = tuple(a for a in kit.abbr if s.u() < abbrev_user)
    fl, em = p["fillers"], p["emoji"]
    fillers = tuple(fl[int(s.u() * len(fl))] for _ in range(2))
    emoji = tuple(em[int(s.u() * len(em))] for _ in range(3))
    cu = s.u()
    case = "lower" if cu < 0.45 else ("sentence" if cu < 0.85 else "upper_i")
    sep = (". ", ", ", " ", "! ")[bisect_right((0.45, 0.7, 0.9, 1.0), s.u())]
    return Persona(
        topics=tuple(topics),
        topic_cum=tuple(cum),
        entities=ents,
        pet_words=pet_words,
        pet_word_p=0.2 + 0.4 * s.u(),
        greet_p=0.35 * s.u(),
        greeting=greet,
        signoff_p=0.25 * s.u(),
        signoff=sign,
        abbrevs=abbrevs,
        abbrev_p=0.5 + 0.5 * s.u(),
        filler_p=0.25 * s.u() ** 2,
        fillers=fillers,
        emoji_p=0.35 * s.u() ** 2,
        emoji=emoji,
        case=case,
        end_punct_p=s.u(),
        clause_sep=sep,
        mean_extra_clauses=0.1 + 1.0 * s.u() ** 2,
        stay_on_topic_p=0.2 + 0.5 * s.u(),
        chatter_p=float(s.rng.beta(3.5, 3.5)),
        mention_p=0.1 + 0.4 * s.u(),
        num_messages=n_msgs,
        community=community,
    )


def _apply_register(persona: Persona, reg: Register, register: str, s: UniformStream) -> Persona:
    """Public users write text (no chat habits); chat users get phrase and local-place rates."""
    if register == "public":  # written text: no chat habits, full sentences, more free-form prose
        lo, hi = reg.public_extra_clauses
        return dataclasses.replace(
            persona,
            register="public",
            greet_p=0.0,
            signoff_p=0.0,
            abbrevs=(),
            filler_p=0.0,
            emoji_p=0.0,
            case="sentence",
            end_punct_p=1.0,
            clause_sep=". ",
            mention_p=0.0,
            chatter_p=float(s.rng.beta(*reg.public_chatter_beta)),
            mean_extra_clauses=lo + (hi - lo) * s.u(),
        )
    lo, hi = reg.phrase_p
    return dataclasses.replace(
        persona, phrase_p=lo + (hi - lo) * s.u(), local_p=float(reg.community["local_p"]) * s.u()
    )
