"""Simulated population of phone-keyboard users.

Every user's typing history is a pure function of ``(config.seed, user_id)``:
a ``numpy.random.Generator`` is seeded from ``SeedSequence([seed, h(user_id)])``
with ``h`` a blake2b digest (independent of Python's hash randomization), so a
population of a million users costs no disk and any user regenerates exactly.

A user is a *persona* (see :class:`Persona`): a sparse mix of topics, personal
entities nobody else uses (friends, pet, street, workplace, team), a personal
set of long-tail words, and typing habits (greetings, sign-offs, abbreviations,
fillers, emoji, capitalisation, punctuation, message length). Messages are a
time-ordered sequence of clauses rendered from the shared templates in
``keyboard_fl/data/lang`` (the learnable everyday language) with personal parts mixed in
(what makes the data non-IID). Public users write the public register and
private users the chat register, with a community and trends
(:mod:`~keyboard_fl.data.register`, ``lang/register.json``). The number of messages per user is lognormal
and capped: most users type little, a few type a lot.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from keyboard_fl.rng import user_sequence

from .register import active_trends, community_cum, load_register, make_communities, to_public
from .resources import ALT, SLOT, Resources, WordList, load_resources, zipf_cum
from .splits import SPLITS, Split, User, make_user

if TYPE_CHECKING:
    from .access import SplitView


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    """A simulated population; all fields together fix every message."""

    seed: int = 0  # master seed: same seed + same config -> same users, byte for byte
    num_train_users: int = 10_000  # users whose data trains the model (private)
    num_heldout_users: int = 1_000  # whole users kept out of training, for evaluation
    num_public_users: int = 1_000  # never trained on privately; tokenizer + public pretraining only
    test_fraction: float = 0.2  # last fraction of each train user's messages held out for evaluation
    mean_messages: float = 30.0  # mean of the (lognormal) number of messages per user
    messages_sigma: float = 1.1  # lognormal sigma of messages per user: the heavy tail
    max_messages: int = 1_000  # cap on messages per user (keeps the heaviest typists bounded)
    lang_dir: str | None = None  # language directory; None = keyboard_fl/data/lang, shipped with the package

    def __post_init__(self) -> None:
        if min(self.num_train_users, self.num_heldout_users, self.num_public_users) < 0:
            raise ValueError("user counts must be >= 0")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.mean_messages <= 0 or self.messages_sigma < 0 or self.max_messages < 1:
            raise ValueError("need mean_messages > 0, messages_sigma >= 0, max_messages >= 1")


user_seed = user_sequence  # Stable SeedSequence for ``(seed, user_id)`` (see keyboard_fl.rng)


class _Stream:
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


class Population:
    """A :class:`~keyboard_fl.data.splits.UserSource` over simulated users."""

    def __init__(self, config: PopulationConfig = PopulationConfig(), resources: Resources | None = None) -> None:
        self.config = config
        self.res = resources or load_resources(config.lang_dir)
        p = self.res.persona
        self._topics = tuple(self.res.topics)
        pop = p.get("topic_popularity", {})
        unchat = tuple((v, k) for k, v in p["abbreviations"].items()) + tuple((f, "") for f in p["fillers"])
        self.reg = load_register(self.res.lang_dir, self._topics, unchat)
        chat = {t: float(self.reg.chat_topics.get(t, pop.get(t, 1.0))) for t in self._topics}
        public = {t: float(self.reg.public_topics.get(t, 0.0)) for t in self._topics}
        # per register: (topics it writes about, Dirichlet alphas); a zero-popularity topic is never used
        self._topic_mix = {
            r: (tuple(t for t in self._topics if w[t] > 0), np.array([0.25 * w[t] for t in self._topics if w[t] > 0]))
            for r, w in (("chat", chat), ("public", public))
        }
        self.communities = make_communities(self.reg, config.seed)
        self._community_cum = community_cum(self.reg)
        self._first = WordList(tuple(p["first_names"]), tuple(zipf_cum(len(p["first_names"]), 0.8)))
        self._petnames = WordList(tuple(p["pet_names"]), tuple(zipf_cum(len(p["pet_names"]), 0.8)))
        self._teams = WordList(tuple(p["teams"]), tuple(zipf_cum(len(p["teams"]), 1.0)))
        self._abbr = tuple((f" {k} ", f" {v} ") for k, v in p["abbreviations"].items())
        sy = p["name_syllables"]
        self._syl = (tuple(sy["onset"]), tuple(sy["vowel"]), tuple(sy["coda"]))
        counts = (config.num_train_users, config.num_heldout_users, config.num_public_users)
        self._offsets = dict(zip(SPLITS, np.cumsum((0,) + counts[:-1]).tolist()))
        self._counts = dict(zip(SPLITS, counts))

    # ----- UserSource -----------------------------------------------------
    def user_ids(self, split: Split) -> range:
        """Indices of the users in ``split`` (disjoint ranges)."""
        o = self._offsets[split]
        return range(o, o + self._counts[split])

    @staticmethod
    def user_id(index: int) -> str:
        return f"u{index:07d}"

    def num_users(self, split: Split) -> int:
        return self._counts[split]

    def users(self, split: Split) -> Iterator[User]:
        for i in self.user_ids(split):
            yield self.user(self.user_id(i), split)

    def split_view(self, split: Split) -> SplitView:
        """The users of ``split`` by index, each generated when asked (O(1) memory for any N)."""
        from .access import FunctionView

        ids = self.user_ids(split)
        return FunctionView(len(ids), lambda i: self.user(self.user_id(ids[i]), split), lambda i: self.user_id(ids[i]))

    def split_of(self, user_id: str) -> Split:
        try:
            idx = int(user_id[1:]) if user_id[:1] == "u" else -1
        except ValueError:
            idx = -1
        for s in SPLITS:
            if idx in self.user_ids(s):
                return s
        raise KeyError(user_id)

    def user(self, user_id: str, split: Split | None = None) -> User:
        """The user with its messages split as ``split`` (default: its own split)."""
        split = split or self.split_of(user_id)
        return make_user(user_id, self.messages(user_id), split, self.config.test_fraction)

    def describe(self) -> dict:
        c = dataclasses.asdict(self.config)
        return {
            "kind": "simulated_population",
            "seed": self.config.seed,
            "config": c,
            "users": dict(self._counts),
            "resources_sha256": self.res.fingerprint,
        }

    # ----- generation -----------------------------------------------------
    def _name(self, s: _Stream) -> str:
        on, vo, co = self._syl
        n = 2 if s.u() < 0.7 else 3
        parts = []
        for _ in range(n):
            parts.append(on[int(s.u() * len(on))] + vo[int(s.u() * len(vo))])
        parts.append(co[int(s.u() * len(co))])
        return "".join(parts)

    def persona(self, user_id: str) -> tuple[Persona, _Stream]:
        """Persona of ``user_id`` and the random stream positioned after it."""
        rng = np.random.default_rng(user_seed(self.config.seed, user_id))
        s = _Stream(rng)
        cfg, p, res = self.config, self.res.persona, self.res
        mu = math.log(cfg.mean_messages) - cfg.messages_sigma**2 / 2
        n_msgs = int(min(cfg.max_messages, max(1, round(rng.lognormal(mu, cfg.messages_sigma)))))
        register = "public" if self._is_public(user_id) else "chat"
        reg_topics, alpha = self._topic_mix[register]
        w = rng.dirichlet(alpha)
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

        def uniq(gen, k):
            vals = []
            for _ in range(k * 3):
                v = gen()
                if v not in vals:
                    vals.append(v)
                if len(vals) == k:
                    break
            return WordList(tuple(vals), tuple(zipf_cum(len(vals), 1.2)))

        person = lambda: self._name(s) if s.u() < 0.5 else s.pick(self._first.values, self._first.cum)
        ents = {
            "friend": uniq(person, 2 + int(s.u() * 6)),
            "partner": uniq(person, 1),
            "pet": uniq(
                lambda: self._name(s) if s.u() < 0.6 else s.pick(self._petnames.values, self._petnames.cum),
                1 + (s.u() < 0.2),
            ),
            "street": uniq(
                lambda: self._name(s) + " " + p["street_suffixes"][int(s.u() * len(p["street_suffixes"]))], 1
            ),
            "work": uniq(
                lambda: self._name(s) + " " + p["workplace_suffixes"][int(s.u() * len(p["workplace_suffixes"]))], 1
            ),
            "team": uniq(
                lambda: self._name(s) + " fc" if s.u() < 0.3 else s.pick(self._teams.values, self._teams.cum),
                1 + (s.u() < 0.3),
            ),
        }
        community = bisect_right(self._community_cum, s.u() * self._community_cum[-1])
        com = self.communities[community]
        ents.update(local_place=com.places, local_team=com.teams, local_event=com.events)
        cw = res.common_words
        pet_words = tuple(cw.values[bisect_right(cw.cum, s.u() * cw.cum[-1])] for _ in range(15 + int(s.u() * 30)))
        g, so = p["greetings"], p["signoffs"]
        gz, sz = zipf_cum(len(g)), zipf_cum(len(so))
        greet = uniq(lambda: g[bisect_right(gz, s.u() * gz[-1])], 1 + int(s.u() * 3))
        sign = uniq(lambda: so[bisect_right(sz, s.u() * sz[-1])], 1 + int(s.u() * 3))
        abbrev_user = s.u() ** 2  # most users abbreviate little, some a lot
        abbrevs = tuple(a for a in self._abbr if s.u() < abbrev_user)
        fl, em = p["fillers"], p["emoji"]
        fillers = tuple(fl[int(s.u() * len(fl))] for _ in range(2))
        emoji = tuple(em[int(s.u() * len(em))] for _ in range(3))
        cu = s.u()
        case = "lower" if cu < 0.45 else ("sentence" if cu < 0.85 else "upper_i")
        sep = (". ", ", ", " ", "! ")[bisect_right((0.45, 0.7, 0.9, 1.0), s.u())]
        persona = Persona(
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
            chatter_p=float(rng.beta(3.5, 3.5)),
            mention_p=0.1 + 0.4 * s.u(),
            num_messages=n_msgs,
            community=community,
        )
        reg = self.reg
        if register == "public":  # written text: no chat habits, full sentences, more free-form prose
            lo, hi = reg.public_extra_clauses
            persona = dataclasses.replace(
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
                chatter_p=float(rng.beta(*reg.public_chatter_beta)),
                mean_extra_clauses=lo + (hi - lo) * s.u(),
            )
        else:
            lo, hi = reg.phrase_p
            persona = dataclasses.replace(
                persona, phrase_p=lo + (hi - lo) * s.u(), local_p=float(reg.community["local_p"]) * s.u()
            )
        return persona, s

    def _is_public(self, user_id: str) -> bool:
        try:
            return self.split_of(user_id) == "public"
        except KeyError:
            return False

    def messages(self, user_id: str) -> list[str]:
        """All messages of ``user_id`` in time order (a pure function of seed and id)."""
        per, s = self.persona(user_id)
        u = s.u
        reg, public = self.reg, per.register == "public"
        templates = self.res.templates
        render, chatter, trend, people = self._clause_makers(per, u)
        topics, tcum = per.topics, per.topic_cum
        chatter_p = per.chatter_p
        msgs: list[str] = []
        topic = topics[0]
        lam = per.mean_extra_clauses
        for i in range(per.num_messages):
            if u() >= per.stay_on_topic_p:
                topic = topics[bisect_right(tcum, u() * tcum[-1])]
            # clauses: 1 + Poisson(lam), by inversion
            k, p0, x = 1, math.exp(-lam), u()
            acc = p0
            while x > acc and k < 6:
                p0 *= lam / k
                acc += p0
                k += 1
            clauses = []
            for j in range(k):
                if u() < chatter_p:
                    c = chatter()
                    if not c:
                        continue
                else:
                    t = topic if j == 0 or u() < 0.6 else topics[bisect_right(tcum, u() * tcum[-1])]
                    tl = templates[t]
                    out: list[str] = []
                    render(tl[int(u() * len(tl))], out)
                    c = " ".join("".join(out).split()).replace(" ,", ",").replace(" !", "!").replace(" ?", "?")
                if per.filler_p and u() < per.filler_p:
                    c += " " + per.fillers[int(u() * len(per.fillers))]
                clauses.append(c)
            if not public:
                trend[0] = active_trends(reg, i / per.num_messages)
                if trend[0] and u() < reg.trend_p:
                    out = []
                    render(reg.trend_templates[int(u() * len(reg.trend_templates))], out)
                    clauses.append("".join(out))
                if u() < per.phrase_p:
                    ph = reg.phrases.values[bisect_right(reg.phrases.cum, u() * reg.phrases.cum[-1])]
                    clauses.insert(0 if u() < 0.5 else len(clauses), ph)
            if not clauses:
                clauses.append(per.fillers[0] if not public else "it was fine")
            msg = clauses[0]
            for c in clauses[1:]:
                msg += (" " if msg[-1] in ".!?" else per.clause_sep) + c
            msg = self._decorate(per, msg, u, people)
            if public:
                msg = to_public(msg, reg) or "It was fine."
            msgs.append(msg)
        return msgs

    def _clause_makers(self, per: Persona, u):
        """``(render, chatter, trend, people)`` for one user's stream ``u``: template rendering,
        free-form chatter, the trend words now active (a one-item list the message loop updates)
        and the people a message may name. Every draw comes from ``u``, in generation order."""
        slots = self.res.slots
        ents, cw = per.entities, self.res.common_words
        pw, pwp = per.pet_words, per.pet_word_p
        opt_p = float(self.res.persona.get("optional_p", 0.5))
        local_p = per.local_p
        trend: list[tuple[str, ...]] = [()]

        def render(seq, out: list) -> None:
            for node in seq:
                if node.__class__ is str:
                    out.append(node)
                    continue
                kind = node[0]
                if kind == SLOT:
                    name = node[1]
                    wl = slots.get(name)
                    if local_p and name == "place" and u() < local_p:
                        wl = ents["local_place"]
                    if wl is not None:
                        out.append(wl.values[bisect_right(wl.cum, u() * wl.cum[-1])])
                    elif name == "rare":
                        if u() < pwp:
                            out.append(pw[int(u() * len(pw))])
                        else:
                            out.append(cw.values[bisect_right(cw.cum, u() * cw.cum[-1])])
                    elif name == "trend":
                        out.append(trend[0][int(u() * len(trend[0]))])
                    else:
                        e = ents[name]
                        out.append(e.values[bisect_right(e.cum, u() * e.cum[-1])])
                elif kind == ALT:
                    c = node[2]
                    render(node[1][bisect_right(c, u() * c[-1])], out)
                elif u() < opt_p:
                    c = node[2]
                    render(node[1][bisect_right(c, u() * c[-1])], out)

        chain, max_words = self.res.chatter, self.res.chatter_max_words
        mention_p = per.mention_p
        people = (ents["friend"], ents["friend"], ents["partner"])

        def chatter() -> str:
            out: list[str] = []
            state = "START"
            while len(out) < max_words:
                nxt, c, _ = chain[state]
                state = nxt[bisect_right(c, u() * c[-1])]
                if state == "END":
                    break
                slot = chain[state][2]
                if slot == "rare":
                    out.append(
                        pw[int(u() * len(pw))] if u() < pwp else cw.values[bisect_right(cw.cum, u() * cw.cum[-1])]
                    )
                elif state == "subj" and u() < mention_p:
                    e = people[int(u() * 3)]
                    out.append(e.values[bisect_right(e.cum, u() * e.cum[-1])])
                else:
                    wl = slots[slot]
                    out.append(wl.values[bisect_right(wl.cum, u() * wl.cum[-1])])
            return " ".join(out)

        return render, chatter, trend, people

    @staticmethod
    def _decorate(per: Persona, msg: str, u, people) -> str:
        """Greeting, sign-off, abbreviations, end punctuation, emoji and casing of one message."""
        mention_p = per.mention_p
        if u() < per.greet_p:
            g = per.greeting
            gw = g.values[bisect_right(g.cum, u() * g.cum[-1])]
            if u() < mention_p:
                e = people[int(u() * 3)]
                gw += " " + e.values[bisect_right(e.cum, u() * e.cum[-1])]
            msg = gw + (" " if u() < 0.6 else ", ") + msg
        if u() < per.signoff_p:
            g = per.signoff
            msg = msg + (" " if msg[-1] in ".!?" else ", ") + g.values[bisect_right(g.cum, u() * g.cum[-1])]
        if per.abbrevs:
            m = " " + msg + " "
            for full, ab in per.abbrevs:
                if full in m and u() < per.abbrev_p:
                    m = m.replace(full, ab)
            msg = m[1:-1]
        if msg[-1] not in ".!?" and u() < per.end_punct_p:
            msg += (
                "?"
                if msg.startswith(("what", "are", "can", "did", "do", "how", "is", "wanna", "have", "when"))
                else ("!" if u() < 0.3 else ".")
            )
        if u() < per.emoji_p:
            msg += " " + per.emoji[int(u() * len(per.emoji))]
        if per.case != "lower":
            m = " " + msg + " "
            m = m.replace(" i ", " I ").replace(" i'", " I'").replace(" im ", " Im ")
            msg = m[1:-1]
            if per.case == "sentence":
                msg = msg[0].upper() + msg[1:]
        return msg
