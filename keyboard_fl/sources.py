"""A run's users: the private source (simulator or corpus) and the public text it pretrains on.

``RunConfig.corpus`` chooses the private users: the simulated population, a
JSONL file, a per-user directory or a shipped corpus by name
(:mod:`keyboard_fl.data.named`). ``RunConfig.public_corpus`` chooses the public
text of the tokenizer, the evaluation vocabulary and public pretraining
(DESIGN.md §3: never the private users' text):

* ``None``: the private source's own public split (for a corpus, the users its
  hash puts in ``public``, about 10%; disjoint from training and held-out users);
* ``"simulator"``: the simulator's public register (``population.num_public_users``
  users writing news/web-like text, :mod:`keyboard_fl.data.register`);
* a corpus name, JSONL file or directory: every user of that corpus is public.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from keyboard_fl.data import Population, ReaderConfig, SplitConfig, User, UserSource
from keyboard_fl.data.access import SplitView, split_view
from keyboard_fl.data.materialize import open_source
from keyboard_fl.data.named import NAMED, describe_named, is_named, resolve_corpus

if TYPE_CHECKING:
    from keyboard_fl.config import RunConfig

SIMULATOR = "simulator"  # public_corpus: the simulator's public register
_ALL_PUBLIC = SplitConfig(public_fraction=1.0, heldout_fraction=0.0)  # a public corpus: every user is public


def check_corpus_spec(spec: str, flag: str = "--corpus") -> str:
    """``spec`` as stored in a config: a shipped corpus's name, else the resolved path (which must exist)."""
    if is_named(spec):
        return spec
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(
            f"{flag} {spec}: no such file or directory, and not a shipped corpus (known: {', '.join(NAMED)})"
        )
    return str(p.resolve())


def _open(spec: str, config: ReaderConfig) -> UserSource:
    source = open_source(resolve_corpus(spec), config)
    if is_named(spec):
        source = _Described(source, {"named": describe_named(spec)})
    return source


class _Described:
    """A source whose ``describe()`` carries extra provenance (a shipped corpus's package and licence)."""

    def __init__(self, inner: UserSource, extra: dict) -> None:
        self.inner, self.extra = inner, extra

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def users(self, split) -> Iterator[User]:
        return self.inner.users(split)

    def num_users(self, split) -> int:
        return self.inner.num_users(split)

    def describe(self) -> dict:
        return {**self.inner.describe(), **self.extra}


class WithPublic:
    """``private``'s training and held-out users with ``public``'s public users."""

    def __init__(self, private: UserSource, public: UserSource, public_name: str) -> None:
        self.private, self.public, self.public_name = private, public, public_name

    def users(self, split) -> Iterator[User]:
        return (self.public if split == "public" else self.private).users(split)

    def num_users(self, split) -> int:
        return (self.public if split == "public" else self.private).num_users(split)

    def split_view(self, split) -> SplitView:
        return split_view(self.public if split == "public" else self.private, split)

    @property
    def report(self):
        return getattr(self.private, "report", None)

    def describe(self) -> dict:
        return {**self.private.describe(), "public_corpus": self.public_name, "public": self.public.describe()}


def private_source(cfg: RunConfig) -> UserSource:
    """The run's private users: its corpus (seeded split by user hash) or the simulated population."""
    if cfg.corpus:
        return _open(cfg.corpus, ReaderConfig(split=SplitConfig(seed=cfg.seed), skip_bad_lines=cfg.skip_bad_lines))
    return Population(cfg.population)


def public_source(cfg: RunConfig) -> UserSource | None:
    """The source of the public text when ``cfg.public_corpus`` replaces the private source's own public split."""
    spec = cfg.public_corpus
    if spec is None:
        return None
    if spec == SIMULATOR:
        return Population(cfg.population)
    if cfg.corpus and check_corpus_spec(spec, "--public-corpus") == check_corpus_spec(cfg.corpus):
        raise ValueError(
            f"--public-corpus {spec} is the private corpus itself: its users would be public; "
            "leave --public-corpus unset to use the corpus's own public split"
        )
    return _open(spec, ReaderConfig(split=_ALL_PUBLIC, skip_bad_lines=cfg.skip_bad_lines))


def source_of(cfg: RunConfig) -> UserSource:
    """The run's users (private source, public split per ``cfg.public_corpus``)."""
    private = private_source(cfg)
    public = public_source(cfg)
    return private if public is None else WithPublic(private, public, cfg.public_corpus)
