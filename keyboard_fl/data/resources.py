"""Language resources of the simulator, loaded from editable files in ``keyboard_fl/data/lang``.

Layout (see ``lang/templates/README.txt``)::

    lang/slots/<slot>.txt        one word/phrase per line, most common first
    lang/templates/<topic>.txt   one clause template per line
    lang/persona.json            greetings, sign-offs, abbreviations, names...
    lang/common_words.tsv        long-tail English words with frequencies
                                      (written at dev time by tools/make_lang_resources.py)

Templates compile once into small tuples that the population renders quickly:
a *sequence* is a tuple of nodes; a node is a literal ``str``, a slot
``(SLOT, name)``, an alternation ``(ALT, options, cum)`` or an optional part
``(OPT, options, cum)``; ``cum`` are cumulative Zipf weights of the options.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from keyboard_fl.package_data import package_dir

DEFAULT_LANG_DIR = package_dir("keyboard_fl.data", "lang")  # package data: ships in the wheel

SLOT, ALT, OPT = 0, 1, 2

Node = Any  # str | tuple
Seq = tuple  # tuple[Node, ...]


def zipf_cum(n: int, exponent: float = 1.0) -> list[float]:
    """Cumulative weights 1/rank**exponent for ranks 1..n."""
    total, out = 0.0, []
    for r in range(1, n + 1):
        total += 1.0 / r**exponent
        out.append(total)
    return out


class TemplateError(ValueError):
    """A template line does not parse; the message names file and line."""


def parse_template(src: str, where: str = "<template>") -> Seq:
    """Compile one template line into a sequence of nodes."""
    pos = 0

    def seq(stops: str) -> list[Node]:
        nonlocal pos
        out: list[Node] = []
        lit: list[str] = []

        def flush() -> None:
            if lit:
                out.append("".join(lit))
                lit.clear()

        while pos < len(src) and src[pos] not in stops:
            c = src[pos]
            if c == "{":
                end = src.find("}", pos)
                if end < 0:
                    raise TemplateError(f"{where}: unclosed '{{'")
                flush()
                out.append((SLOT, src[pos + 1 : end].strip()))
                pos = end + 1
            elif c in "([":
                close = ")" if c == "(" else "]"
                pos += 1
                options = [tuple(seq("|" + close))]
                while pos < len(src) and src[pos] == "|":
                    pos += 1
                    options.append(tuple(seq("|" + close)))
                if pos >= len(src):
                    raise TemplateError(f"{where}: unclosed '{c}'")
                pos += 1
                flush()
                out.append((ALT if c == "(" else OPT, tuple(options), zipf_cum(len(options), 0.3)))
            elif c in ")]|":
                raise TemplateError(f"{where}: unexpected '{c}' at column {pos + 1}")
            else:
                lit.append(c)
                pos += 1
        flush()
        return out

    result = seq("")
    if pos != len(src):
        raise TemplateError(f"{where}: unexpected '{src[pos]}' at column {pos + 1}")
    return tuple(result)


def template_slots(node: Node) -> set[str]:
    """Names of all slots used in a node or sequence."""
    if isinstance(node, str):
        return set()
    if isinstance(node, tuple) and node and node[0] == SLOT and isinstance(node[1], str):
        return {node[1]}
    if isinstance(node, tuple) and node and node[0] in (ALT, OPT) and len(node) == 3 and isinstance(node[1], tuple):
        return set().union(*(template_slots(o) for o in node[1]))
    return set().union(*(template_slots(n) for n in node)) if node else set()


@dataclasses.dataclass(frozen=True)
class WordList:
    """Values with cumulative sampling weights (``cum[-1]`` is the total)."""

    values: tuple[str, ...]
    cum: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Resources:
    """Everything the simulator reads from ``keyboard_fl/data/lang``."""

    lang_dir: Path
    slots: dict[str, WordList]  # shared Zipf-weighted word classes
    templates: dict[str, tuple[Seq, ...]]  # topic -> compiled clause templates
    persona: dict[str, Any]  # persona.json as parsed
    common_words: WordList  # long tail of English, weighted by frequency
    chatter: dict[
        str, tuple[tuple[str, ...], tuple[float, ...], str]
    ]  # state -> (next states, cum weights, slot emitted); "START" included
    chatter_max_words: int  # cap on a chatter clause's length
    fingerprint: str  # sha256 over every file of lang_dir: a changed resource changes the data

    @property
    def topics(self) -> list[str]:
        return list(self.persona["topics"])


def _lines(path: Path) -> list[str]:
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


PERSONAL_SLOTS = frozenset(
    {"friend", "pet", "street", "team", "work", "partner", "rare", "local_place", "local_team", "local_event"}
)  # local_*: the user's community (register.py)


@functools.lru_cache(maxsize=8)
def load_resources(lang_dir: str | Path | None = None, slot_exponent: float = 0.7) -> Resources:
    """Load and compile ``keyboard_fl/data/lang`` (cached per directory)."""
    root = Path(lang_dir) if lang_dir is not None else DEFAULT_LANG_DIR
    slots = {}
    for p in sorted((root / "slots").glob("*.txt")):
        vals = _lines(p)
        slots[p.stem] = WordList(tuple(vals), tuple(zipf_cum(len(vals), slot_exponent)))
    persona = json.loads((root / "persona.json").read_text(encoding="utf-8"))
    templates: dict[str, tuple[Seq, ...]] = {}
    for topic in persona["topics"]:
        path = root / "templates" / f"{topic}.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
        compiled = []
        for i, line in enumerate(lines, 1):
            s = line.strip()
            if s and not s.startswith("#"):
                t = parse_template(s, f"{path}:{i}")
                unknown = template_slots(t) - set(slots) - PERSONAL_SLOTS
                if unknown:
                    raise TemplateError(f"{path}:{i}: unknown slot(s) {sorted(unknown)}")
                compiled.append(t)
        templates[topic] = tuple(compiled)
    words, cum, total = [], [], 0.0
    for line in _lines(root / "common_words.tsv"):
        w, f = line.split("\t")
        total += float(f)
        words.append(w)
        cum.append(total)
    ch = json.loads((root / "chatter.json").read_text(encoding="utf-8"))
    chain = {}
    for state, nxt in [("START", ch["start"]), *ch["transitions"].items()]:
        c, tot = [], 0.0
        for w in nxt.values():
            tot += float(w)
            c.append(tot)
        chain[state] = (tuple(nxt), tuple(c), ch.get("emit", {}).get(state, state))
    for state, (nxt, _, _) in chain.items():
        for n in nxt:
            if n == "END":
                continue
            if n not in chain:
                raise TemplateError(f"{root / 'chatter.json'}: state {n!r} (after {state!r}) has no transitions")
            if chain[n][2] not in slots and chain[n][2] != "rare":
                raise TemplateError(f"{root / 'chatter.json'}: state {n!r} emits unknown slot {chain[n][2]!r}")
    return Resources(
        root,
        slots,
        templates,
        persona,
        WordList(tuple(words), tuple(cum)),
        chain,
        int(ch["max_words"]),
        fingerprint(root),
    )


def fingerprint(root: Path) -> str:
    """sha256 over the relative paths and bytes of all files under ``root``."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()
