"""The keyboard in the browser: per-key-press latency and first-load bytes in headless Chromium.

Serves the demo (uvicorn, 127.0.0.1) over one run, opens the page in Debian's
chromium (Playwright) and types held-out messages one key press at a time; after
each key press it waits until the strip shows the answer to it, and reads the
page's own measurement: milliseconds from the key press (the ``input`` event)
to the strip re-rendered, and the engine's share of it (tokenizer, model steps,
word search, dictionary). Measured for the page's on-device engine with the
float32 and the int8 model (onnxruntime-web 1.30, WASM, one thread), and, side
by side on the same key presses, for server mode (one ``POST /api/suggest`` per
key press to the JAX model). Also: every byte the page downloads on first load,
by file (bytes on the wire: the WASM runtime is sent gzipped), and the time
to the first suggestion, each mode in a fresh browser (nothing cached).

Without ``--run`` it builds an *untrained* run of the default size (the
``default`` preset's CIFG-LSTM: 2,048 pieces, embedding 64, 256 units; its
tokenizer trained on the default population's public split; random weights):
latency and bytes depend on the sizes, not the weights.

Usage::

    .venv/bin/python benchmarks/bench_browser.py [--run runs/main/dp-fedavg] [--keys 600]

Writes ``benchmarks/results/browser_latency.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KEYBOARD_FL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def untrained_default_run(out: Path) -> Path:
    """A finished-run directory of the default preset's size with random weights (cached in ``out``)."""
    if (out / "metrics.json").is_file():
        return out
    import jax

    from keyboard_fl import checkpoint
    from keyboard_fl.config import preset
    from keyboard_fl.data import Population
    from keyboard_fl.models import init_params, param_count
    from keyboard_fl.tokenizer import train_tokenizer

    cfg = preset("default", mode="central")
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer((m for u in Population(cfg.population).users("public") for m in u.train), cfg.tokenizer)
    tok.save(out / "tokenizer.model")
    (out / "config.json").write_text(cfg.to_json() + "\n")
    model_cfg = type(cfg.model)(**{**cfg.model.__dict__, "vocab_size": tok.vocab_size})
    _, params = init_params(model_cfg, jax.random.key(0))
    checkpoint.save(out / "model", 0, params, {"config": cfg.to_dict(), "vocab_size": tok.vocab_size}, keep=1)
    metrics = {"mode": "central", "untrained": True, "params": int(param_count(params))}
    (out / "metrics.json").write_text(json.dumps(metrics) + "\n")
    return out


@contextlib.contextmanager
def serving(runs: dict[str, Path]):
    import uvicorn

    from keyboard_fl.demo.app import create_app

    app = create_app(runs, export=True)
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)


def heldout_texts(run: Path, keys: int) -> list[str]:
    from keyboard_fl.config import RunConfig
    from keyboard_fl.data import Population

    out, n = [], 0
    for u in Population(RunConfig.load(run / "config.json").population).users("heldout"):
        for m in u.test:
            out.append(m)
            n += len(m) + 1
            if n >= keys:
                return out
    return out


FRESH = (
    "(p) => { const s = document.getElementById('strip');"
    " return s.dataset.seq === s.dataset.pending && Number(s.dataset.seq) > p; }"
)


def type_and_time(page, texts: list[str]) -> dict:
    """Type each text key by key (Enter sends it); the page's own key → strip times, in ms."""
    page.click("#message")
    page.evaluate("window.kfl.timings.length = 0; window.kfl.engineTimings.length = 0")
    server_ms, seq = [], int(page.get_attribute("#strip", "data-seq") or 0)
    for text in texts:
        for ch in text + "\n":
            t0 = time.perf_counter()
            page.keyboard.press("Enter" if ch == "\n" else ch)
            page.wait_for_function(FRESH, arg=seq, timeout=30_000, polling="raf")
            server_ms.append((time.perf_counter() - t0) * 1e3)
            seq = int(page.get_attribute("#strip", "data-seq"))
    timings = page.evaluate("[window.kfl.timings.slice(), window.kfl.engineTimings.slice()]")
    return {
        "key_presses": len(server_ms),
        "key_to_strip_ms": timings[0],
        "engine_ms": timings[1],
        "driver_ms": server_ms,
    }


