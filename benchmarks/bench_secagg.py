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

import numpy as np

OUT = Path(__file__).parent / "results" / "secagg.json"
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
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    results = []
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
        "command": f".venv/bin/python benchmarks/bench_secagg.py --clients {a.clients} --rounds {a.rounds}",
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
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
