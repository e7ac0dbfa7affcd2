"""Materialising populations to JSONL + manifest, and reading them back."""

from __future__ import annotations

import json

from keyboard_fl.data import MaterializedSource, Population, PopulationConfig, file_sha256, materialize

CFG = PopulationConfig(seed=11, num_train_users=30, num_heldout_users=8, num_public_users=6)


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    m1 = materialize(Population(CFG), tmp_path / "a")
    m2 = materialize(Population(CFG), tmp_path / "b")
    m3 = materialize(Population(PopulationConfig(**{**CFG.__dict__, "seed": 12})), tmp_path / "c")
    for stem in ("train", "test", "heldout", "public"):
        assert (
            m1["files"][stem]["sha256"] == m2["files"][stem]["sha256"] == file_sha256(tmp_path / "a" / f"{stem}.jsonl")
        )
        assert m1["files"][stem]["sha256"] != m3["files"][stem]["sha256"]
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


def test_manifest_counts_and_lines(tmp_path):
    pop = Population(CFG)
    m = materialize(pop, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man == json.loads(json.dumps(m))
    assert man["source"]["seed"] == 11 and man["source"]["config"]["num_train_users"] == 30
    f = man["files"]
    assert f["train"]["users"] == 30 and f["heldout"]["users"] == 8 and f["public"]["users"] == 6
    lines = (tmp_path / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == f["heldout"]["messages"]
    recs = [json.loads(ln) for ln in lines]
    assert set(recs[0]) == {"user_id", "text"}
    first = recs[0]["user_id"]
    assert [r["text"] for r in recs if r["user_id"] == first] == pop.messages(first)  # time order kept
    total = sum(i["messages"] for k, i in f.items() if k in ("train", "test"))
    assert total == sum(len(pop.messages(u.user_id)) for u in pop.users("train"))


def test_roundtrip_equals_population(tmp_path):
    pop = Population(CFG)
    materialize(pop, tmp_path)
    src = MaterializedSource(tmp_path, verify=True)
    for split in ("train", "heldout", "public"):
        assert list(src.users(split)) == list(pop.users(split))
        assert src.num_users(split) == pop.num_users(split)
    assert src.describe()["seed"] == 11


def test_subset_of_splits(tmp_path):
    m = materialize(Population(CFG), tmp_path, splits=["public"])
    assert set(m["files"]) == {"public"}
    assert not (tmp_path / "train.jsonl").exists()


def test_open_source_dispatch(tmp_path):
    from keyboard_fl.data import DirectoryCorpus, JsonlCorpus, open_source

    materialize(Population(CFG), tmp_path / "m")
    assert isinstance(open_source(tmp_path / "m"), MaterializedSource)
    assert isinstance(open_source(tmp_path / "m" / "train.jsonl"), JsonlCorpus)
    (tmp_path / "d").mkdir()
    assert isinstance(open_source(tmp_path / "d"), DirectoryCorpus)
