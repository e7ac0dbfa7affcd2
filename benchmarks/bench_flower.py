"""Seconds per DP-FedAvg round through Flower's deployment engine vs. our jitted round, same task.

The task is the ``tiny`` preset (CIFG-LSTM, vocab 512, 16 local rows of 16
pieces, batch 8, one local epoch), ``K`` users, ``q = 1`` (every user every
round), ``z = 1``, ``C = 0.5``, server SGD(1).

* ``flower``: :func:`keyboard_fl.flower.loopback.run_loopback`: a real
  SuperLink, ``K`` SuperNode processes on 127.0.0.1 and ``flwr run``; every
  train message starts a fresh ``flwr-clientapp`` process (Python + JAX +
  flax import, XLA executable from the shared on-disk cache, local training,
  clipping). Round 1 includes the first compilation; ``warm`` is the median of
  the later rounds. Per-round seconds come from the strategy's history
  (configure_train → aggregate_train done: messaging, client processes,
  aggregation, noise, optimizer); ``run_wall_s`` adds SuperLink/SuperNode
  start, the ServerApp process, evaluation and teardown.
* ``in_process``: :func:`keyboard_fl.fl.build_round` (one jitted round:
  vmap'd client updates, clipping, noise, optimizer) on the same users' rows;
  median of timed rounds after the compile.

The machine is shared (2 cores; see the load averages): treat the figures
as an order of magnitude. Usage::

    .venv/bin/python benchmarks/bench_flower.py                 # K = 3, 6; 4 rounds
    .venv/bin/python benchmarks/bench_flower.py --clients 3 --rounds 3

Writes ``benchmarks/results/flower_round.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

OUT = Path(__file__).parent / "results" / "flower_round.json"
Z, C = 1.0, 0.5


def bench_flower(k: int, rounds: int, work: Path) -> dict:
    from keyboard_fl.flower.loopback import run_loopback

    t0 = time.perf_counter()
    res = run_loopback(work, k, num_rounds=rounds, noise_multiplier=Z, clip_norm=C, clients_per_round=float(k))
    wall = time.perf_counter() - t0
    per_round = [h["seconds"] for h in res["history"]]
    return {
        "clients": k,
        "rounds": rounds,
        "sec_per_round": [round(s, 3) for s in per_round],
        "first_round_s": round(per_round[0], 3),
        "warm_sec_per_round": round(statistics.median(per_round[1:]), 3) if len(per_round) > 1 else None,
        "run_wall_s": round(res["wall_seconds"], 2),
        "prepare_and_run_wall_s": round(wall, 2),
        "serverapp_s": round(res["seconds"], 2),
        "epsilon": res["privacy"]["epsilon"],
        "eval_loss": res["eval_loss"],
    }


def bench_in_process(k: int, rounds: int, work: Path) -> dict:
    """Same users (the prepared client dirs), same model and DP settings, one jitted round."""
    from keyboard_fl.config import preset
    from keyboard_fl.data import MaterializedSource
    from keyboard_fl.fl import AggregatorConfig, build_round, make_server_optimizer, server_init
    from keyboard_fl.models import init_params, make_loss_fn
    from keyboard_fl.tokenizer import Tokenizer
    from keyboard_fl.train.examples import UserRows, user_rows
    from keyboard_fl.train.federated import gather_cohort

    cfg = preset("tiny")
    tok = Tokenizer.load(work / "tokenizer.model")
    users = [next(iter(MaterializedSource(d).users("train"))) for d in sorted((work / "clients").iterdir())[:k]]
    rows = UserRows([user_rows(tok, u.train, cfg.seq_len) for u in users])
    model_cfg = type(cfg.model)(**{**cfg.model.__dict__, "vocab_size": tok.vocab_size})
    graphdef, params = init_params(model_cfg, jax.random.fold_in(jax.random.key(0), 1))
    server_opt = make_server_optimizer("sgd", 1.0)
    agg = AggregatorConfig(mode="dp-fedavg", clip_norm=C, noise_multiplier=Z, expected_cohort=float(k))
    round_fn = build_round(make_loss_fn(graphdef), cfg.federated.client_lr, server_opt, agg).apply
    state = server_init(params, server_opt)
    idx, mask = np.arange(k), np.ones(k, bool)
    times = []
    for r in range(rounds + 1):
        t = time.perf_counter()
        cohort = gather_cohort(rows, idx, mask, cfg.federated, 0, r)
        state, m = round_fn(state, cohort, jax.random.key(r))
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - t)
    return {
        "clients": k,
        "first_round_s": round(times[0], 3),
        "warm_sec_per_round": round(statistics.median(times[1:]), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results = []
    for k in a.clients:
        with tempfile.TemporaryDirectory(prefix=f"bench_flower_{k}_") as d:
            work = Path(d)
            fl = bench_flower(k, a.rounds, work)
            ip = bench_in_process(k, a.rounds, work)
            fl["in_process"] = ip
            if fl["warm_sec_per_round"]:
                fl["flower_over_in_process_warm"] = round(fl["warm_sec_per_round"] / ip["warm_sec_per_round"], 1)
            results.append(fl)
            print(json.dumps(fl))
    out = {
        "what": "seconds per DP-FedAvg round through Flower 1.42's deployment engine (real SuperLink + SuperNode "
        "processes on 127.0.0.1) vs. keyboard_fl's jitted in-process round, tiny preset",
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": f".venv/bin/python benchmarks/bench_flower.py --clients {' '.join(map(str, a.clients))} --rounds {a.rounds}",
        "task": {"preset": "tiny", "q": 1.0, "noise_multiplier": Z, "clip_norm": C, "server": "sgd lr 1.0"},
        "notes": [
            "flower sec_per_round: strategy configure_train -> aggregate_train done, per round; round 1 includes XLA compilation "
            "(later client processes load it from the shared on-disk cache)",
            "each train message runs in a fresh flwr-clientapp process: Python, flwr, JAX and flax imports dominate a warm round",
            "an idle SuperNode polls the SuperLink every 3 s (hard-coded in Flower 1.42), adding up to 3 s a round",
        ],
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "load_average_start": list(load0),
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
