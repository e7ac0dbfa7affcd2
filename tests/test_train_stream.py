"""A streaming population: same cohorts and rounds as the eager path, byte-offset corpus indexes, O(cohort) memory."""

from __future__ import annotations

import dataclasses
import json
import threading
import tracemalloc

import jax
import numpy as np
import pytest

from keyboard_fl.config import FederatedConfig
from keyboard_fl.data import (
    CorpusError,
    DirectoryCorpus,
    JsonlCorpus,
    Population,
    PopulationConfig,
    ReaderConfig,
    SplitConfig,
    materialize,
    open_source,
)
from keyboard_fl.data.access import ListedView, UserIds, split_view
from keyboard_fl.fl.sampling import sample_cohort_exact
from keyboard_fl.models import ModelConfig, init_params, make_loss_fn
from keyboard_fl.privacy.canaries import CanaryConfig, CanarySource, draw_canaries
from keyboard_fl.tokenizer import TokenizerConfig, train_tokenizer
from keyboard_fl.train.examples import UserRows, user_rows
from keyboard_fl.train.federated import DpSetup, train_federated
from keyboard_fl.train.stream import StreamedRows, gather_cohort, prefetched

SEQ = 16
POP = PopulationConfig(seed=5, num_train_users=40, num_heldout_users=5, num_public_users=150)
FED = FederatedConfig(
    rounds=3,
    clients_per_round=8,
    max_examples=4,
    batch_size=2,
    checkpoint_every=10,
    client_lr=0.5,
    server_optimizer="nesterov",
    clip_norm=0.3,
)


@pytest.fixture(scope="module")
def pop_tok():
    pop = Population(POP)
    tok = train_tokenizer((m for u in pop.users("public") for m in u.train), TokenizerConfig(vocab_size=256))
    return pop, tok


def _eager_today(pop, tok) -> UserRows:
    """The pre-streaming RunData path: every training user made before round 1."""
    return UserRows([user_rows(tok, u.train, SEQ) for u in pop.users("train")])


def _cohort_arrays(c):
    return [np.asarray(x) for x in c]


def test_streamed_cohorts_are_byte_identical_to_eager(pop_tok):
    pop, tok = pop_tok
    eager, streamed = _eager_today(pop, tok), StreamedRows(split_view(pop, "train"), tok, SEQ)
    assert len(eager) == len(streamed) == POP.num_train_users and eager.width == streamed.width
    for i in range(len(eager)):
        assert np.array_equal(eager.user(i), streamed.user(i))
    key = jax.random.key(0)
    for r in range(4):
        idx, mask, _ = sample_cohort_exact(jax.random.fold_in(key, r), len(eager), 0.2, 16)
        idx, mask = np.asarray(idx), np.asarray(mask)
        a, b = (gather_cohort(x, idx, mask, FED, 7, r) for x in (eager, streamed))
        for x, y in zip(_cohort_arrays(a), _cohort_arrays(b), strict=True):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def test_streamed_prefetched_rounds_equal_eager_rounds(pop_tok, tmp_path, compiled_round):
    pop, tok = pop_tok
    graphdef, params = init_params(
        ModelConfig(vocab_size=tok.vocab_size, embed_dim=8, hidden_dim=16), jax.random.key(0)
    )
    loss_fn = make_loss_fn(graphdef)
    dp = DpSetup.dp_fedavg(
        noise_multiplier=0.7,
        sampling_prob=FED.sampling_prob(POP.num_train_users),
        delta=1e-3,
        population=POP.num_train_users,
        clip_norm=0.3,
    )
    run = lambda rows, d, pre: train_federated(
        loss_fn,
        params,
        rows,
        FED,
        dp,
        private=True,
        seed=3,
        ckpt_dir=tmp_path / d,
        resume=False,
        prefetch=pre,
        fl_round=compiled_round(loss_fn, FED, dp, True, len(rows)),  # one compiled round for both runs
    )
    p0, l0, h0 = run(_eager_today(pop, tok), "eager", False)
    p1, l1, h1 = run(StreamedRows(split_view(pop, "train"), tok, SEQ), "stream", True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(h0) == strip(h1) and l0 == l1 and len(h1) == FED.rounds
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=True))


def test_prefetch_makes_the_next_round_on_another_thread_in_order():
    seen, gate = [], threading.Event()

    def make(r):
        seen.append((r, threading.current_thread().name))
        if r == 1:
            gate.set()
        return r * r

    it = prefetched(make, range(4))
    assert next(it) == 0
    assert gate.wait(5)  # round 1 is made while round 0 is being used
    assert list(it) == [1, 4, 9]
    assert [r for r, _ in seen] == [0, 1, 2, 3] and all(n.startswith("cohort-prefetch") for _, n in seen)
    assert list(prefetched(make, range(3), ahead=False)) == [0, 1, 4]


