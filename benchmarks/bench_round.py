"""Seconds per jitted federated round and client updates per second.

Usage (toy bigram model by default)::

    python benchmarks/bench_round.py --cohorts 16 64 256 --mode dp-fedavg

Another model: call :func:`bench` with its ``loss_fn`` and ``params`` (a plain
pytree, e.g. the ``nnx.split`` state of the model). Results go to
``benchmarks/results/bench_round_<mode>_<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from keyboard_fl.fl import AggregatorConfig, build_round, make_server_optimizer, server_init
from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

RESULTS = Path(__file__).resolve().parent / "results"


def bench(
    loss_fn,
    params,
    *,
    cohorts=(16, 64, 256),
    mode="dp-fedavg",
    rounds=5,
    steps=2,
    batch=8,
    seq_len=20,
    vocab_size=1000,
    client_lr=0.5,
    server="nesterov",
    client_chunk=None,
    seed=0,
) -> dict:
    """Times ``rounds`` jitted rounds (after one compile call) for each cohort size."""
    server_opt = make_server_optimizer(server, 1.0 if server != "adam" else 1e-2)
    rows = []
    for k in cohorts:
        agg = AggregatorConfig(
            mode=mode, clip_norm=1.0, noise_multiplier=1.0 if mode == "dp-fedavg" else 0.0, expected_cohort=float(k)
        )
        fn = build_round(loss_fn, client_lr, server_opt, agg, client_chunk=client_chunk).apply
        cohort = toy_cohort(seed, k, steps=steps, batch=batch, seq_len=seq_len, vocab_size=vocab_size)
        state = server_init(params, server_opt)
        t0 = time.perf_counter()
        state, m = fn(state, cohort, jax.random.key(0))
        jax.block_until_ready((state, m))
        compile_s = time.perf_counter() - t0
        times = []
        for r in range(1, rounds + 1):
            t0 = time.perf_counter()
            state, m = fn(state, cohort, jax.random.key(r))
            jax.block_until_ready((state, m))
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        rows.append(
            {
                "cohort": k,
                "first_call_s": compile_s,
                "sec_per_round": sec,
                "min_sec_per_round": min(times),
                "client_updates_per_s": k / sec,
                "tokens_per_s": float(m.num_tokens) / sec,
                "train_loss": float(m.train_loss),
            }
        )
        print(f"cohort {k:4d}: {sec * 1e3:9.2f} ms/round  {k / sec:9.1f} clients/s  (first call {compile_s:.2f} s)")
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    return {
        "mode": mode,
        "server": server,
        "client_chunk": client_chunk,
        "rounds_timed": rounds,
        "steps": steps,
        "batch": batch,
        "seq_len": seq_len,
        "num_params": n_params,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": rows,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohorts", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--mode", choices=["fedavg", "dp-fedavg"], default="dp-fedavg")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="local steps per client")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--client-chunk", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    params = toy_init(jax.random.key(0), a.vocab, a.dim)
    report = bench(
        toy_loss,
        params,
        cohorts=a.cohorts,
        mode=a.mode,
        rounds=a.rounds,
        steps=a.steps,
        batch=a.batch,
        seq_len=a.seq_len,
        vocab_size=a.vocab,
        client_chunk=a.client_chunk,
    )
    report["model"] = {"name": "toy bigram (embedding + linear)", "vocab": a.vocab, "dim": a.dim}
    out = a.out or RESULTS / f"bench_round_{a.mode}_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
