"""Tests for keyboard_fl.train.shared: what sibling runs compute once and share."""

import json

import pytest

from keyboard_fl.runs import TOKENIZER_FILE, load_metrics
from keyboard_fl.train.shared import SHARED_DIR, cache_dir, shared_file, shared_json


def test_shared_json_computes_once_per_key(tmp_path):
    calls = []

    def compute(v):
        calls.append(v)
        return {"top1": v}

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert shared_json(a, "ngram", [1], lambda: compute(0.5)) == ({"top1": 0.5}, False)
    assert shared_json(b, "ngram", [1], lambda: compute(0.9)) == ({"top1": 0.5}, True)  # sibling: reused
    assert shared_json(c, "ngram", [2], lambda: compute(0.7)) == ({"top1": 0.7}, False)  # other key
    assert calls == [0.5, 0.7]
    torn = cache_dir(a, "ngram", [1]) / "ngram.json"
    torn.write_text('{"top1": 0.')  # a sibling killed mid-write: recomputed, not trusted
    assert shared_json(a, "ngram", [1], lambda: compute(0.6)) == ({"top1": 0.6}, False)


def test_shared_file_copies_into_each_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    made = []

    def make(dest):
        made.append(dest)
        dest.write_bytes(b"model")

    assert not shared_file(tmp_path / "a", "tok", ["k"], tmp_path / "a" / "t.model", make)
    assert shared_file(tmp_path / "b", "tok", ["k"], tmp_path / "b" / "t.model", make)
    assert (tmp_path / "b" / "t.model").read_bytes() == b"model" and len(made) == 1


def test_tiny_sibling_runs_share_tokenizer_and_ngram(tiny_runs):
    """The fixture's three sibling runs: one tokenizer and one n-gram in the cache, identical in every run."""
    root = next(iter(tiny_runs.values())).parent
    if not (root / SHARED_DIR).is_dir():
        pytest.skip(f"{root} (from $KEYBOARD_FL_TINY_RUNS) was trained before runs shared a cache")
    shared = sorted(p.name.split("-")[0] for p in (root / SHARED_DIR).iterdir())
    assert shared == ["ngram", "tokenizer"]
    toks = {(d / TOKENIZER_FILE).read_bytes() for d in tiny_runs.values()}
    grams = {json.dumps(load_metrics(d)["ngram"], sort_keys=True) for d in tiny_runs.values()}
    assert len(toks) == 1 and len(grams) == 1
