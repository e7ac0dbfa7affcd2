"""Suggestion latency per key press: type held-out-like messages one character at a time.

A phone keyboard must show feedback within ~20 ms of a key press (Hard et al.
2018); the strip's share of that budget should be a few milliseconds. For each
model this types the first ``--messages`` held-out messages of its population
character by character, calling ``suggest`` on every prefix, exactly as the
demo does, and records the time of each call. Both the plain ``Suggester`` and
the demo's ``IncrementalSuggester`` (reuses the context's LSTM state inside a
word) are measured, each with cold caches; jit compilation is warmed up first
on unrelated text so that only steady-state calls are timed.

Usage::

    .venv/bin/python benchmarks/bench_suggest.py                      # runs/main/dp-fedavg, else a tiny run in /tmp
    .venv/bin/python benchmarks/bench_suggest.py RUN_DIR [RUN_DIR …]
    .venv/bin/python benchmarks/bench_suggest.py --untrained-preset default   # + a default-size model, random weights
    .venv/bin/python benchmarks/bench_suggest.py --compare-xla-threading …    # XLA's CPU thread pool on vs off

Writes ``benchmarks/results/suggest_latency.json`` (machine info included).
``--xla-single-thread`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``
(before JAX is imported): for the small matrices of one suggestion, a thread
pool mostly adds hand-off jitter on a busy CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "runs" / "main" / "dp-fedavg"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "suggest_latency.json"
SCRATCH = Path(os.environ.get("TMPDIR", "/tmp")) / "keyboard_fl_bench"
BUDGET_MS = 5.0
SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


def machine_info() -> dict:
    import jax
    import jaxlib

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": affinity,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


# ------------------------------------------------------------------ models
def _tiny_run() -> Path:
    from keyboard_fl.config import preset
    from keyboard_fl.train.run import run

    out = SCRATCH / "tiny-dp-fedavg"
    if not (out / "metrics.json").exists():
        print(
            f"no trained run given and {DEFAULT_RUN} is missing: training a tiny DP-FedAvg run into {out} …",
            file=sys.stderr,
        )
        run(preset("tiny", mode="dp-fedavg"), out, log=lambda s: None)
    return out


def load_trained(run_dir: Path) -> dict:
    from keyboard_fl.config import RunConfig
    from keyboard_fl.loading import load_suggester

    s, metrics = load_suggester(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    return {
        "name": str(run_dir),
        "kind": "trained run",
        "suggester": s,
        "population": cfg.population,
        "model": {
            **dataclasses.asdict(cfg.model),
            "vocab_size": s.tokenizer.vocab_size,
            "params": metrics.get("params"),
        },
        "mode": metrics.get("mode"),
    }


def load_untrained(preset_name: str) -> dict:
    """A model of the preset's size with random weights: the latency of a real one, not its quality."""
    import jax

    from keyboard_fl.config import preset
    from keyboard_fl.data import Population
    from keyboard_fl.models import init_params, param_count
    from keyboard_fl.suggest import Suggester
    from keyboard_fl.tokenizer import Tokenizer, train_tokenizer

    cfg = preset(preset_name)
    key = hashlib.sha256(repr((cfg.tokenizer, cfg.population)).encode()).hexdigest()[:12]
    tok_path = SCRATCH / f"{preset_name}-{key}-tokenizer.model"  # a preset change gets a new tokenizer
    if tok_path.exists():
        tok = Tokenizer.load(tok_path)
    else:
        tok = train_tokenizer((m for u in Population(cfg.population).users("public") for m in u.train), cfg.tokenizer)
        SCRATCH.mkdir(parents=True, exist_ok=True)
        tok.save(tok_path)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, params = init_params(model_cfg, jax.random.key(0))
    return {
        "name": f"untrained:{preset_name}",
        "kind": f"{preset_name}-preset architecture, random weights (latency only)",
        "suggester": Suggester(graphdef, params, tok),
        "population": cfg.population,
        "model": {**dataclasses.asdict(model_cfg), "params": param_count(params)},
        "mode": None,
    }


def heldout_messages(population_cfg, n: int) -> list[str]:
    from keyboard_fl.data import Population, heldout_sample

    return heldout_sample(Population(population_cfg), n)


# ------------------------------------------------------------------ timing
def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    if a.size == 0:
        return {"calls": 0}
    return {
        "calls": int(a.size),
        "mean_ms": round(float(a.mean()), 3),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "share_under_5ms": round(float((a < 5.0).mean()), 4),
        "share_under_20ms": round(float((a < 20.0).mean()), 4),
    }


