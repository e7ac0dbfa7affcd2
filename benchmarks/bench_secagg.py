"""Cost of SecAgg+ in the Flower deployment: seconds per round and bytes per device, with and without it.

Deployment mode (the default) runs the real thing on 127.0.0.1: one
:class:`keyboard_fl.flower.loopback.Loopback` federation (a ``flower-superlink``
and ``K`` ``flower-supernode`` processes, one user's corpus each, as in
``tests/test_flower_secagg_loopback.py``) is started once per ``K``, and
``flwr run`` is called on it again and again, alternating plain DP-FedAvg and
SecAgg+ in ABBA order (plain, secagg, secagg, plain, ...), so both see the
same federation, the same XLA cache and, pair by pair, the same machine load.
Every run has the same task: the ``tiny`` preset (d = 31,424 parameters),
``q = 1``, ``z = 1``, ``C = 0.5``, server SGD(1), no server evaluation
(``eval-messages = 0``: it runs between rounds and is not SecAgg's cost).

* ``plain``: one ``train`` message down (global model + task) and one reply up
  (clipped delta + metrics) per device and round; one fresh
  ``flwr-clientapp`` process per message.
* ``secagg``: four SecAgg+ stages per round (setup, key sharing, masked
  vectors, unmasking), each a message to a fresh ``flwr-clientapp`` process;
  every device shares keys with the whole cohort (``secagg-shares = 1``).

What is measured:

* **seconds per round**: the strategy's history, from sampling the cohort
  to the released update (all messaging, client processes, SecAgg+ stages,
  noise, server optimizer); SuperLink/SuperNode start, the ServerApp's
  start-up and teardown are outside it. Round 1 is reported apart (the first
  run's round 1 compiles the client's XLA program; later runs load it from
  the shared cache); the headline is the median of rounds 2..R over all runs,
  and the ratio is the median over ABBA pairs of (SecAgg+ / plain).
* **payload bytes per device per round**, down and up, and per SecAgg+ stage:
  every message the ServerApp pushes to a node or pulls from it is weighed as
  Flower 1.42 serializes it, object by object (message, record dict, records,
  array chunks; :mod:`keyboard_fl.flower.traffic`, ``traffic = true``). A
  SuperNode pulls and pushes exactly these objects.
* **wire bytes per device per round**: each SuperNode dials the SuperLink
  through its own relay on 127.0.0.1 (:class:`keyboard_fl.flower.traffic.TcpRelay`,
  ``Loopback(count_wire=True)``) that counts the TCP payload each way over
  every connection the node opens: gRPC, HTTP/2 and protobuf framing, and the
  node's polls and heartbeats over the whole run (its start and end included),
  read before and after each run and divided by the rounds. The idle rate
  (polls and heartbeats alone) is measured before the first run.
* **CPU seconds per round**: user + system CPU of every process of the
  federation (SuperLink, SuperNodes, their SuperExecs, the ServerApp and every
  ClientApp process), before and after each run, divided by the rounds
  (:func:`keyboard_fl.flower.loopback.cpu_seconds_in_sessions`). Unlike
  seconds, it hardly depends on the machine's load; it includes the
  ServerApp's start-up, about the same in both modes, so the difference of
  the two modes is the extra CPU a round of SecAgg+ costs.

``--in-process`` measures the same protocols without a SuperLink
(:class:`keyboard_fl.flower.inprocess.InProcessGrid`, the tiny model's shapes,
synthetic device updates): bytes per device from the real SecAgg+ and plain
messages, and the server-plus-device compute of a round (key agreement,
Shamir shares, mask expansion, quantization), without process start-up or
polling. It also measures the quantization error of the SecAgg+ sum against
its bound, with Flower's own quantizer: ``n`` random updates of norm ``C'``
(the device clip), ``‖Σ x̂ − Σ x‖`` vs ``n·sqrt(d)·s``.

The machine is shared (2 cores; see the load averages per run). Usage::

    .venv/bin/python benchmarks/bench_secagg.py --clients 4 --rounds 3 --reps 1     # one pair: 16.5 min at load 8–15
    .venv/bin/python benchmarks/bench_secagg.py --clients 4 8 --rounds 3 --reps 2   # ABBA, both cohorts: longer
    .venv/bin/python benchmarks/bench_secagg.py --in-process --clients 4 --rounds 3

Writes ``benchmarks/results/secagg_cost.json`` and ``secagg_cost.md``
(``--in-process``: ``secagg_in_process.json``).
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
import threading
import time
from pathlib import Path

import jax
import numpy as np

OUT = Path(__file__).parent / "results" / "secagg_cost.json"  # --in-process: secagg_in_process.json
Z, C = 1.0, 0.5
IDLE_S = 15.0  # seconds of idle federation over which the polling/heartbeat byte rate is measured


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _wire_delta(before: list[dict], after: list[dict], rounds: int) -> dict:
    """Per device per round, from two :meth:`Loopback.wire_bytes` readings."""
    k = len(before)
    return {
        key: round(sum(y[key] - x[key] for x, y in zip(before, after)) / k / rounds, 2 if key == "connections" else 0)
        for key in ("down", "up", "connections")
    }


def _cpu_delta(before: dict, after: dict, rounds: int) -> dict:
    return {key: round((after[key] - before[key]) / rounds, 2) for key in before}


class _RoundWatcher(threading.Thread):
    """Reads the federation's CPU and wire counters each time the ServerApp releases a round.

    The strategy rewrites ``run-dir/privacy.json`` (with the round's history record) right after it
    releases a round, in both modes; the watcher polls it every ``interval`` s. A reading lags the
    release by up to ``interval`` plus scheduling delay, so rounds 2..R are a window from just after
    round 1 to just after round R (no evaluation runs between rounds: ``eval-messages = 0``).
    """

    def __init__(self, lb, path: Path, interval: float = 0.2):
        super().__init__(daemon=True)
        self.lb, self.path, self.interval = lb, path, interval
        self.marks: dict[int, dict] = {}  # round -> counters just after its release
        self.halt = threading.Event()

    def run(self) -> None:
        seen, mtime = 0, None
        while not self.halt.is_set():
            try:
                m = self.path.stat().st_mtime_ns
                n = len(json.loads(self.path.read_text())["history"]) if m != mtime else seen
                mtime = m
            except (OSError, ValueError, KeyError):
                n = seen
            if n > seen:
                self.marks[n] = {"t": time.perf_counter(), "cpu": self.lb.cpu_seconds(), "wire": self.lb.wire_bytes()}
                seen = n
            self.halt.wait(self.interval)


def _one_run(lb, prep, work: Path, name: str, k: int, rounds: int, secagg: bool) -> dict:
    """One ``flwr run`` on the running federation; its per-round seconds, payload and wire bytes, CPU."""
    from keyboard_fl.flower.loopback import loopback_run_config

    run_dir = work / name
    cfg = loopback_run_config(
        prep,
        work,
        run_dir,
        num_rounds=rounds,
        noise_multiplier=Z,
        clip_norm=C,
        clients_per_round=float(k),
        secagg=secagg,
        traffic=True,
        eval_messages=0,
        round_timeout=300.0,
    )
    watcher = _RoundWatcher(lb, run_dir / "privacy.json")
    load0, wire0, cpu0, t0 = _load(), lb.wire_bytes(), lb.cpu_seconds(), time.perf_counter()
    watcher.start()
    try:
        lb.run(cfg, timeout=1800.0, name=name)
    finally:
        watcher.halt.set()
        watcher.join()
    wall, wire1, cpu1, load1 = time.perf_counter() - t0, lb.wire_bytes(), lb.cpu_seconds(), _load()
    res = json.loads((run_dir / "result.json").read_text())
    traffic = json.loads((run_dir / "traffic.json").read_text())
    per_node, per_kind = traffic["per_node"], traffic["per_kind"]
    assert len(per_node) == k, per_node
    per_round = [h["seconds"] for h in res["history"]]
    kr = k * rounds
    marks = watcher.marks
    later = None
    if rounds > 1 and 1 in marks and rounds in marks:  # rounds 2..R: from just after round 1 to just after round R
        first, last, n = marks[1], marks[rounds], rounds - 1
        later = {
            "rounds": n,
            "window_s": round(last["t"] - first["t"], 2),
            "cpu_s_per_round": _cpu_delta(first["cpu"], last["cpu"], n),
            "wire_per_device_per_round": _wire_delta(first["wire"], last["wire"], n),
        }
    return {
        "name": name,
        "secagg": secagg,
        "sec_per_round": [round(x, 2) for x in per_round],
        "included_clients": [h["included_clients"] for h in res["history"]],  # k every round, or a device failed
        "flwr_run_wall_s": round(wall, 1),
        "load_average_start": load0,
        "load_average_end": load1,
        "payload_per_device_per_round": {
            "down": round(sum(v["down"] for v in per_node.values()) / kr),
            "up": round(sum(v["up"] for v in per_node.values()) / kr),
            "messages_down": sum(v["messages_down"] for v in per_node.values()) / kr,
            "messages_up": sum(v["messages_up"] for v in per_node.values()) / kr,
        },
        "payload_per_kind_per_device_per_round": {
            kind: {key: round(v / kr, 2) if key.startswith("messages") else round(v / kr) for key, v in row.items()}
            for kind, row in per_kind.items()
        },
        "rounds_2_to_R": later,  # CPU and wire bytes without start-up, round 1 and shutdown
        "whole_run_per_round": {  # flwr run start to end, / rounds: start-up, compilation, teardown included
            "cpu_s": _cpu_delta(cpu0, cpu1, rounds),
            "wire_per_device": _wire_delta(wire0, wire1, rounds),
        },
        "epsilon": res["privacy"]["epsilon"],
    }


def bench_deployment(k: int, rounds: int, reps: int, work: Path) -> dict:
    """``reps`` ABBA pairs of plain and SecAgg+ runs on one loopback federation of ``k`` SuperNodes."""
    from keyboard_fl.flower.loopback import Loopback, prepare

    prep = prepare(work, k)
    order = [s for rep in range(reps) for s in ((False, True) if rep % 2 == 0 else (True, False))]
    runs = []
    t_start = time.perf_counter()
    with Loopback(work, prep.client_dirs, count_wire=True) as lb:
        time.sleep(3.0)  # let every SuperNode register and settle
        w0, c0, t0 = lb.wire_bytes(), lb.cpu_seconds(), time.perf_counter()
        time.sleep(IDLE_S)
        w1, c1, idle_s = lb.wire_bytes(), lb.cpu_seconds(), time.perf_counter() - t0
        idle = {key: round(sum(y[key] - x[key] for x, y in zip(w0, w1)) / k / idle_s, 1) for key in ("down", "up")}
        idle["cpu_s_per_s"] = {key: round((c1[key] - c0[key]) / idle_s, 3) for key in c0}  # the whole federation
        for i, secagg in enumerate(order):
            name = f"k{k}-{i:02d}-{'secagg' if secagg else 'plain'}"
            try:
                run = _one_run(lb, prep, work, name, k, rounds, secagg)
            except (RuntimeError, TimeoutError, OSError, KeyError) as e:  # e.g. Flower stopped a starved ClientApp
                run = {"name": name, "secagg": secagg, "error": f"{type(e).__name__}: {str(e)[-500:]}"}
            print(json.dumps(run), flush=True)
            runs.append(run)
    return {
        "clients": k,
        "rounds": rounds,
        "reps": reps,
        "idle_per_device_per_s": idle,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "runs": runs,
        "summary": summarize(runs),
    }


def _median(xs: list[float], nd: int = 2) -> float | None:
    return round(statistics.median(xs), nd) if xs else None


def summarize(runs: list[dict]) -> dict:
    """Medians per mode (seconds: rounds 2..R pooled over runs, round 1 apart; CPU and wire: each run's
    rounds-2..R window) and SecAgg+/plain ratios (seconds: median over ABBA pairs of the pair's ratio)."""
    out: dict = {"failed_runs": [r["name"] for r in runs if "error" in r]}
    runs = [r for r in runs if "error" not in r]  # an ABBA pair with a failed run gives no ratio
    for mode, secagg in (("plain", False), ("secagg", True)):
        rs = [r for r in runs if r["secagg"] == secagg]
        if not rs:
            raise RuntimeError(f"every {mode} run failed; see the runs' errors")
        later = [x for r in rs for x in r["sec_per_round"][1:]]
        payload = rs[-1]["payload_per_device_per_round"]
        windows = [r["rounds_2_to_R"] for r in rs if r["rounds_2_to_R"]]
        out[mode] = {
            "sec_per_round_median": _median(later),
            "sec_per_round_range": [min(later), max(later)] if later else None,
            "round_1_s": [r["sec_per_round"][0] for r in rs],
            "cpu_s_per_round_median": {
                key: _median([w["cpu_s_per_round"][key] for w in windows])
                for key in ("apps", "infrastructure", "total")
            },
            "payload_per_device_per_round": payload,
            "payload_identical_across_runs": all(r["payload_per_device_per_round"] == payload for r in rs),
            "payload_per_kind_per_device_per_round": rs[-1]["payload_per_kind_per_device_per_round"],
            "wire_per_device_per_round_median": {
                key: _median([w["wire_per_device_per_round"][key] for w in windows], 2 if key == "connections" else 0)
                for key in ("down", "up", "connections")
            },
            "load_average_1min": [r["load_average_start"][0] for r in rs],
        }
    ratios = []
    for a, b in [(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]:
        if a["secagg"] == b["secagg"]:
            continue
        plain, sec = (a, b) if not a["secagg"] else (b, a)
        p, s = plain["sec_per_round"][1:], sec["sec_per_round"][1:]
        if p and s:
            ratios.append(statistics.median(s) / statistics.median(p))
    pp, sp = out["plain"]["payload_per_device_per_round"], out["secagg"]["payload_per_device_per_round"]
    pw, sw = out["plain"]["wire_per_device_per_round_median"], out["secagg"]["wire_per_device_per_round_median"]
    pc, sc = out["plain"]["cpu_s_per_round_median"], out["secagg"]["cpu_s_per_round_median"]

    def ratio(x, y, nd=3):
        return round(x / y, nd) if x is not None and y else None

    out["ratio_secagg_over_plain"] = {
        "sec_per_round_per_pair": [round(x, 2) for x in ratios],
        "sec_per_round_median": _median(ratios),
        "cpu_s_per_round_apps": ratio(sc["apps"], pc["apps"], 2),
        "cpu_s_per_round_total": ratio(sc["total"], pc["total"], 2),
        "extra_cpu_s_per_round_apps": round(sc["apps"] - pc["apps"], 2) if pc["apps"] is not None else None,
        "payload_down": ratio(sp["down"], pp["down"]),
        "payload_up": ratio(sp["up"], pp["up"]),
        "payload_total": ratio(sp["down"] + sp["up"], pp["down"] + pp["up"]),
        "messages": (sp["messages_down"] + sp["messages_up"]) / (pp["messages_down"] + pp["messages_up"]),
        "wire_total": ratio(sw["down"] + sw["up"], pw["down"] + pw["up"]) if pw["down"] is not None else None,
    }
    return out


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


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:,.0f}" if isinstance(x, (int, float)) and abs(x) >= 100 else f"{x:g}"


def markdown(report: dict) -> str:
    """The README table: per device per round, plain vs SecAgg+, for each cohort size."""
    lines = [
        f"SecAgg+ cost in the Flower deployment (real SuperLink + SuperNodes on 127.0.0.1), {report['when_utc']}",
        "",
        f"`{report['command']}`; tiny preset (d = {report['task']['d']:,}), q = 1, z = 1, C = 0.5; "
        f"{report['machine']['nproc']} cores shared with other jobs, load average (1 min) "
        f"{report['load_average_start'][0]:.1f} at start, {report['load_average_end'][0]:.1f} at end.",
        "",
    ]
    for res in report["results"]:
        sm, k = res["summary"], res["clients"]
        p, s, r = sm["plain"], sm["secagg"], sm["ratio_secagg_over_plain"]
        pp, sp = p["payload_per_device_per_round"], s["payload_per_device_per_round"]
        pw, sw = p["wire_per_device_per_round_median"], s["wire_per_device_per_round_median"]
        pc, sc = p["cpu_s_per_round_median"], s["cpu_s_per_round_median"]
        loads = p["load_average_1min"] + s["load_average_1min"]
        lines += [
            f"**{k} devices, {res['rounds']} rounds, {res['reps']} run{'s' if res['reps'] > 1 else ''} per mode "
            f"({'ABBA' if res['reps'] > 1 else 'plain, then SecAgg+'}), "
            f"load average (1 min) {min(loads):.1f}–{max(loads):.1f} at the runs' starts**",
            "",
            "| per round (bytes and messages: per device) | plain DP-FedAvg | SecAgg+ | SecAgg+ / plain |",
            "|---|---:|---:|---:|",
            f"| seconds, median of rounds 2–{res['rounds']} | {p['sec_per_round_median']} "
            f"| {s['sec_per_round_median']} | {r['sec_per_round_median']} (pairs: "
            f"{', '.join(map(str, r['sec_per_round_per_pair']))}) |",
            f"| seconds, round 1 of each run | {', '.join(map(str, p['round_1_s']))} "
            f"| {', '.join(map(str, s['round_1_s']))} | |",
            f"| CPU seconds, ClientApp + ServerApp processes, rounds 2–{res['rounds']} | {pc['apps']} "
            f"| {sc['apps']} | {r['cpu_s_per_round_apps']} (+{r['extra_cpu_s_per_round_apps']} s) |",
            f"| CPU seconds, SuperLink + SuperNodes + SuperExecs, rounds 2–{res['rounds']} "
            f"| {pc['infrastructure']} | {sc['infrastructure']} | |",
            f"| messages down + up | {pp['messages_down']:g} + {pp['messages_up']:g} "
            f"| {sp['messages_down']:g} + {sp['messages_up']:g} | {r['messages']:g} |",
            f"| payload bytes down | {_fmt(pp['down'])} | {_fmt(sp['down'])} | {r['payload_down']} |",
            f"| payload bytes up | {_fmt(pp['up'])} | {_fmt(sp['up'])} | {r['payload_up']} |",
            f"| payload bytes, down + up | {_fmt(pp['down'] + pp['up'])} | {_fmt(sp['down'] + sp['up'])} "
            f"| {r['payload_total']} |",
            f"| TCP bytes down / up, rounds 2–{res['rounds']} | {_fmt(pw['down'])} / {_fmt(pw['up'])} "
            f"| {_fmt(sw['down'])} / {_fmt(sw['up'])} | {r['wire_total']} |",
            f"| TCP connections opened, rounds 2–{res['rounds']} | {_fmt(pw['connections'])} "
            f"| {_fmt(sw['connections'])} | |",
            "",
            "| message kind, per device per round | messages down + up | payload bytes down | payload bytes up |",
            "|---|---:|---:|---:|",
        ]
        kinds = [("plain: " + kd, row) for kd, row in p["payload_per_kind_per_device_per_round"].items()]
        kinds += [("SecAgg+: " + kd, row) for kd, row in s["payload_per_kind_per_device_per_round"].items()]
        for kind, row in kinds:
            lines.append(
                f"| {kind} | {row['messages_down']:g} + {row['messages_up']:g} | {_fmt(row['down'])} "
                f"| {_fmt(row['up'])} |"
            )
        idle = res["idle_per_device_per_s"]
        short = [
            (x["name"], x["included_clients"])
            for x in res["runs"]
            if "error" not in x and min(x["included_clients"]) < k
        ]
        lines += [
            "",
            f"Runs that failed: {', '.join(sm['failed_runs']) or 'none'}. Rounds short of {k} devices: "
            f"{', '.join(f'{n} {ic}' for n, ic in short) or 'none'}.",
            "",
            f"Idle federation: {idle['down']} B/s down and {idle['up']} B/s up per SuperNode (polls, heartbeats), "
            f"{idle['cpu_s_per_s']['total']} CPU s/s in all.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[4], help="SuperNodes (one federation each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1, help="ABBA pairs of (plain, SecAgg+) runs per federation")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--work", type=Path, default=None, help="keep corpora, logs and run dirs here (default: temp)")
    ap.add_argument("--in-process", action="store_true", help="no SuperLink: bytes and protocol compute only")
    ap.add_argument("--markdown-from", type=Path, default=None, help="only rewrite the .md table of this JSON")
    a = ap.parse_args(argv)
    if a.markdown_from:
        a.markdown_from.with_suffix(".md").write_text(markdown(json.loads(a.markdown_from.read_text())) + "\n")
        return 0
    if a.in_process and a.out == OUT:
        a.out = OUT.with_name("secagg_in_process.json")
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    results = []
    in_process = None
    command = (
        f".venv/bin/python benchmarks/bench_secagg.py --clients {' '.join(map(str, a.clients))} --rounds {a.rounds}"
    )
    if a.in_process:
        command += " --in-process"
        in_process = bench_in_process(a.clients[0], a.rounds)
        print(json.dumps(in_process), flush=True)
    else:
        command += f" --reps {a.reps}"
        with tempfile.TemporaryDirectory(prefix="bench_secagg_") as tmp:
            for k in a.clients:
                work = (a.work or Path(tmp)) / f"k{k}"
                results.append(bench_deployment(k, a.rounds, a.reps, work))
                print(json.dumps(results[-1]["summary"]), flush=True)
    from keyboard_fl.flower.secagg import SecAggParams

    d = 31424  # tiny preset
    p = SecAggParams(C, d)
    report = {
        "what": "SecAgg+ (Flower 1.42) vs plain DP-FedAvg over a real SuperLink + SuperNodes on 127.0.0.1, tiny preset"
        + (" (--in-process: no SuperLink, in-process transport)" if a.in_process else ""),
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "task": {"preset": "tiny", "d": d, "q": 1.0, "noise_multiplier": Z, "clip_norm": C, "server": "sgd lr 1.0"},
        "method": {
            "sec_per_round": "strategy history: cohort sampling -> released update; round 1 apart (first run compiles)",
            "payload": "every message the ServerApp pushes/pulls, weighed as Flower serializes it, object by object "
            "(keyboard_fl.flower.traffic.CountingGrid); per SecAgg+ stage from its secaggplus_configs stage",
            "wire": "TCP payload through a counting relay between each SuperNode and the SuperLink "
            "(keyboard_fl.flower.traffic.TcpRelay), whole run / rounds: framing, polls and heartbeats included",
            "cpu": "user+system CPU of every federation process (reaped ClientApps included), whole run / rounds",
        },
        "secagg_quantization": {
            "R": p.quantization_range,
            "M": p.modulus_range,
            "step": p.step,
            "device_clip_norm": p.device_clip_norm,
            "per_device_rounding_bound": p.rounding_bound,
        },
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": list(load0),
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    if a.in_process:
        report["quantization_error"] = quantization_error(d, [a.clients[0], 16, 100])
        report["in_process"] = in_process
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    if not a.in_process:
        a.out.with_suffix(".md").write_text(markdown(report) + "\n")
        print(f"wrote {a.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