def stats(xs) -> dict:
    a = np.asarray(xs, float)
    if not a.size:
        return {}
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def first_load(browser, url: str) -> tuple[object, dict]:
    """Open ``url`` in a fresh page; bytes on the wire (Resource Timing ``transferSize``) until the first suggestion."""
    from urllib.parse import urlsplit

    page = browser.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".model-card")
    page.wait_for_function(FRESH, arg=0, timeout=60_000)
    ms = (time.perf_counter() - t0) * 1e3
    entries = page.evaluate(
        "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]"
        ".map((e) => [e.name, e.transferSize, e.decodedBodySize])"
    )
    by_file = {urlsplit(u).path: {"wire": w, "decoded": d} for u, w, d in sorted(entries, key=lambda e: -e[1])}
    return page, {
        "bytes": sum(e[1] for e in entries),
        "decoded_bytes": sum(e[2] for e in entries),
        "requests": len(entries),
        "by_file": by_file,
        "ms_to_first_suggestion": ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="a finished run (default: an untrained default-size run)")
    ap.add_argument("--keys", type=int, default=600, help="key presses per mode (held-out messages typed in full)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/browser_latency.json")
    a = ap.parse_args()
    run = a.run or untrained_default_run(ROOT / "benchmarks/.cache/untrained-default")
    manifest_run = {
        "run": str(a.run) if a.run else "untrained default-size run (random weights; no trained default run here)"
    }
    texts = heldout_texts(run, a.keys)
    from playwright.sync_api import sync_playwright

    from keyboard_fl.models_registry import load_run

    result: dict = {**manifest_run, "messages": len(texts), "modes": {}}
    with serving({"bench": load_run(run, "bench")}) as base, sync_playwright() as p:
        for mode, query in (
            ("device_float32", "?precision=float32"),
            ("device_int8", ""),
            ("server_jax", "?mode=server"),
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)  # cold: nothing cached
            ctx = browser.new_context(viewport={"width": 375, "height": 812})
            page, load = first_load(ctx, base + "/" + query)
            assert page.evaluate("window.kfl.where()") == ("server" if mode.startswith("server") else "device")
            typed = type_and_time(page, texts)
            result["modes"][mode] = {
                "first_load": load,
                "key_to_strip": stats(typed["key_to_strip_ms"]),
                "engine": stats(typed["engine_ms"]),
                "key_presses": typed["key_presses"],
            }
            ctx.close()
            result["chromium"] = browser.version
            browser.close()
    man = json.loads((run / "export" / "manifest.json").read_text())
    result["model"] = {k: man[k] for k in ("vocab_size", "embed_dim", "hidden_dim", "params")} | {
        "files": {k: v["bytes"] for k, v in man["files"].items()}
    }
    m = result["modes"]
    result["ratios"] = {
        "int8_over_float32_p50": m["device_int8"]["key_to_strip"]["p50_ms"]
        / m["device_float32"]["key_to_strip"]["p50_ms"],
        "server_over_device_float32_p50": m["server_jax"]["key_to_strip"]["p50_ms"]
        / m["device_float32"]["key_to_strip"]["p50_ms"],
    }
    result["goal"] = "p99 ≤ 5 ms per key press in the browser"
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    for k, v in m.items():
        print(
            f"{k}: key→strip p50 {v['key_to_strip']['p50_ms']:.2f} ms p99 {v['key_to_strip']['p99_ms']:.2f} ms; "
            f"engine p50 {v['engine'].get('p50_ms', float('nan')):.2f} ms; "
            f"first load {v['first_load']['bytes']:,} bytes"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
