"""Corpus readers: JSONL and one-file-per-user directories, bad lines, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyboard_fl.data import (
    BadLineReport,
    CorpusError,
    DirectoryCorpus,
    JsonlCorpus,
    ReaderConfig,
    SplitConfig,
    UserSource,
    assign_split,
)

ALL_TRAIN = SplitConfig(public_fraction=0.0, heldout_fraction=0.0, test_fraction=0.25)


def write_jsonl(path: Path, lines: list[bytes | str]) -> Path:
    path.write_bytes(b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\n" for ln in lines))
    return path


def rec(uid, text) -> str:
    return json.dumps({"user_id": uid, "text": text})


def test_jsonl_groups_interleaved_users_in_file_order(tmp_path):
    p = write_jsonl(
        tmp_path / "c.jsonl",
        [rec("a", "a1"), rec("b", "b1"), rec("a", "a2"), "", rec("a", "a3"), rec("b", "b2"), rec("a", "a4")],
    )
    r = JsonlCorpus(p, ReaderConfig(split=ALL_TRAIN))
    assert isinstance(r, UserSource)
    users = {u.user_id: u for u in r.users("train")}
    assert users["a"].train == ("a1", "a2", "a3") and users["a"].test == ("a4",)
    assert users["b"].train == ("b1",) and users["b"].test == ("b2",)
    assert r.num_users("train") == 2 and r.num_users("heldout") == 0
    assert r.describe()["users"]["train"] == 2


BAD_JSONL = [
    (b"{not json", "invalid_json"),
    (b'["a", "b"]', "not_an_object"),
    (b'{"text": "hi"}', "missing_field"),
    (b'{"user_id": "a"}', "missing_field"),
    (b'{"user_id": 5, "text": "hi"}', "bad_user_id"),
    (b'{"user_id": "a", "text": 7}', "non_string_text"),
    (b'{"user_id": "a", "text": ["x"]}', "non_string_text"),
    (b'{"user_id": "a", "text": "   "}', "empty_text"),
    (b'{"user_id": "a", "text": "caf\xe9"}', "invalid_utf8"),
    (b'{"user_id": "a", "text": "' + b"x" * 300 + b'"}', "line_too_long"),
]


@pytest.mark.parametrize("bad,reason", BAD_JSONL)
def test_jsonl_bad_line_names_file_and_line(tmp_path, bad, reason):
    p = write_jsonl(tmp_path / "c.jsonl", [rec("a", "ok"), rec("b", "fine"), bad, rec("a", "after")])
    r = JsonlCorpus(p, ReaderConfig(split=ALL_TRAIN, max_line_bytes=200))
    with pytest.raises(CorpusError) as ei:
        list(r.users("train"))
    msg = str(ei.value)
    assert f"{p}:3:" in msg and reason in msg
    assert ei.value.line == 3 and ei.value.reason == reason


def test_jsonl_skip_mode_counts_every_bad_line(tmp_path):
    lines = [rec("a", "ok")] + [b for b, _ in BAD_JSONL] + [rec("a", "last")]
    p = write_jsonl(tmp_path / "c.jsonl", lines)
    r = JsonlCorpus(p, ReaderConfig(split=ALL_TRAIN, skip_bad_lines=True, max_line_bytes=200))
    users = list(r.users("train"))
    assert [(u.train, u.test) for u in users] == [(("ok",), ("last",))]
    rep = r.report
    assert isinstance(rep, BadLineReport) and rep.total == len(BAD_JSONL)
    assert rep.counts["missing_field"] == 2 and rep.counts["non_string_text"] == 2
    assert rep.examples["invalid_json"][0].startswith(f"{p}:2:")
    assert r.describe()["bad_lines"]["total"] == len(BAD_JSONL)


def test_long_line_is_drained_not_read_whole(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [rec("a", "x" * 100_000), rec("a", "short")])
    r = JsonlCorpus(p, ReaderConfig(split=ALL_TRAIN, skip_bad_lines=True, max_line_bytes=1000))
    assert [u.train for u in r.users("train")] == [("short",)]
    assert r.report.counts == {"line_too_long": 1}


def test_split_assignment_deterministic_and_proportional(tmp_path):
    cfg = SplitConfig(seed=7, public_fraction=0.2, heldout_fraction=0.1)
    ids = [f"user{i}" for i in range(3000)]
    got = [assign_split(i, cfg) for i in ids]
    assert got == [assign_split(i, cfg) for i in ids]
    assert abs(got.count("public") / 3000 - 0.2) < 0.03 and abs(got.count("heldout") / 3000 - 0.1) < 0.03
    other = [assign_split(i, SplitConfig(seed=8, public_fraction=0.2, heldout_fraction=0.1)) for i in ids]
    assert other != got
    p = write_jsonl(tmp_path / "c.jsonl", [rec(i, f"hello {i}") for i in ids[:300]])
    r = JsonlCorpus(p, ReaderConfig(split=cfg))
    seen = {s: {u.user_id for u in r.users(s)} for s in ("train", "heldout", "public")}
    assert set.union(*seen.values()) == set(ids[:300])
    assert sum(map(len, seen.values())) == 300
    for u in r.users("heldout"):
        assert u.train == () and u.test
    for u in r.users("public"):
        assert u.test == () and u.train


def test_directory_reader(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "alice.txt").write_text("hi there\nsee you tmrw\nok\nbye now\n", encoding="utf-8")
    (d / "bob.txt").write_text("yo\r\nwhat's up", encoding="utf-8")
    (d / ".hidden").write_text("ignored\n")
    (d / "sub").mkdir()
    r = DirectoryCorpus(d, ReaderConfig(split=ALL_TRAIN))
    users = {u.user_id: u for u in r.users("train")}
    assert users["alice"].train == ("hi there", "see you tmrw", "ok") and users["alice"].test == ("bye now",)
    assert users["bob"].train == ("yo",) and users["bob"].test == ("what's up",)
    assert r.num_users("train") == 2


@pytest.mark.parametrize(
    "content,reason,line",
    [
        (b"fine\n\nafter\n", "empty_text", 2),
        (b"fine\nbad \xff byte\n", "invalid_utf8", 2),
        (b"fine\nok\n" + b"y" * 500 + b"\n", "line_too_long", 3),
    ],
)
def test_directory_bad_lines(tmp_path, content, reason, line):
    (tmp_path / "u1.txt").write_bytes(content)
    r = DirectoryCorpus(tmp_path, ReaderConfig(split=ALL_TRAIN, max_line_bytes=100))
    with pytest.raises(CorpusError) as ei:
        list(r.users("train"))
    assert f"u1.txt:{line}: {reason}" in str(ei.value)
    r2 = DirectoryCorpus(tmp_path, ReaderConfig(split=ALL_TRAIN, max_line_bytes=100, skip_bad_lines=True))
    list(r2.users("train"))
    assert r2.report.counts == {reason: 1}


def test_directory_binary_file(tmp_path):
    (tmp_path / "ok.txt").write_text("hello\n")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    r = DirectoryCorpus(tmp_path, ReaderConfig(split=ALL_TRAIN))
    with pytest.raises(CorpusError, match=r"photo\.jpg: binary_file"):
        list(r.users("train"))
    r2 = DirectoryCorpus(tmp_path, ReaderConfig(split=ALL_TRAIN, skip_bad_lines=True))
    assert [u.user_id for u in r2.users("train")] == ["ok"]
    assert r2.report.counts == {"binary_file": 1}


def test_directory_missing(tmp_path):
    with pytest.raises(CorpusError, match="not_a_directory"):
        DirectoryCorpus(tmp_path / "nope")
