"""On-device export: size, quality and keystroke latency of the ONNX models vs JAX.

On one finished run (default ``runs/main/dp-fedavg``):

* exports it (``keyboard_fl.loading.export_onnx``: ``RUN/export/model.onnx`` and
  ``model.int8.onnx``) and reports the file sizes;
* whole-word next-word top-1/top-3 on the targets of ~300 held-out messages
  (every word of a message, predicted from the text before it, all targets
  counted, out-of-vocabulary words included, so the figures sit slightly below
  ``metrics.json``'s OOV-excluded ones) for the JAX ``Suggester``, the
  onnxruntime ``OnnxSuggester`` in float32 and in int8, and how often each ONNX
  top-3 equals the JAX top-3 exactly;
* latency per keystroke: messages typed one character at a time, one
  ``suggest(text, 3)`` per keystroke, p50/p99 in ms, for the JAX ``Suggester``
  (jitted, warmed up) and the ONNX runner (float32, int8), with the runner's
  context-state cache (what a keyboard does: each keystroke re-reads only the
  pieces that changed) and without it (the whole context re-read each time);
  and one ``session.run`` of the step model alone (batch 1 and 8, the beam).
The machine is shared (2 cores): the load average is recorded; p99 follows it.

Usage::

    .venv/bin/python benchmarks/bench_export.py [--run runs/main/dp-fedavg] [--messages 300]

Writes ``benchmarks/results/export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keyboard_fl import text as text_lib  # noqa: E402


def heldout_messages(run_dir, n: int) -> list[str]:
    """First ``n`` held-out test messages of the run's simulated population."""
    from keyboard_fl.config import RunConfig
    from keyboard_fl.data import Population, heldout_sample

    return heldout_sample(Population(RunConfig.load(Path(run_dir) / "config.json").population), n)


def next_word_targets(messages: list[str]) -> list[tuple[str, str]]:
    """(text typed so far, next word) for every word of every message."""
    out = []
    for m in messages:
        chunks = text_lib.normalize(m).split()
        for i, chunk in enumerate(chunks):
            hit = text_lib.WORD_RE.match(chunk)
            if hit is not None and hit.group(0):
                out.append((" ".join(chunks[:i]) + (" " if i else ""), hit.group(0)))
    return out


def quality(suggest, targets) -> tuple[dict, list[list[str]]]:
    preds = [suggest(ctx, 3) for ctx, _ in targets]
    top1 = np.mean([bool(p) and p[0] == w for p, (_, w) in zip(preds, targets)])
    top3 = np.mean([w in p for p, (_, w) in zip(preds, targets)])
    return {"top1": float(top1), "top3": float(top3), "targets": len(targets)}, preds


def keystroke_latency(suggest, messages: list[str], reset=None) -> dict:
    times = []
    for m in messages:
        norm = text_lib.normalize(m)
        for i in range(1, len(norm) + 1):
            if reset is not None:
                reset()
            t = time.perf_counter()
            suggest(norm[:i], 3)
            times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "keystrokes": int(ms.size),
    }


def step_latency(s, batch: int, n: int = 500) -> dict:
    """Median and p99 ms of one ONNX model step (``session.run``) for ``batch`` rows."""
    c, h = s.initial_state(batch)
    tok = np.full(batch, 5, np.int32)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.step(tok, c, h)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "numpy", "onnx", "onnxruntime")},
        "onnxruntime_threads": 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs/main/dp-fedavg"))
    ap.add_argument("--messages", type=int, default=300, help="held-out messages for top-1/top-3")
    ap.add_argument("--latency-messages", type=int, default=40, help="messages typed key by key for latency")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/export.json"))
    args = ap.parse_args()

    from keyboard_fl.export import OnnxSuggester
    from keyboard_fl.loading import export_onnx, load_suggester

    info = machine_info()
    t = time.perf_counter()
    manifest = export_onnx(args.run)
    export_s = time.perf_counter() - t
    export_dir = Path(args.run) / "export"
    jax_s = load_suggester(args.run)[0]
    onnx_f = OnnxSuggester(export_dir)
    onnx_q = OnnxSuggester(export_dir, int8=True)

    messages = heldout_messages(args.run, args.messages)
    targets = next_word_targets(messages)
    for s in (jax_s, onnx_f, onnx_q):  # warm-up: jit compiles, session init
        for text in ("", "hi", "see you ", "how are yo", "i " * 20, "x " * 40):
            s.suggest(text, 3)
    q_jax, p_jax = quality(jax_s.suggest, targets)
    q_f, p_f = quality(onnx_f.suggest, targets)
    q_q, p_q = quality(onnx_q.suggest, targets)
    q_f["top3_same_as_jax"] = float(np.mean([a == b for a, b in zip(p_jax, p_f)]))
    q_q["top3_same_as_jax"] = float(np.mean([a == b for a, b in zip(p_jax, p_q)]))
    q_q["top1_same_as_jax"] = float(np.mean([a[:1] == b[:1] for a, b in zip(p_jax, p_q)]))

    lat_msgs = messages[: args.latency_messages]

    def no_cache(s):
        def reset():
            s._ctx_ids, s._ctx_states = [], []

        return reset

    latency = {
        "jax_suggester": keystroke_latency(jax_s.suggest, lat_msgs),
        "onnx_float": keystroke_latency(onnx_f.suggest, lat_msgs),
        "onnx_int8": keystroke_latency(onnx_q.suggest, lat_msgs),
        "onnx_float_no_state_cache": keystroke_latency(onnx_f.suggest, lat_msgs, no_cache(onnx_f)),
        "onnx_int8_no_state_cache": keystroke_latency(onnx_q.suggest, lat_msgs, no_cache(onnx_q)),
    }
    steps = {
        f"{name}_batch{b}": step_latency(s, b) for name, s in (("float", onnx_f), ("int8", onnx_q)) for b in (1, 8)
    }
    files = manifest["files"]
    result = {
        "run": str(Path(args.run).relative_to(ROOT)) if Path(args.run).resolve().is_relative_to(ROOT) else args.run,
        "route": "onnx.helper per-step graph (Gather, MatMul, CIFG gates); int8 by onnxruntime quantize_dynamic (QInt8 weights)",
        "export_seconds": export_s,
        "sizes_bytes": {
            "float32": files["model.onnx"]["bytes"],
            "int8": files["model.int8.onnx"]["bytes"],
            "tokenizer": files["tokenizer.model"]["bytes"],
        },
        "int8_size_ratio": files["model.int8.onnx"]["bytes"] / files["model.onnx"]["bytes"],
        "quality": {
            "messages": len(messages),
            "jax": q_jax,
            "onnx_float": q_f,
            "onnx_int8": q_q,
            "metrics_json": manifest["quality"],
        },
        "latency_per_keystroke": latency,
        "onnx_step_latency": steps,
        "manifest_privacy": manifest["privacy"],
        "machine": info | {"loadavg_end": list(os.getloadavg())},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("sizes_bytes", "quality", "latency_per_keystroke", "onnx_step_latency")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
