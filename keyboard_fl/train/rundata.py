"""The data of a run: the tokenizer, the streamed training users and the evaluation sets.

Nothing here grows with the number of training users N (issue 14): training
users are a :class:`~keyboard_fl.train.stream.StreamedRows` (made when a round
samples them), and everything else is a documented sample:

* evaluation: the first ``eval.max_users`` held-out users with messages (their
  first ``eval.max_messages_per_user``), and the held-out (last) messages of the
  training users taken in order until ``eval.max_train_user_messages``;
* baselines: the first ``eval.baseline_users`` training users: the n-gram's text
  and the central model's pooled rows (all users when N is smaller);
* the public split whole (tokenizer, evaluation vocabulary, pretraining).

The tokenizer and pretraining read the public split only (DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from keyboard_fl import runs
from keyboard_fl.config import RunConfig
from keyboard_fl.data import User, UserSource
from keyboard_fl.data.access import SplitView, UserIds, split_view
from keyboard_fl.dictionary import public_vocabulary
from keyboard_fl.rng import Stream, generator
from keyboard_fl.tokenizer import Tokenizer, train_tokenizer
from keyboard_fl.train.examples import user_rows
from keyboard_fl.train.shared import shared_file
from keyboard_fl.train.stream import StreamedRows

Log = Callable[[str], None]
WORD_VOCAB_SIZE = 10_000  # evaluation word vocabulary (from the public split), as the 10k of Gboard / Stack Overflow


def first_messages(users: Iterable[tuple[str, Sequence[str]]], budget: int) -> dict[str, list[str]]:
    """``{user_id: messages}`` taking users in order until ``budget`` messages are taken (users without any skipped)."""
    out: dict[str, list[str]] = {}
    for uid, msgs in users:
        if budget <= 0:
            break
        if msgs:
            out[uid] = list(msgs[:budget])
            budget -= len(out[uid])
    return out


def eval_users(users: Iterable[User], max_users: int, max_messages: int) -> dict[str, list[str]]:
    """The evaluated held-out users: the first ``max_users`` with messages, their first ``max_messages`` each."""
    out: dict[str, list[str]] = {}
    for u in users:
        if len(out) >= max_users:
            break
        if u.test:
            out[u.user_id] = list(u.test[:max_messages])
    return out


def _in_order(view: SplitView) -> Iterable[User]:
    return (view.user(i) for i in range(len(view)))


@dataclasses.dataclass
class RunData:
    """What the steps of a run read; only the training users' rows are streamed."""

    word_vocab: frozenset[str]  # the evaluation vocabulary: the public split's most frequent words
    public_rows: np.ndarray | None  # pretraining rows of the public split (None: no pretraining)
    rows: StreamedRows  # the training users by index, made when sampled
    heldout: dict[str, list[str]]  # evaluated held-out users (eval_users)
    train_user_test: dict[str, list[str]]  # held-out messages of training users (first_messages)
    baseline_users: int  # training users pooled by the baselines (min(eval.baseline_users, N))
    bad_lines: dict | None = None  # corpus lines skipped while indexing the training users (skip_bad_lines)
    public_val_rows: np.ndarray | None = (
        None  # public users kept out of pretraining to stop on (pretrain.validation_fraction)
    )

    @property
    def num_train_users(self) -> int:
        return len(self.rows)

    def baseline_messages(self) -> list[str]:
        """The training messages of the first ``baseline_users`` users (the n-gram's text)."""
        return [m for i in range(self.baseline_users) for m in self.rows.users.user(i).train]

    def baseline_rows(self) -> np.ndarray:
        """The pooled rows of the first ``baseline_users`` users (the central model's data)."""
        return self.rows.pooled(self.baseline_users)

    def central_rows(self, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The baseline users' rows split by user into (training, validation); no validation at fraction 0."""
        if validation_fraction <= 0:
            return self.baseline_rows(), None
        return split_by_user([self.rows.user(i) for i in range(self.baseline_users)], validation_fraction, seed, 0)


def split_by_user(
    per_user: Sequence[np.ndarray], fraction: float, seed: int, path: int
) -> tuple[np.ndarray, np.ndarray]:
    """Users' rows pooled into (training, validation): each user in validation with probability ``fraction``.

    The draw is ``rng.generator(seed, Stream.VALIDATION, path)``; with two or more
    users, at least one lands on each side.
    """
    n = len(per_user)
    u = generator(seed, Stream.VALIDATION, path).random(n)
    val = u < fraction
    if n >= 2 and not val.any():
        val[int(np.argmin(u))] = True
    if n >= 2 and val.all():
        val[int(np.argmax(u))] = False
    width = per_user[0].shape[-1] if n else 1
    pool = lambda keep: np.concatenate([r for r, k in zip(per_user, keep) if k] or [np.zeros((0, width), np.int32)])
    return pool(~val), pool(val)


def open_source(cfg: RunConfig, source: UserSource | None = None) -> UserSource:
    """The run's users: ``source`` if given, else its corpus or the simulated population (public text per ``cfg.public_corpus``)."""
    from keyboard_fl.sources import source_of

    return source if source is not None else source_of(cfg)


def training_users(cfg: RunConfig, source: UserSource, log: Log) -> tuple[SplitView, dict | None]:
    """The training split by index (canaries planted if configured) and the bad lines its index skipped."""
    train = split_view(source, "train")
    report = getattr(source, "report", None)
    bad = report.as_dict() if report is not None and report.total else None
    if cfg.canaries is not None:
        from keyboard_fl.privacy.canaries import CanarySource, draw_canaries

        canaries, _ = draw_canaries(cfg.canaries, UserIds(train))  # ids by index: no list of N ids
        train = CanarySource(source, canaries, cfg.canaries.prefix, cfg.canaries.seed).split_view("train", inner=train)
        log(f"canaries: {len(canaries)} secrets planted in {sum(len(c.user_ids) for c in canaries)} training users")
    if cfg.phrase_canaries is not None:  # empirical ε: about half of many phrases, in the baselines' users
        from keyboard_fl.privacy.canaries import CanarySource
        from keyboard_fl.privacy.phrase_canaries import PLACEMENT_PATH, draw_phrases

        drawn = draw_phrases(cfg.phrase_canaries, cfg.seed, UserIds(train), cfg.eval.baseline_users)
        planted = drawn.planted()
        train = CanarySource(source, planted, drawn.prefix, cfg.seed, PLACEMENT_PATH).split_view("train", inner=train)
        log(f"phrase canaries: {len(planted)} of {len(drawn.secrets)} phrases planted, each typed {drawn.repetitions}x")
    return train, bad


def load_tokenizer(cfg: RunConfig, source: UserSource, out: Path, log: Log) -> Tokenizer:
    """The run's tokenizer: trained on the public split once, then read from ``out``."""
    path = out / runs.TOKENIZER_FILE
    if path.exists():
        return Tokenizer.load(path)
    t = time.perf_counter()

    def make(dest: Path) -> None:
        train_tokenizer((m for u in source.users("public") for m in u.train), cfg.tokenizer).save(dest)

    d = cfg.to_dict()
    key = ["tokenizer/1", cfg.seed, d["population"], cfg.corpus, d["tokenizer"]]  # all the public split depends on
    reused = shared_file(out, "tokenizer", key, path, make)
    tokenizer = Tokenizer.load(path)
    how = "reused from a sibling run" if reused else "from the public split"
    log(f"tokenizer: {tokenizer.vocab_size} pieces {how} ({time.perf_counter() - t:.1f}s)")
    return tokenizer


def _public_rows(cfg: RunConfig, tokenizer: Tokenizer, public: Sequence[User]):
    """Pretraining rows of the public users, and those of the validation users (pretrain.validation_fraction)."""
    if cfg.pretrain.steps <= 0:
        return None, None
    per = [user_rows(tokenizer, u.train, cfg.seq_len) for u in public]
    if cfg.pretrain.validation_fraction > 0:
        return split_by_user(per, cfg.pretrain.validation_fraction, cfg.seed, 1)
    return np.concatenate(per or [np.zeros((0, cfg.seq_len + 1), np.int32)]), None


def prepare(cfg: RunConfig, out: Path, log: Log, source: UserSource | None = None) -> tuple[Tokenizer, RunData]:
    """The prepare-data step: tokenizer, evaluation sets, public rows, and the training users (streamed)."""
    source = open_source(cfg, source)
    train, bad = training_users(cfg, source, log)
    tokenizer = load_tokenizer(cfg, source, out, log)
    t = time.perf_counter()
    public = list(source.users("public"))
    public_train, public_val = _public_rows(cfg, tokenizer, public)
    e = cfg.eval
    data = RunData(
        word_vocab=frozenset(
            public_vocabulary((m for u in public for m in u.train), WORD_VOCAB_SIZE)
        ),  # the strip's dictionary too
        public_rows=public_train,
        rows=StreamedRows(train, tokenizer, cfg.seq_len),
        heldout=eval_users(_in_order(split_view(source, "heldout")), e.max_users, e.max_messages_per_user),
        train_user_test=first_messages(((u.user_id, u.test) for u in _in_order(train)), e.max_train_user_messages),
        baseline_users=min(e.baseline_users, len(train)),
        bad_lines=bad,
        public_val_rows=public_val,
    )
    log(
        f"data: {data.num_train_users} training users (streamed); eval: {len(data.heldout)} held-out users, "
        f"{sum(map(len, data.train_user_test.values()))} held-out messages of training users; "
        f"baselines on the first {data.baseline_users} training users ({time.perf_counter() - t:.1f}s)"
    )
    if bad:
        log(f"corpus: skipped {bad['total']} bad lines: {bad}")
    return tokenizer, data
