"""Cost of SecAgg+ in the Flower deployment: seconds per round and bytes per device, with and without it.

Both runs use :func:`keyboard_fl.flower.loopback.run_loopback`: a real
SuperLink and ``K`` SuperNode processes on 127.0.0.1, the ``tiny`` preset
(d = 31,424 parameters), ``q = 1``, ``z = 1``, ``C = 0.5``, server SGD(1),
``traffic = true`` (every message the server pushes or pulls is weighed per
device: :mod:`keyboard_fl.flower.traffic`).

* ``plain``: one ``train`` message down (global model + task) and one reply up
  (clipped delta + metrics) per device and round.
* ``secagg``: four SecAgg+ stages per round (setup, key sharing, masked
  vectors, unmasking), each a message to a fresh ``flwr-clientapp`` process;
  every device shares keys with the whole cohort (``secagg-shares = 1``).

Seconds per round come from the strategy's history (sampling → released
update, all messaging included); round 1 includes XLA compilation. Bytes per
device per round = (down + up) / rounds, the application payload (Flower's
serialized objects; no HTTP framing).

``--in-process`` measures the same protocols without a SuperLink
(:class:`keyboard_fl.flower.inprocess.InProcessGrid`, the tiny model's shapes,
synthetic device updates): bytes per device from the real SecAgg+ and plain
messages, and the server-plus-device compute of a round (key agreement,
Shamir shares, mask expansion, quantization), without process start-up or
polling. It is the figure to use when the machine is too loaded for the
deployment runs (Flower drops a ClientApp that has not started within 30 s).

It also measures the quantization error of the SecAgg+ sum against its bound,
in process, with Flower's own quantizer: ``n`` random updates of norm ``C'``
(the device clip), ``‖Σ x̂ − Σ x‖`` vs ``n·sqrt(d)·s``.

The machine is shared (2 cores; see the load averages). Usage::

    .venv/bin/python benchmarks/bench_secagg.py --clients 4 --rounds 3

Writes ``benchmarks/results/secagg.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

OUT = Path(__file__).parent / "results" / "secagg.json"  # --in-process: secagg_in_process.json
Z, C = 1.0, 0.5


def bench_mode(k: int, rounds: int, work: Path, secagg: bool) -> dict:
    from keyboard_fl.flower.loopback import run_loopback

    res = run_loopback(
        work,
        k,
        num_rounds=rounds,
        noise_multiplier=Z,
        clip_norm=C,
        clients_per_round=float(k),
        secagg=secagg,
        traffic=True,
        timeout=3000.0,
    )
    per_round = [h["seconds"] for h in res["history"]]
    traffic = json.loads((work / "run" / "traffic.json").read_text())["per_node"]
    per_device = [(v["down"] + v["up"]) / rounds for v in traffic.values()]
    return {
        "secagg": secagg,
        "clients": k,
        "rounds": rounds,
        "sec_per_round": [round(s, 2) for s in per_round],
        "first_round_s": round(per_round[0], 2),
        "warm_sec_per_round": round(statistics.median(per_round[1:]), 2) if len(per_round) > 1 else None,
        "run_wall_s": round(res["wall_seconds"], 1),
        "bytes_per_device_per_round": round(statistics.mean(per_device)),
        "down_bytes_per_device_per_round": round(statistics.mean(v["down"] / rounds for v in traffic.values())),
        "up_bytes_per_device_per_round": round(statistics.mean(v["up"] / rounds for v in traffic.values())),
        "messages_per_device_per_round": statistics.mean(
            (v["messages_down"] + v["messages_up"]) / rounds for v in traffic.values()
        ),
        "included_clients": [h["included_clients"] for h in res["history"]],
        "epsilon": res["privacy"]["epsilon"],
    }


def _devices(k: int, template, drop: int | None = None, secagg: bool = True):
    """``k`` ClientApps (SecAgg+ mod included) whose "training" returns a fixed random update of norm 0.4."""
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from keyboard_fl.flower.secagg import device_mod
    from keyboard_fl.flower.task import params_to_arrays

    leaves, treedef = jax.tree.flatten(template)
    apps = {}
    for i in range(k):
        rng = np.random.default_rng(i)
        u = [rng.normal(size=x.shape) for x in leaves]
        norm = math.sqrt(sum(float(np.vdot(x, x)) for x in u))
        delta = jax.tree.unflatten(treedef, [(x * 0.4 / norm).astype(np.float32) for x in u])
        app = ClientApp()

        @app.train(mods=[device_mod])
        def train(msg: Message, context: Context, _delta=delta) -> Message:
            metrics = MetricRecord({"num-examples": 16, "num-tokens": 256.0, "train-loss": 5.0, "clipped": 0.0})
            return Message(RecordDict({"arrays": params_to_arrays(_delta), "metrics": metrics}), reply_to=msg)

        node_config = {"drop-in-round": 1} if i == drop else {}
        ctx = Context(
            run_id=1,
            node_id=1000 + i,
            node_config=node_config,
            state=RecordDict(),
            run_config={"secagg": secagg, "clip-norm": C},
        )
        apps[1000 + i] = (app, ctx)
    return apps


def bench_in_process(k: int, rounds: int) -> dict:
    """Bytes per device and compute seconds per round, plain vs SecAgg+, tiny-model shapes, no SuperLink."""
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from keyboard_fl.fl.round import make_server_optimizer
    from keyboard_fl.flower.inprocess import InProcessGrid
    from keyboard_fl.flower.secagg_server import run_secagg
    from keyboard_fl.flower.strategy import DpFedAvg
    from keyboard_fl.flower.task import FlowerSettings, LocalTask, abstract_model, params_to_arrays
    from keyboard_fl.flower.traffic import CountingGrid, message_bytes
    from keyboard_fl.privacy import PrivacyLedger

    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1  # Messages outside a Flower process
    settings = FlowerSettings(
        num_users=k, clients_per_round=float(k), noise_multiplier=Z, clip_norm=C, num_rounds=rounds, secagg=True
    )
    task = LocalTask.from_settings(settings, 512)
    template = jax.tree.map(lambda t: np.zeros(t.shape, t.dtype), abstract_model(task.model)[1])
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})

    def strategy():
        ledger = PrivacyLedger(Z, 1.0, 1e-5, k)
        return DpFedAvg(
            template, make_server_optimizer("sgd", 1.0), ledger, clip_norm=C, seed=0, node_wait=0.0, poll_interval=0.0
        )

    out = {"clients": k, "rounds": rounds, "d": int(sum(np.size(x) for x in jax.tree.leaves(template)))}
    for drop in (None, 0):
        grid = CountingGrid(InProcessGrid(_devices(k, template, drop)))
        dp = strategy()
        run_secagg(grid, ctx, dp, settings, task.to_config(), None)
        per_device = [(v["down"] + v["up"]) / rounds for v in grid.per_node.values()]
        out["secagg" if drop is None else "secagg_one_dropout_in_round_1"] = {
            "sec_per_round": [round(h["seconds"], 3) for h in dp.history],
            "bytes_per_device_per_round": round(statistics.mean(per_device)),
            "messages_per_device_per_round": statistics.mean(
                (v["messages_down"] + v["messages_up"]) / rounds for v in grid.per_node.values()
            ),
            "included_clients": [h["included_clients"] for h in dp.history],
        }
    # Plain: the strategy's real train message and a device's reply of the same shape, weighed the same way.
    dp = strategy()
    grid = InProcessGrid(_devices(k, template, secagg=False))
    msgs = list(dp.configure_train(1, params_to_arrays(template), ConfigRecord(task.to_config()), grid))
    grid.push_messages(msgs)
    replies = grid.pull_messages([m.metadata.message_id for m in msgs])
    t0 = time.perf_counter()
    dp.aggregate_train(1, replies)
    assert dp.history[-1]["included_clients"] == k, dp.history[-1]
    out["plain"] = {
        "bytes_per_device_per_round": round(
            statistics.mean(message_bytes(m) + message_bytes(r) for m, r in zip(msgs, replies))
        ),
        "messages_per_device_per_round": 2,
        "server_aggregate_s": round(time.perf_counter() - t0, 3),
    }
    return out


def quantization_error(d: int, cohorts: list[int], seed: int = 0) -> list[dict]:
    """``‖Σ x̂ − Σ x‖`` with Flower's quantizer for ``n`` random updates of norm ``C'``, vs the worst-case bound."""
    from keyboard_fl.flower.secagg import SecAggParams, quantize_like_flower

    p = SecAggParams(C, d)
    rng = np.random.default_rng(seed)
    np.random.seed(seed)  # Flower's stochastic rounding draws from numpy's global generator
    out = []
    for n in cohorts:
        err = np.zeros(d)
        for _ in range(n):
            x = rng.normal(size=d)
            x *= p.device_clip_norm / np.linalg.norm(x)
            err += quantize_like_flower([x], p)[0] - x
        out.append(
            {
                "n": n,
                "sum_error_l2": float(np.linalg.norm(err)),
                "worst_case_bound": p.sum_error_bound(n),
                "rms_estimate_sqrt(n*d/6)*s": math.sqrt(n * d / 6) * p.step,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--in-process", action="store_true", help="no SuperLink: bytes and protocol compute only")
    a = ap.parse_args(argv)
    if a.in_process and a.out == OUT:
        a.out = OUT.with_name("secagg_in_process.json")
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    results = []
    in_process = None
    if a.in_process:
        in_process = bench_in_process(a.clients, a.rounds)
        print(json.dumps(in_process), flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for secagg in (False, True):
                r = bench_mode(a.clients, a.rounds, Path(tmp) / ("secagg" if secagg else "plain"), secagg)
                print(json.dumps(r), flush=True)
                results.append(r)
    from keyboard_fl.flower.secagg import SecAggParams

    d = 31424  # tiny preset
    p = SecAggParams(C, d)
    report = {
        "what": "SecAgg+ (Flower 1.42) vs plain DP-FedAvg over a real SuperLink + SuperNodes on 127.0.0.1, tiny preset",
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": f".venv/bin/python benchmarks/bench_secagg.py --clients {a.clients} --rounds {a.rounds}"
        + (" --in-process" if a.in_process else ""),
        "task": {"preset": "tiny", "d": d, "q": 1.0, "noise_multiplier": Z, "clip_norm": C, "server": "sgd lr 1.0"},
        "secagg_quantization": {
            "R": p.quantization_range,
            "M": p.modulus_range,
            "step": p.step,
            "device_clip_norm": p.device_clip_norm,
            "per_device_rounding_bound": p.rounding_bound,
        },
        "quantization_error": quantization_error(d, [a.clients, 16, 100]),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": list(load0),
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
        "in_process": in_process,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
