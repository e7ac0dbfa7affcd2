"""Damaged run directories: every file a run is loaded from, emptied, truncated, bit-flipped, replaced
by garbage or by another version's file, gives one line naming the file (CLI: ``error: …``, exit 2);
the demo skips such a run and serves the others; ``--resume`` falls back to the newest good checkpoint.

The files: ``config.json``, ``tokenizer.model``, ``metrics.json``, ``words.txt``, the model checkpoint
(``model/ckpt-*.npz`` and its ``.json``) and the ONNX export (``manifest.json`` and every file it lists,
checked against its sha256). A few damages leave a file valid by construction — a flipped digit inside
``metrics.json`` is still a number, a truncated ``words.txt`` is still a word list — and no checksum
covers those files; there the run must still load and answer (:data:`HARMLESS`).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from keyboard_fl import checkpoint
from keyboard_fl.checkpoint import CheckpointError
from keyboard_fl.cli import app
from keyboard_fl.demo.loading import load_run, load_runs
from keyboard_fl.runs import RunNotFound

RUN_FILES = ("config.json", "tokenizer.model", "metrics.json", "words.txt", "model/ckpt-000000.npz")
RUN_FILES += ("model/ckpt-000000.json",)
EXPORT_FILES = tuple(
    f"export/{f}"
    for f in ("manifest.json", "model.onnx", "model.int8.onnx", "tokenizer.model", "tokenizer.json", "words.txt")
)
DAMAGES = ("empty", "truncated", "bitflip", "garbage", "other-version")
# (file, damage) pairs that can leave a valid file behind, which no checksum covers: loading must then work.
HARMLESS = {(f, "bitflip") for f in ("config.json", "metrics.json", "words.txt", "model/ckpt-000000.json")}
HARMLESS |= {("words.txt", "truncated")}
ERRORS = (ValueError, FileNotFoundError, CheckpointError, RunNotFound)
runner = CliRunner()


@pytest.fixture(scope="module")
def base_run(tiny_runs, tmp_path_factory) -> Path:
    """A copy of the tiny central run with its ONNX export, as the current version writes it."""
    import hashlib

    from keyboard_fl.loading import export_onnx

    run = tmp_path_factory.mktemp("rundir") / "central"
    shutil.copytree(tiny_runs["central"], run, ignore=shutil.ignore_patterns("export"))
    _, meta = checkpoint.newest_meta(run / "model")
    if "tokenizer_sha256" not in meta:  # a run reused from before the tokenizer's hash was recorded
        record = json.loads((run / "model" / "ckpt-000000.json").read_text())
        with np.load(run / "model" / "ckpt-000000.npz") as z:
            leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
        sha = hashlib.sha256((run / "tokenizer.model").read_bytes()).hexdigest()
        checkpoint.save(run / "model", 0, leaves, record["meta"] | {"tokenizer_sha256": sha}, keep=1)
    export_onnx(run)
    return run


def _other_version(path: Path, rel: str) -> bytes:
    """What a different version (or another run) would have left at ``rel``."""
    data = path.read_bytes()
    if rel in ("config.json", "export/manifest.json", "metrics.json"):
        obj = json.loads(data)
        if rel == "config.json":
            obj["model_v2"] = {"layers": 4}  # a section this version does not know
        elif rel == "metrics.json":
            obj["mode"] = "dp-fedavg-v2"
        else:
            obj["format"] = "keyboard_fl.onnx-step/2"
        return json.dumps(obj).encode()
    if rel == "tokenizer.model":
        return _small_tokenizer()
    if rel == "words.txt":
        return b"Hello World\nsecond line\n"  # not normalized: another version's format
    if rel.startswith("model/"):
        with tempfile.TemporaryDirectory() as d:  # a checkpoint of another model, written by the real writer
            checkpoint.save(d, 0, [np.zeros((3, 5), np.float32)], {"vocab_size": 7}, keep=1)
            return (Path(d) / Path(rel).name).read_bytes()
    other = "model.int8.onnx" if rel.endswith("model.onnx") and "int8" not in rel else "model.onnx"
    return (path.parent / other).read_bytes()  # an export file from another export


def _small_tokenizer() -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    text = [f"another run had another tokenizer number {i}" for i in range(50)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=40, hard_vocab_limit=False, minloglevel=2
    )
    return model.getvalue()


def damage(run: Path, rel: str, kind: str, where: float = 0.5) -> None:
    """Damage ``run/rel`` in place; ``where`` (0–1) places the cut or the flipped bit."""
    path = run / rel
    data = path.read_bytes()
    at = min(int(where * len(data)), len(data) - 1)
    if kind == "empty":
        out = b""
    elif kind == "truncated":
        out = data[: min(at, int(len(data) * 0.9))]
    elif kind == "bitflip":
        out = data[:at] + bytes([data[at] ^ (1 << int(where * 997) % 8)]) + data[at + 1 :]
    elif kind == "garbage":
        out = np.random.default_rng(int(where * 1e6)).bytes(max(len(data), 64))
    else:
        out = _other_version(path, rel)
    path.write_bytes(out)


def _load(run: Path, rel: str):
    """Load as the demo does: the JAX back-end for run files, the ONNX one for the export."""
    backend = "onnx" if rel.startswith("export/") else "jax"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_latest warns about each damaged checkpoint; the error says it too
        loaded = load_run(run, "central", backend=backend)
    assert isinstance(loaded.suggester.suggest("see you ", 3), list)


def _check(run: Path, rel: str, kind: str) -> str:
    """``"loaded"`` or the error's line; fails unless the error is one line naming the damaged file."""
    try:
        _load(run, rel)
    except ERRORS as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert Path(rel).name in msg, f"{rel} ({kind}): {msg}"
        return msg
    assert (rel, kind) in HARMLESS, f"{rel} ({kind}) was accepted silently"
    return "loaded"


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("rel", RUN_FILES + EXPORT_FILES)
def test_each_damaged_file_is_named_in_one_line(base_run, tmp_path, rel, kind):
    run = tmp_path / "central"
    shutil.copytree(base_run, run)
    damage(run, rel, kind)
    _check(run, rel, kind)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    rel=st.sampled_from(RUN_FILES + EXPORT_FILES),
    kind=st.sampled_from(DAMAGES),
    where=st.floats(0, 1, exclude_max=True),
)
def test_any_damage_anywhere_is_named_or_harmless(base_run, rel, kind, where):
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "central"
        shutil.copytree(base_run, run)
        damage(run, rel, kind, where)
        _check(run, rel, kind)


