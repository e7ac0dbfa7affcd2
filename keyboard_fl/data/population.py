"""Simulated population of phone-keyboard users.

Every user's typing history is a pure function of ``(config.seed, user_id)``:
a ``numpy.random.Generator`` is seeded from ``SeedSequence([seed, h(user_id)])``
with ``h`` a blake2b digest (independent of Python's hash randomization), so a
population of a million users costs no disk and any user regenerates exactly.

A user is a *persona* (:class:`~keyboard_fl.data.persona.Persona`): a sparse mix of topics, personal
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

from .persona import Persona, UniformStream, make_persona, persona_kit
from .register import active_trends, load_register, make_communities, to_public
from .resources import ALT, SLOT, Resources, load_resources
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


class Population:
    """A :class:`~keyboard_fl.data.splits.UserSource` over simulated users."""

    def __init__(self, config: PopulationConfig = PopulationConfig(), resources: Resources | None = None) -> None:
        self.config = config
        self.res = resources or load_resources(config.lang_dir)
        p = self.res.persona
        unchat = tuple((v, k) for k, v in p["abbreviations"].items()) + tuple((f, "") for f in p["fillers"])
        self.reg = load_register(self.res.lang_dir, tuple(self.res.topics), unchat)
        self.communities = make_communities(self.reg, config.seed)
        self._kit = persona_kit(self.res, self.reg, self.communities)
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
    def persona(self, user_id: str) -> tuple[Persona, UniformStream]:
        """Persona of ``user_id`` and the random stream positioned after it."""
        s = UniformStream(np.random.default_rng(user_seed(self.config.seed, user_id)))
        register = "public" if self._is_public(user_id) else "chat"
        c = self.config
        per = make_persona(
            self._kit,
            s,
            register,
            mean_messages=c.mean_messages,
            messages_sigma=c.messages_sigma,
            max_messages=c.max_messages,
        )
        return per, s

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
