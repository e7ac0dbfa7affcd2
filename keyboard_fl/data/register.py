"""Two registers: the chat register private users type and the public register of public text.

Keyboards pretrain on public text (web, books, news) that differs from what
people type (Hard et al. 2018, arXiv 1811.03604; Xu et al. 2023, arXiv
2305.18465). The simulator models that gap with ``lang/register.json``:

* **public register** (the public split): full sentences, standard spelling
  and casing, contractions written out, no abbreviations, slang, emoji,
  fillers, greetings or sign-offs, and a news-like topic mix (``news``);
* **chat register** (train and held-out users) adds language that *many*
  users share and public text lacks: shared chat phrases, the names of their
  community's places, teams and events (communities are Zipf-popular, their
  names made of everyday words and generated from the seed), and new words
  whose use starts part-way through every history (trends). Abbreviations,
  fillers and emoji come from ``persona.json``. What only *one* user types,
  personal names, stays in :mod:`~keyboard_fl.data.population`.

Everything here is a pure function of the parsed file and the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

from keyboard_fl.rng import Stream, generator

from .resources import (
    DEFAULT_LANG_DIR,
    PERSONAL_SLOTS,
    Seq,
    TemplateError,
    WordList,
    parse_template,
    template_slots,
    zipf_cum,
)


@dataclasses.dataclass(frozen=True)
class Community:
    """A community (region) many users share: its local names, most popular first."""

    places: WordList  # e.g. "mill market": typed by its members, never in public text
    teams: WordList  # e.g. "oak rovers"
    events: WordList  # e.g. "lantern parade"


@dataclasses.dataclass(frozen=True)
class Register:
    """``lang/register.json`` parsed and checked."""

    public_topics: dict[str, float]  # topic -> popularity in the public register (0: never written)
    chat_topics: dict[str, float]  # topic -> popularity override in the chat register (0: never typed)
    public_chatter_beta: tuple[float, float]  # Beta(a, b) of a public writer's share of free-form sentences
    public_extra_clauses: tuple[float, float]  # range of a public writer's mean extra sentences per text
    rewrite: tuple[tuple[re.Pattern, dict[str, str]], ...]  # chat word/phrase -> written form ("" drops it)
    phrase_p: tuple[float, float]  # range of a chat user's chance to add a shared chat phrase to a message
    phrases: WordList  # shared chat phrases (Zipf-popular)
    community: dict[str, Any]  # the "communities" section (count, exponent, local_p, name parts)
    trend_p: float  # chance a chat message carries a trend clause (once a trend has started)
    trends: tuple[tuple[str, float], ...]  # (new word, onset time in [0, 1)) sorted by onset
    trend_templates: tuple[Seq, ...]  # clauses that carry a trend word ({trend})


def _field(d: dict, key: str, where: str, kind: type | tuple = (int, float)) -> Any:
    if key not in d:
        raise ValueError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise ValueError(f"{where}.{key}: expected {kind}, got {v!r}")
    return v


def _pair(d: dict, key: str, where: str) -> tuple[float, float]:
    v = _field(d, key, where, list)
    if len(v) != 2 or not all(isinstance(x, (int, float)) and x >= 0 for x in v):
        raise ValueError(f"{where}.{key}: expected two numbers >= 0, got {v!r}")
    return float(v[0]), float(v[1])


@functools.lru_cache(maxsize=8)
def load_register(
    lang_dir: str | Path | None = None, topics: tuple[str, ...] = (), unchat: tuple[tuple[str, str], ...] = ()
) -> Register:
    """Parse ``<lang_dir>/register.json``; errors name the file and the field.

    ``unchat``: (chat form, written form) pairs applied before ``public.rewrite``
    (the population passes persona.json's abbreviations reversed and its fillers
    mapped to ""), so public text never holds a chat marker, whatever the source.
    """
    path = (Path(lang_dir) if lang_dir is not None else DEFAULT_LANG_DIR) / "register.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    where = str(path)
    pub, chat = _field(raw, "public", where, dict), _field(raw, "chat", where, dict)
    com, tr = _field(raw, "communities", where, dict), _field(raw, "trends", where, dict)
    pt = {k: float(v) for k, v in _field(pub, "topic_popularity", f"{where}.public", dict).items()}
    ct = {k: float(v) for k, v in _field(chat, "topic_popularity", f"{where}.chat", dict).items()}
    for name, tw in (("public", pt), ("chat", ct)):
        unknown = set(tw) - set(topics) if topics else set()
        if unknown:
            raise ValueError(f"{where}.{name}.topic_popularity: unknown topic(s) {sorted(unknown)}")
    rw = {k.lower(): v for k, v in _field(pub, "rewrite", f"{where}.public", dict).items()}
    first: dict[str, str] = {}
    for chat_form, written in unchat:
        first.setdefault(chat_form.lower(), written)
    rewrite = tuple((_whole_words(t), t) for t in (first, rw) if t)
    phrases = [str(p) for p in _field(chat, "phrases", f"{where}.chat", list)]
    for key in ("count", "places", "teams", "events"):
        if int(_field(com, key, f"{where}.communities")) < 1:
            raise ValueError(f"{where}.communities.{key}: must be >= 1")
    for key in ("place_first", "place_second", "team_second", "event_first", "event_second"):
        _field(com, key, f"{where}.communities", list)
    trends = []
    for i, item in enumerate(_field(tr, "words", f"{where}.trends", list)):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and 0 <= float(item[1]) < 1):
            raise ValueError(f"{where}.trends.words[{i}]: expected [word, onset in [0, 1)], got {item!r}")
        trends.append((item[0], float(item[1])))
    tts = []
    for i, t in enumerate(_field(tr, "templates", f"{where}.trends", list)):
        seq = parse_template(t, f"{where}.trends.templates[{i}]")
        bad = template_slots(seq) - {"trend"} - PERSONAL_SLOTS
        if bad:
            raise TemplateError(
                f"{where}.trends.templates[{i}]: slot(s) {sorted(bad)} (only {{trend}} and personal slots)"
            )
        tts.append(seq)
    return Register(
        public_topics=pt,
        chat_topics=ct,
        public_chatter_beta=_pair(pub, "chatter_beta", f"{where}.public"),
        public_extra_clauses=_pair(pub, "extra_clauses", f"{where}.public"),
        rewrite=rewrite,
        phrase_p=_pair(chat, "phrase_p", f"{where}.chat"),
        phrases=WordList(tuple(phrases), tuple(zipf_cum(len(phrases), 1.0))),
        community=com,
        trend_p=float(_field(tr, "p", f"{where}.trends")),
        trends=tuple(sorted(trends, key=lambda x: x[1])),
        trend_templates=tuple(tts),
    )


def _whole_words(table: dict[str, str]) -> re.Pattern:
    """A case-insensitive pattern of ``table``'s keys as whole words, longest first ("i've got" before "i've")."""
    alt = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
    return re.compile(rf"(?<![\w'])(?:{alt})(?![\w'])", re.IGNORECASE)


