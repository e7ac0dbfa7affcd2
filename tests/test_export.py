"""On-device export: ONNX step model parity with JAX, and the onnxruntime suggester vs Suggester."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from keyboard_fl.export import OnnxSuggester  # noqa: E402
from keyboard_fl.loading import export_onnx  # noqa: E402


def heldout_messages(run_dir, n: int) -> list[str]:
    """First ``n`` held-out test messages of the run's simulated population."""
    from keyboard_fl.config import RunConfig
    from keyboard_fl.data import Population, heldout_sample

    return heldout_sample(Population(RunConfig.load(Path(run_dir) / "config.json").population), n)


def typing_prefixes(messages: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` texts as typed: half end after a space (next word), half inside a word."""
    rng = np.random.default_rng(seed)
    nexts, partials = [], []
    for m in messages:
        words = m.split()
        for i, w in enumerate(words):
            head = " ".join(words[:i])
            nexts.append(head + " " if head else "")
            if len(w) > 1:
                cut = int(rng.integers(1, len(w)))
                partials.append((head + " " if head else "") + w[:cut])
    half = n // 2
    pick = lambda xs, k: [xs[i] for i in rng.permutation(len(xs))[:k]]  # noqa: E731
    return pick(nexts, half) + pick(partials, n - half)


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
    run = tiny_runs["dp-fedavg"]
    out = tmp_path_factory.mktemp("export")
    manifest = export_onnx(run, out)
    return run, out, manifest


@pytest.fixture(scope="module")
def jax_suggester(exported):
    from keyboard_fl.loading import load_suggester

    return load_suggester(exported[0])[0]


def test_files_and_manifest(exported):
    run, out, manifest = exported
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.model", "manifest.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "manifest.json").read_text()) == manifest
    metrics = json.loads((run / "metrics.json").read_text())
    assert manifest["privacy"]["private"] and manifest["privacy"]["epsilon"] == pytest.approx(metrics["epsilon"])
    assert manifest["privacy"]["delta"] == pytest.approx(metrics["delta"])
    assert manifest["quality"]["top3"] == pytest.approx(metrics["top3"])
    files = manifest["files"]
    assert files["model.int8.onnx"]["bytes"] < files["model.onnx"]["bytes"] / 2
    assert len(files["model.onnx"]["sha256"]) == 64
    assert (out / "tokenizer.model").read_bytes() == (run / "tokenizer.model").read_bytes()


def test_step_logits_match_jax(exported, jax_suggester):
    import jax.numpy as jnp

    from keyboard_fl.models import merge

    model = merge(jax_suggester.graphdef, jax_suggester.params)
    onnx_s = OnnxSuggester(exported[1])
    rng = np.random.default_rng(0)
    v = onnx_s.manifest["vocab_size"]
    c, h = onnx_s.initial_state(8)
    state = (jnp.asarray(c), jnp.asarray(h))
    worst = 0.0
    for _ in range(6):  # several steps, so the recurrent path is compared too
        tok = rng.integers(0, v, size=8).astype(np.int32)
        j_logits, state = model.step(state, jnp.asarray(tok))
        o_logits, c, h = onnx_s.step(tok, c, h)
        worst = max(worst, float(np.abs(np.asarray(j_logits) - o_logits).max()))
        worst = max(worst, float(np.abs(np.asarray(state[0]) - c).max()), float(np.abs(np.asarray(state[1]) - h).max()))
    assert worst < 1e-4


def test_suggestions_agree_with_jax(exported, jax_suggester):
    run, out, _ = exported
    onnx_s = OnnxSuggester(out)
    prefixes = typing_prefixes(heldout_messages(run, 120), 200, seed=0)
    assert len(prefixes) == 200
    assert sum(1 for p in prefixes if p and not p.endswith(" ")) >= 50  # partial words as well as next words
    same = sum(jax_suggester.suggest(p, 3) == onnx_s.suggest(p, 3) for p in prefixes)
    assert same / len(prefixes) >= 0.99, f"{same}/{len(prefixes)} agree"


def test_int8_model_runs(exported):
    words = OnnxSuggester(exported[1], int8=True).suggest("see you", 3)
    assert 0 < len(words) <= 3 and all(w.startswith("you") for w in words)


def test_runner_never_runs_jax(exported):
    """The runner imports the numpy helpers of keyboard_fl.suggest but never starts a JAX backend."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from keyboard_fl.export import OnnxSuggester\n"
        f"s = OnnxSuggester({str(exported[1])!r}, int8=True)\n"
        "assert s.suggest('see yo', 3) is not None and s.suggest('', 3) is not None\n"
        "jax = sys.modules.get('jax')\n"
        "if jax is not None:\n"
        "    from jax._src import xla_bridge\n"
        "    assert not xla_bridge._backends, 'a JAX backend was started'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_demo_serves_the_exported_int8_model(tiny_runs, tmp_path):
    """``keyboard-fl demo --onnx``: the page's API answers from onnxruntime, same response shape."""
    import shutil

    from fastapi.testclient import TestClient

    from keyboard_fl.demo.app import create_app
    from keyboard_fl.demo.loading import load_run

    run_dir = tmp_path / "dp-fedavg"
    shutil.copytree(tiny_runs["dp-fedavg"], run_dir, ignore=shutil.ignore_patterns("export"))
    run = load_run(run_dir, "dp-fedavg", backend="onnx")  # exports on first use
    assert (run_dir / "export" / "model.int8.onnx").exists()
    with TestClient(create_app({"dp-fedavg": run})) as client:
        r = client.post("/api/suggest", json={"model": "dp-fedavg", "text": "see you "})
        assert r.status_code == 200
        assert 0 < len(r.json()["suggestions"]) <= 3
        models = client.get("/api/models").json()
        assert any(
            "ε" in json.dumps(m, ensure_ascii=False) or "epsilon" in json.dumps(m)
            for m in (models if isinstance(models, list) else models.get("models", []))
        )


def test_onnx_runner_imports_without_jax():
    """The on-device runner needs onnxruntime and numpy only: importing it must not load JAX or Flax."""
    import subprocess
    import sys

    code = "import sys; import keyboard_fl.export.runner; print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
