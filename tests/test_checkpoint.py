"""Tests for keyboard_fl.checkpoint: atomic, verified checkpoints of pytrees."""

import json

import numpy as np
import pytest

from keyboard_fl import checkpoint
from keyboard_fl.checkpoint import CheckpointError


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.normal(size=(5, 3)).astype(np.float32),
        "layers": [rng.normal(size=(3,)).astype(np.float32), np.arange(4, dtype=np.int32)],
        "step": np.asarray(seed, np.int32),
    }


def _equal(a, b):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(la, lb))


def test_round_trip(tmp_path):
    tree = _tree(1)
    meta = {"round": 7, "ledger": {"rounds": 7}, "history": [{"round": 1, "loss": 1.5}]}
    path = checkpoint.save(tmp_path, 7, tree, meta)
    assert path == tmp_path / "ckpt-000007.json"
    loaded, got_meta = checkpoint.load(tmp_path, 7, _tree(0))
    assert _equal(loaded, tree)
    assert got_meta == meta
    assert checkpoint.list_steps(tmp_path) == [7]
    assert checkpoint.load_latest(tmp_path, _tree(0))[0] == 7


def test_atomic_no_tmp_files_and_keep(tmp_path):
    for step in range(1, 6):
        checkpoint.save(tmp_path, step, _tree(step), {"round": step}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-000004.json", "ckpt-000004.npz", "ckpt-000005.json", "ckpt-000005.npz"]
    assert not any("tmp" in n for n in names)
    step, tree, meta = checkpoint.load_latest(tmp_path, _tree(0))
    assert step == 5 and meta == {"round": 5} and _equal(tree, _tree(5))


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.txt"
    checkpoint.atomic_write_text(p, "first version, long")
    checkpoint.atomic_write_text(p, "second")
    assert p.read_text() == "second"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_corruption_detected_and_previous_used(tmp_path):
    checkpoint.save(tmp_path, 2, _tree(2), {"round": 2})
    checkpoint.save(tmp_path, 4, _tree(4), {"round": 4})
    npz = tmp_path / "ckpt-000004.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    npz.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint.load(tmp_path, 4, _tree(0))
    with pytest.warns(UserWarning, match="ckpt-000004.npz.*sha256"):
        step, tree, meta = checkpoint.load_latest(tmp_path, _tree(0))
    assert step == 2 and meta == {"round": 2} and _equal(tree, _tree(2))


def test_truncated_file(tmp_path):
    checkpoint.save(tmp_path, 1, _tree(1), {})
    checkpoint.save(tmp_path, 3, _tree(3), {})
    npz = tmp_path / "ckpt-000003.npz"
    npz.write_bytes(npz.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(tmp_path, 3, _tree(0))
    with pytest.warns(UserWarning):
        assert checkpoint.load_latest(tmp_path, _tree(0))[0] == 1


def test_truncated_or_missing_metadata(tmp_path):
    checkpoint.save(tmp_path, 1, _tree(1), {})
    checkpoint.save(tmp_path, 2, _tree(2), {})
    (tmp_path / "ckpt-000002.json").write_text('{"step": 2, "sha')
    with pytest.raises(CheckpointError, match="unreadable checkpoint metadata"):
        checkpoint.load(tmp_path, 2, _tree(0))
    (tmp_path / "ckpt-000001.npz").unlink()
    with pytest.raises(CheckpointError, match="missing checkpoint data"):
        checkpoint.load(tmp_path, 1, _tree(0))
    with pytest.warns(UserWarning):
        assert checkpoint.load_latest(tmp_path, _tree(0)) is None


def test_shape_mismatch(tmp_path):
    checkpoint.save(tmp_path, 1, _tree(1), {})
    other = _tree(0)
    other["embedding"] = np.zeros((6, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"shape \(5, 3\).*expected \(6, 3\)"):
        checkpoint.load(tmp_path, 1, other)
    other = _tree(0)
    other["layers"].append(np.zeros(2, np.float32))
    with pytest.raises(CheckpointError, match="expected 5"):
        checkpoint.load(tmp_path, 1, other)
    other = _tree(0)
    other["layers"][1] = np.arange(4, dtype=np.float32)
    with pytest.raises(CheckpointError, match="int32"):
        checkpoint.load(tmp_path, 1, other)


def test_metadata_records_hash_and_shapes(tmp_path):
    checkpoint.save(tmp_path, 12, _tree(1), {"x": 1})
    rec = json.loads((tmp_path / "ckpt-000012.json").read_text())
    assert rec["step"] == 12 and len(rec["sha256"]) == 64
    assert rec["leaves"][0] == [[5, 3], "float32"]


def test_empty_or_missing_directory(tmp_path):
    assert checkpoint.list_steps(tmp_path / "nope") == []
    assert checkpoint.load_latest(tmp_path / "nope", _tree(0)) is None
    (tmp_path / "ckpt-1.json").write_text("{}")  # not a checkpoint name
    assert checkpoint.list_steps(tmp_path) == []


def test_temp_files_of_dead_writers_are_removed(tmp_path):
    """A writer killed mid-write leaves `.ckpt-….tmp-PID`; the next save deletes it, not live writers' files."""
    import os
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = tmp_path / f".ckpt-000010.npz.tmp-{int(dead.stdout)}"
    live = tmp_path / f".ckpt-000010.json.tmp-{os.getppid()}"  # pytest's parent: alive
    unrelated = tmp_path / ".notes.tmp-1"
    for p in (stale, live, unrelated):
        p.write_bytes(b"partial")
    checkpoint.save(tmp_path, 20, _tree(), {"round": 20})
    assert not stale.exists()
    assert live.exists() and unrelated.exists()
    assert checkpoint.list_steps(tmp_path) == [20]