def make_communities(reg: Register, seed: int) -> tuple[Community, ...]:
    """The ``count`` communities of population ``seed``: distinct local names of everyday words."""
    c = reg.community
    rng = generator(seed, Stream.COMMUNITIES)
    taken: set[str] = set()

    def names(first: list[str], second: list[str], k: int) -> WordList:
        out: list[str] = []
        for _ in range(1000 * k):
            n = f"{first[rng.integers(len(first))]} {second[rng.integers(len(second))]}"
            if n not in taken:
                taken.add(n)
                out.append(n)
            if len(out) == k:
                return WordList(tuple(out), tuple(zipf_cum(k, 1.0)))
        raise ValueError(f"register.json communities: too few name parts for {c['count']} distinct communities")

    return tuple(
        Community(
            names(c["place_first"], c["place_second"], int(c["places"])),
            names(c["place_first"], c["team_second"], int(c["teams"])),
            names(c["event_first"], c["event_second"], int(c["events"])),
        )
        for _ in range(int(c["count"]))
    )


def community_cum(reg: Register) -> tuple[float, ...]:
    """Cumulative Zipf popularity of the communities (community 0 the largest)."""
    return tuple(zipf_cum(int(reg.community["count"]), float(reg.community.get("exponent", 1.0))))


def active_trends(reg: Register, t: float) -> tuple[str, ...]:
    """Trend words already in use at time ``t`` in [0, 1)."""
    return tuple(w for w, onset in reg.trends if onset <= t)


_SPACES = re.compile(r"\s+")
_SENT = re.compile(r"([.!?]\s+)([a-z])")


def to_public(msg: str, reg: Register) -> str:
    """Write ``msg`` in the public register: written-out forms, standard casing, final full stop."""
    for pat, table in reg.rewrite:
        msg = pat.sub(lambda m, t=table: t[m.group(0).lower()], msg)
    msg = _SPACES.sub(" ", msg).replace(" ,", ",").replace(" .", ".").replace(" !", "!").replace(" ?", "?")
    msg = msg.strip(" ,.!?")
    if not msg:
        return ""
    msg = (" " + msg + " ").replace(" i ", " I ").replace(",,", ",")[1:-1]
    msg = _SENT.sub(lambda m: m.group(1) + m.group(2).upper(), msg[0].upper() + msg[1:])
    return msg + (
        "?"
        if msg.lower().startswith(("what", "how", "are", "can", "did", "do ", "is ", "have", "when", "where"))
        else "."
    )


def chat_markers(reg: Register, communities: tuple[Community, ...], persona: dict) -> dict[str, frozenset[str]]:
    """What only the chat register contains, by kind (for tests and ``keyboard-fl stats``)."""
    local = [n for c in communities for wl in (c.places, c.teams, c.events) for n in wl.values]
    return {
        "abbreviations": frozenset(persona["abbreviations"].values()),
        "emoji": frozenset(persona["emoji"]),
        "fillers": frozenset(persona["fillers"]),
        "community_names": frozenset(local),
        "chat_phrases": frozenset(reg.phrases.values),
        "trend_words": frozenset(w for w, _ in reg.trends),
    }