def warm_up(suggest, longest: int) -> None:
    """Compile every context-length bucket the messages will need, on unrelated text."""
    filler = "lorem ipsum dolor sit amet consectetur adipiscing elit "
    n = 8
    while True:
        text = (filler * (n // len(filler) + 1))[:n]
        suggest(text)
        suggest(text + " ")
        if n > longest * 2:
            break
        n *= 2


def type_messages(suggest, split_context, messages: list[str]) -> dict:
    times = {"all": [], "next_word": [], "completion": []}
    for m in messages:
        for i in range(len(m) + 1):
            text = m[:i]
            t = time.perf_counter()
            suggest(text)
            ms = (time.perf_counter() - t) * 1e3
            times["all"].append(ms)
            times["completion" if split_context(text)[1] else "next_word"].append(ms)
    return {k: _stats(v) for k, v in times.items()}


def bench(model: dict, messages: list[str]) -> dict:
    from keyboard_fl.demo.incremental import IncrementalSuggester
    from keyboard_fl.suggest import Suggester

    base = model["suggester"]
    longest = max(map(len, messages))
    results = {}
    for label in ("Suggester", "IncrementalSuggester"):
        fresh = Suggester(base.graphdef, base.params, base.tokenizer, base.config)  # cold caches each time
        s = fresh if label == "Suggester" else IncrementalSuggester(fresh)
        warm_up(s.suggest, longest)
        fresh._tables.clear()
        if label != "Suggester":
            s.forget()
        t = time.perf_counter()
        results[label] = type_messages(s.suggest, fresh.split_context, messages)
        results[label]["wall_s"] = round(time.perf_counter() - t, 3)
    return {
        "model": model["name"],
        "kind": model["kind"],
        "mode": model["mode"],
        "architecture": model["model"],
        "messages": len(messages),
        "characters": sum(map(len, messages)),
        "keystrokes_timed": sum(len(m) + 1 for m in messages),
        "latency": results,
        "p99_within_budget": results["Suggester"]["all"]["p99_ms"] <= BUDGET_MS,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs",
        nargs="*",
        type=Path,
        help=f"run directories (default: {DEFAULT_RUN.relative_to(ROOT)}, else a tiny run)",
    )
    ap.add_argument(
        "--untrained-preset",
        action="append",
        default=[],
        help="also time a randomly initialised model of this preset's size",
    )
    ap.add_argument("--messages", type=int, default=40, help="held-out messages typed per model")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--xla-single-thread", action="store_true", help=f"XLA_FLAGS={SINGLE_THREAD_FLAG} (set before JAX loads)"
    )
    ap.add_argument(
        "--compare-xla-threading",
        action="store_true",
        help="run twice (XLA thread pool on, then off) in subprocesses; one report",
    )
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.compare_xla_threading:
        return _compare(argv, args.out)
    if args.xla_single_thread:
        if "jax" in sys.modules:
            raise SystemExit("--xla-single-thread must be set before JAX is imported")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_FLAG).strip()

    models = []
    runs = list(args.runs)
    if not runs:
        runs = [DEFAULT_RUN if (DEFAULT_RUN / "metrics.json").exists() else _tiny_run()]
    for r in runs:
        models.append(load_trained(r))
    for p in args.untrained_preset:
        models.append(load_untrained(p))

    info = machine_info()
    report = {
        "benchmark": "suggestion latency per key press (Suggester.suggest, k=3)",
        "command": " ".join(["benchmarks/bench_suggest.py"] + argv),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "budget_ms": BUDGET_MS,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "machine": info,
        "results": [],
    }
    for m in models:
        msgs = heldout_messages(m["population"], args.messages)
        r = bench(m, msgs)
        report["results"].append(r)
        for label, res in r["latency"].items():
            a = res["all"]
            print(
                f"{m['name']:<40} {label:<21} {a['calls']:5d} calls  p50 {a['p50_ms']:.2f} ms  p99 {a['p99_ms']:.2f} ms  "
                f"mean {a['mean_ms']:.2f} ms  max {a['max_ms']:.1f} ms"
            )
    report["machine"]["load_average_after"] = (
        [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def _compare(argv: list[str], out: Path) -> dict:
    """Both threading settings, each in a fresh process (XLA reads its flags once), in one report."""
    base = [a for a in argv if a != "--compare-xla-threading"]
    base = [
        a
        for i, a in enumerate(base)
        if a != "--out" and (i == 0 or base[i - 1] != "--out") and not a.startswith("--out=")
    ]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in ([], ["--xla-single-thread"]):
            path = Path(tmp) / f"r{len(runs)}.json"
            subprocess.run([sys.executable, __file__, *base, *extra, "--out", str(path)], check=True)
            runs.append(json.loads(path.read_text()))
    report = {**runs[0], "command": " ".join(["benchmarks/bench_suggest.py"] + argv), "configurations": runs}
    del report["results"], report["xla_flags"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
