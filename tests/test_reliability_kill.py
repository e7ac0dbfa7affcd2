"""Crash safety for real: SIGKILL a `keyboard-fl train` process, resume, and end where an uninterrupted run ends.

The process is killed twice: once in the middle of writing a checkpoint (a
half-written temporary file is on disk at the moment of the kill), and once
at a seeded random moment after the resumed process has written a checkpoint
(mid-round, mid-checkpoint or mid-evaluation, wherever it lands). A third
`--resume` finishes the run. Its model and metrics must equal those of the
uninterrupted run with the same seed (the shared tiny dp-fedavg run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from keyboard_fl import checkpoint

PAUSE_S = 0.25  # checkpoint .npz writes pause half-way, so "killed while writing" is hit on purpose, not by luck

# Runs the real CLI, with one change: checkpoint data is written in two halves with a pause in between
# (the same temp-file-then-rename protocol as keyboard_fl.checkpoint). Results are unaffected; only timing is.
HARNESS = f"""
import os, sys, time
from pathlib import Path
from keyboard_fl import checkpoint
_orig = checkpoint.atomic_write_bytes
def _slow(path, data):
    path = Path(path)
    if path.suffix != ".npz" or path.parent.name != "checkpoints":
        return _orig(path, data)
    tmp = path.with_name(f".{{path.name}}.tmp-{{os.getpid()}}")
    with open(tmp, "wb") as f:
        f.write(data[: len(data) // 2]); f.flush()
        time.sleep({PAUSE_S})
        f.write(data[len(data) // 2 :]); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, path)
checkpoint.atomic_write_bytes = _slow
from keyboard_fl.cli import app
sys.argv[0] = "keyboard-fl"
app()
"""


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", HARNESS, "train", "--mode", "dp-fedavg", "--preset", "tiny", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait_for(proc: subprocess.Popen, cond, timeout: float = 120.0, poll: float = 0.005) -> None:
    t = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(
                f"training exited ({proc.returncode}) before the kill point: {proc.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() - t > timeout:
            proc.kill()
            pytest.fail("kill point never reached")
        time.sleep(poll)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proc.stderr.close()


def _tmp_files(d: Path) -> list[Path]:
    return [p for p in d.glob(".ckpt-*.npz.tmp-*")] if d.is_dir() else []


def _params(d: Path):
    from keyboard_fl.config import RunConfig
    from keyboard_fl.models import init_params
    from keyboard_fl.tokenizer import Tokenizer

    cfg = RunConfig.load(d / "config.json")
    vocab = Tokenizer.load(d / "tokenizer.model").vocab_size
    _, template = init_params(dataclasses.replace(cfg.model, vocab_size=vocab), jax.random.key(0))
    step, params, _ = checkpoint.load_latest(d / "model", template)
    assert step == 0
    return params


def _numeric(x):
    """metrics without timing: every field except ``seconds``, at any depth."""
    if isinstance(x, dict):
        return {k: _numeric(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [_numeric(v) for v in x]
    return x


def test_sigkill_twice_then_resume_equals_uninterrupted(tiny_runs, tmp_path):
    ref = tiny_runs["dp-fedavg"]
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    rng = random.Random(1234)

    # 1. Killed while writing a checkpoint after the first one: a half-written temp file, no JSON for it.
    p = _start(out)
    _wait_for(p, lambda: checkpoint.list_steps(ckpts) and _tmp_files(ckpts))
    _kill(p)
    half = _tmp_files(ckpts)
    steps = checkpoint.list_steps(ckpts)
    assert half and steps and all(f"{s:06d}" not in half[0].name for s in steps), (half, steps)
    assert not (out / "metrics.json").exists()

    # 2. Resumed, then killed at a seeded random moment after it has written a new checkpoint.
    before = set(steps)
    p = _start(out, "--resume")
    _wait_for(p, lambda: set(checkpoint.list_steps(ckpts)) - before)
    time.sleep(rng.uniform(0.0, 1.0))  # the evaluation after the last round alone takes longer
    _kill(p)
    assert not (out / "metrics.json").exists()

    # 3. Resumed to completion.
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            HARNESS,
            "train",
            "--mode",
            "dp-fedavg",
            "--preset",
            "tiny",
            "--out",
            str(out),
            "--resume",
        ],
        capture_output=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr.decode()[-3000:]

    m, m0 = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    assert _numeric(m) == _numeric(m0)
    assert m["epsilon"] == m0["epsilon"] and m["top1"] == m0["top1"]
    lines = lambda d: [_numeric(json.loads(ln)) for ln in (d / "metrics.jsonl").read_text().splitlines()]
    assert lines(out) == lines(ref)
    a, b = _params(out), _params(ref)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