def _alloc_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_and_start_do_not_grow_with_the_population(pop_tok):
    """Opening a million-user population and gathering a cohort keeps nothing per unsampled user."""
    _, tok = pop_tok

    def open_and_gather(n):
        pop = Population(dataclasses.replace(POP, num_train_users=n))
        rows = StreamedRows(split_view(pop, "train"), tok, SEQ)
        idx = np.arange(0, n, n // 8)[:8]
        gather_cohort(rows, idx, np.ones(8, bool), FED, 0, 0)
        assert len(rows) == n and len(UserIds(rows.users)) == n and UserIds(rows.users)[-1] == pop.user_id(n - 1)

    open_and_gather(1000)  # warm caches (language resources, tokenizer)
    small, large = _alloc_peak(lambda: open_and_gather(1000)), _alloc_peak(lambda: open_and_gather(1_000_000))
    assert large < 1.25 * small + 256 * 1024, (small, large)


def test_canaries_drawn_over_lazy_ids_equal_the_listed_ids():
    pop = Population(dataclasses.replace(POP, num_train_users=5000))
    cfg = CanaryConfig(num_canaries=2, references=1000, users_per_canary=2)
    listed = draw_canaries(
        cfg, [u.user_id for u in Population(dataclasses.replace(POP, num_train_users=5000)).users("train")]
    )
    assert draw_canaries(cfg, UserIds(split_view(pop, "train"))) == listed
    src = CanarySource(pop, listed[0], cfg.prefix, cfg.seed)
    view = src.split_view("train")
    carrier = pop.user_ids("train").index(int(listed[0][0].user_ids[0][1:]))
    assert view.user(carrier) == next(u for u in src.users("train") if u.user_id == listed[0][0].user_ids[0])
    assert any(cfg.prefix in m for m in view.user(carrier).train)


def _rec(uid, text):
    return json.dumps({"user_id": uid, "text": text})


def _views_equal_users(source, splits=("train", "heldout", "public")):
    for s in splits:
        v = split_view(source, s)
        assert not isinstance(v, ListedView)
        assert [v.user(i) for i in range(len(v))] == list(source.users(s)), s
        assert [v.user_id(i) for i in range(len(v))] == [u.user_id for u in source.users(s)]


def test_jsonl_offset_index_gives_the_reader_users(tmp_path):
    lines = [_rec(f"user{i % 23}", f"message {j} of {i % 23} é") for j, i in enumerate(range(400))]
    lines.insert(50, "")  # blank lines are allowed
    p = tmp_path / "c.jsonl"
    p.write_text("\r\n".join(lines) + "\n", encoding="utf-8")
    _views_equal_users(JsonlCorpus(p, ReaderConfig(split=SplitConfig(seed=1, test_fraction=0.25))))
    _views_equal_users(JsonlCorpus([p, p], ReaderConfig(split=SplitConfig(seed=2))))  # two files


def test_jsonl_offset_index_reports_a_bad_line_by_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(
        "\n".join([_rec("a", "one"), _rec("b", "two"), '{"user_id": "a", "text": ', _rec("a", "three")]) + "\n"
    )
    every = SplitConfig(public_fraction=0.0, heldout_fraction=0.0)
    with pytest.raises(CorpusError) as e:
        split_view(JsonlCorpus(p, ReaderConfig(split=every)), "train")
    assert str(e.value).startswith(f"{p}:3: invalid_json")
    r = JsonlCorpus(p, ReaderConfig(split=every, skip_bad_lines=True))
    v = split_view(r, "train")
    assert r.report.counts == {"invalid_json": 1} and f"{p}:3" in r.report.examples["invalid_json"][0]
    assert [v.user(i).train + v.user(i).test for i in range(len(v))] == [("one", "three"), ("two",)]


def test_directory_and_materialized_views(tmp_path):
    pop = Population(dataclasses.replace(POP, num_train_users=30, num_public_users=10))
    materialize(pop, tmp_path / "m")
    _views_equal_users(open_source(tmp_path / "m"))
    d = tmp_path / "d"
    d.mkdir()
    for u in list(pop.users("train"))[:20]:
        (d / f"{u.user_id}.txt").write_text("\n".join(u.train + u.test) + "\n")
    (d / "empty.txt").write_text("\n")
    _views_equal_users(DirectoryCorpus(d, ReaderConfig(split=SplitConfig(seed=3), skip_bad_lines=True)))
