"""Named real corpora that install offline: ``--corpus chitchat``.

A named corpus is a PyPI package that ships real typed chat with sender ids
inside its wheel (the ``corpus`` extra: ``pip install 'keyboard-fl[corpus]'``),
so nothing is downloaded at run time. Its data is converted once, deterministically,
to the JSONL form of :class:`~keyboard_fl.data.corpus.JsonlCorpus`
(``{"user_id", "text"}`` per line, each user's messages in time order) under the
cache directory, and read from there by the ordinary corpus reader.

* ``chitchat``: the BYU PCC lab's Chit-Chat Challenge dataset
  (``chitchat-dataset`` 0.9.0, MIT licence): 7,168 typed conversations between
  1,315 participants, 258,145 messages (2.48M words), each with its sender's id
  and timestamp. One message a line; a user's messages are ordered by the
  conversation's start time, then as sent within it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_ENV = "KEYBOARD_FL_CACHE"  # where converted corpora are kept; default ~/.cache/keyboard_fl


@dataclasses.dataclass(frozen=True)
class NamedCorpus:
    """A corpus shipped inside a PyPI package, and how to read it."""

    name: str  # what --corpus accepts
    distribution: str  # the PyPI distribution that ships it (installed by the `corpus` extra)
    module: str  # the importable module holding the data
    licence: str  # the data's licence, as its package states it
    description: str  # one line for --help and describe()
    records: Callable[[Path], Iterator[tuple[str, str]]]  # (module dir) -> (user_id, text) in output order


def _chitchat_records(module_dir: Path) -> Iterator[tuple[str, str]]:
    """Every message of ``dataset.json`` as ``(sender, text)``: conversations by start time, messages as sent."""
    with open(module_dir / "dataset.json", encoding="utf-8") as f:
        convos = json.load(f)
    for _, cid in sorted((c.get("start", ""), cid) for cid, c in convos.items()):
        for turn in convos[cid]["messages"]:
            for m in turn:
                text = " ".join(m["text"].split())  # one line: newlines and runs of spaces become one space
                if text:
                    yield m["sender"], text


NAMED: dict[str, NamedCorpus] = {
    "chitchat": NamedCorpus(
        name="chitchat",
        distribution="chitchat-dataset",
        module="chitchat_dataset",
        licence="MIT",
        description="Chit-Chat Challenge (BYU PCC lab): 1,315 typists, 258k typed chat messages with sender ids",
        records=_chitchat_records,
    ),
}


def is_named(spec: str) -> bool:
    """Whether ``spec`` names a shipped corpus (a path that exists is never a name)."""
    return spec in NAMED and not Path(spec).exists()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "keyboard_fl") / "corpora"


def _module_dir(corpus: NamedCorpus) -> tuple[Path, str]:
    try:
        mod = importlib.import_module(corpus.module)
    except ImportError:
        raise FileNotFoundError(
            f"--corpus {corpus.name}: the package {corpus.distribution!r} is not installed; "
            f"install the optional extra: pip install 'keyboard-fl[corpus]'"
        ) from None
    return Path(mod.__file__).parent, importlib.metadata.version(corpus.distribution)


def named_path(name: str) -> Path:
    """The JSONL file of named corpus ``name``, converted from its package on first use."""
    if name not in NAMED:
        raise ValueError(f"unknown corpus name {name!r}; known: {', '.join(NAMED)}")
    corpus = NAMED[name]
    module_dir, version = _module_dir(corpus)
    path = cache_dir() / f"{name}-{version}.jsonl"
    if not path.is_file():
        from .materialize import _atomic_write

        lines = (
            (json.dumps({"user_id": u, "text": t}, ensure_ascii=False) + "\n").encode("utf-8")
            for u, t in corpus.records(module_dir)
        )
        _atomic_write(path, lines)
    return path


def describe_named(name: str) -> dict:
    """Provenance of a named corpus: package, version, licence and the converted file's sha256."""
    corpus = NAMED[name]
    path = named_path(name)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {
        "name": name,
        "distribution": corpus.distribution,
        "version": importlib.metadata.version(corpus.distribution),
        "licence": corpus.licence,
        "description": corpus.description,
        "jsonl": str(path),
        "sha256": h.hexdigest(),
    }


def resolve_corpus(spec: str | Path) -> Path:
    """``--corpus`` as a path: a shipped corpus's converted JSONL for a name, else the path itself."""
    s = str(spec)
    return named_path(s) if is_named(s) else Path(s)