@pytest.mark.parametrize("rel", ["tokenizer.model", "model/ckpt-000000.npz", "config.json", "metrics.json"])
def test_cli_prints_one_error_line_naming_the_file(base_run, tmp_path, rel):
    run = tmp_path / "central"
    shutil.copytree(base_run, run)
    damage(run, rel, "truncated")
    res = runner.invoke(app, ["suggest", "see you ", "--run", str(run)])
    text = res.stderr.strip()
    assert res.exit_code == 2, res.output
    assert text.startswith("error:") and len(text.splitlines()) == 1 and Path(rel).name in text, text


def test_demo_skips_a_broken_run_and_serves_the_others(tiny_runs, tmp_path):
    root = tmp_path / "runs"
    for mode in ("central", "fedavg", "dp-fedavg"):
        shutil.copytree(tiny_runs[mode], root / mode, ignore=shutil.ignore_patterns("export"))
    damage(root / "fedavg", "tokenizer.model", "truncated")
    lines: list[str] = []
    loaded = load_runs({m: root / m for m in ("central", "fedavg", "dp-fedavg")}, report=lines.append)
    assert list(loaded) == ["central", "dp-fedavg"]
    assert len(lines) == 1 and lines[0].count("\n") == 1 and "fedavg/tokenizer.model" in lines[0], lines
    assert loaded["dp-fedavg"].suggester.suggest("see you ", 3)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(("empty", "truncated", "bitflip", "garbage")), where=st.floats(0, 1, exclude_max=True))
def test_resume_falls_back_to_the_newest_good_checkpoint(tiny_runs, kind, where):
    """What ``--resume`` loads (:func:`checkpoint.load_latest`, as ``train.federated._resume`` calls it)
    from a real run's ``checkpoints/`` after its newest checkpoint is damaged: the one before, with a
    warning naming the damaged file."""
    with tempfile.TemporaryDirectory() as d:
        ckpts = Path(d) / "checkpoints"
        shutil.copytree(tiny_runs["fedavg"] / "checkpoints", ckpts)
        steps = checkpoint.list_steps(ckpts)
        assert len(steps) >= 2, "the run keeps several checkpoints"
        newest = f"ckpt-{steps[-1]:06d}.npz"
        damage(ckpts.parent, f"checkpoints/{newest}", kind, where)
        record = json.loads((ckpts / f"ckpt-{steps[-2]:06d}.json").read_text())
        template = [np.zeros(shape, dtype) for shape, dtype in record["leaves"]]
        with pytest.warns(UserWarning, match=newest):
            step, tree, _ = checkpoint.load_latest(ckpts, template)
        assert step == steps[-2]
        with np.load(ckpts / f"ckpt-{steps[-2]:06d}.npz") as z:
            assert all(np.array_equal(a, z[f"arr_{i}"]) for i, a in enumerate(tree))


def test_damage_helper_really_changes_the_file(base_run, tmp_path):
    """The test above must be able to fail: every damage changes the bytes."""
    for kind in DAMAGES:
        run = tmp_path / kind
        shutil.copytree(base_run, run)
        before = (run / "config.json").read_bytes()
        damage(run, "config.json", kind)
        assert (run / "config.json").read_bytes() != before, kind
