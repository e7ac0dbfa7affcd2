"""Seconds per DP-FedAvg round against devices, client_chunk, local steps and cohort.

One subprocess starts JAX with ``XLA_FLAGS=--xla_force_host_platform_device_count=max(D)``
on CPU (or, with ``--real-devices``, uses the visible accelerators) and, for
each configuration, builds the round on ``client_mesh(D)`` for each D (the
first D devices; D = 1: the unsharded round) one after the other, so the
device counts are measured side by side; each: one first call (compile +
run), then the median of ``--rounds`` timed rounds.

Model and data: the default CIFG-LSTM (``preset("default").model``) with its
real loss; a Poisson-like padded cohort of ``--cohort`` real clients in a
capacity padded as training pads it (mean + 6 std, rounded up to a multiple
of D · client_chunk), each client's rows synthetic (uniform piece ids,
heavy-tailed row counts) laid out by ``client_steps`` like the real pipeline.

On a CPU the D fake devices share the same cores, so the figure is no
forecast for real devices: it mixes the overhead of sharding (the all-to-all
that lays out the cohort, the psum, D programs on the same cores) with any
cores one device leaves idle (a per-client loop of small matmuls runs mostly
on one thread, so 2 fake devices on 2 cores can gain). Real speed-ups need
real devices (a multi-GPU host, or hosts joined with
``jax.distributed.initialize``). The machine is shared: ``--repeat`` cycles
through the device counts several times and reports medians.

Usage::

    .venv/bin/python benchmarks/bench_devices.py                     # D = 1 8, cohort 256, chunk 16, 1 local step
    .venv/bin/python benchmarks/bench_devices.py --devices 1 2 8 --chunks 1 4 16 64 --max-examples 8 16 \
        --cohorts 256 1000 --out benchmarks/results/fl_round_grid.json

Writes ``benchmarks/results/devices.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def child(
    devices: int, cohort: int, rounds: int, client_chunk: int | None, seed: int, max_examples: int | None = None
) -> dict:
    """Runs in the subprocess: builds and times the round on ``devices`` devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from keyboard_fl.config import preset
    from keyboard_fl.fl import AggregatorConfig, CohortBatch, build_round, cohort_capacity, make_server_optimizer
    from keyboard_fl.fl.sharding import capacity_multiple, client_mesh, shard_cohort
    from keyboard_fl.models import init_params, make_loss_fn, param_count
    from keyboard_fl.train.examples import as_batch, client_steps

    cfg = preset("default")
    fed, mcfg = cfg.federated, cfg.model
    if max_examples:
        fed = dataclasses.replace(fed, max_examples=max_examples)
    chunk = fed.client_chunk if client_chunk is None else client_chunk
    mesh = client_mesh(devices)
    population = 20 * cohort
    capacity = cohort_capacity(population, cohort / population, multiple=capacity_multiple(devices, chunk))

    rng = np.random.default_rng(seed)
    steps = fed.local_epochs * -(-fed.max_examples // fed.batch_size)
    out = np.zeros((capacity, steps, fed.batch_size, cfg.seq_len + 1), np.int32)
    for k in range(cohort):
        n = int(np.clip(np.round(rng.lognormal(np.log(16), 1.0)), 1, 4 * fed.max_examples))
        rows = rng.integers(4, mcfg.vocab_size, size=(n, cfg.seq_len + 1)).astype(np.int32)
        out[k] = client_steps(
            rows, batch_size=fed.batch_size, max_examples=fed.max_examples, epochs=fed.local_epochs, rng=rng
        )
    b = as_batch(out)
    batch = CohortBatch(
        jnp.asarray(b["inputs"]),
        jnp.asarray(b["targets"]),
        jnp.asarray(b["weights"]),
        jnp.asarray(np.arange(capacity) < cohort),
    )

    graphdef, params = init_params(mcfg, jax.random.key(seed))
    server_opt = make_server_optimizer(fed.server_optimizer, fed.server_lr)
    agg = AggregatorConfig("dp-fedavg", clip_norm=fed.clip_norm, noise_multiplier=1.0, expected_cohort=float(cohort))
    fl_round = build_round(make_loss_fn(graphdef), fed.client_lr, server_opt, agg, client_chunk=chunk, mesh=mesh)
    fn, state = fl_round.apply, fl_round.init(params)
    if mesh.size > 1:
        batch = shard_cohort(batch, mesh)

    t0 = time.perf_counter()
    state, m = fn(state, batch, jax.random.key(0))
    jax.block_until_ready((state, m))
    first = time.perf_counter() - t0
    times, cpu = [], []
    for r in range(1, rounds + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        state, m = fn(state, batch, jax.random.key(r))
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = statistics.median(times)
    return {
        "devices": devices,
        "visible_devices": jax.device_count(),
        "mesh": str(mesh.devices.tolist()),
        "params_on_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
        "cohort": cohort,
        "capacity": capacity,
        "client_chunk": chunk,
        "num_params": param_count(params),
        "first_call_s": round(first, 3),
        "sec_per_round": round(sec, 4),
        "min_sec_per_round": round(min(times), 4),
        "times_s": [round(t, 4) for t in times],
        "cpu_s_per_round": round(statistics.median(cpu), 4),
        "client_updates_per_s": round(cohort / sec, 2),
        "train_loss": float(m.train_loss),
        "backend": jax.default_backend(),
        "max_examples": fed.max_examples,
        "batch": fed.batch_size,
        "local_steps": steps,
    }


def _machine() -> dict:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "os_cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def grid_child(a) -> None:
    """One process: every (local steps, cohort, chunk, devices) of the grid, a RESULT line each.

    The device counts are meshes over the first D of the process's host
    devices, measured one after the other for each configuration (side by side)."""
    for me in a.max_examples:
        for k in a.cohorts:
            for c in a.chunks:
                for d in a.devices:
                    row = child(d, k, a.rounds, c, a.seed, me)
                    print("RESULT" + json.dumps(row), flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--cohorts", type=int, nargs="+", default=[256], help="real clients per round")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16], help="client_chunk values")
    ap.add_argument(
        "--max-examples",
        type=int,
        nargs="+",
        default=[8],
        help="rows per client (batch 8: 8 = one local step, 16 = two)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after the first call")
    ap.add_argument("--real-devices", action="store_true", help="use the visible accelerators, no fake CPU devices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="passes over the whole grid (a shared machine's load drifts); medians reported",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="per pass, seconds")
    ap.add_argument("--out", type=Path, default=RESULTS / "devices.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        grid_child(a)
        return {}

    load_start = list(os.getloadavg())
    runs = []
    for _ in range(a.repeat):
        env = dict(os.environ)
        if not a.real_devices:
            env["XLA_FLAGS"] = (
                env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(a.devices)}"
            ).strip()
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--rounds",
            str(a.rounds),
            "--seed",
            str(a.seed),
            "--devices",
            *map(str, a.devices),
            "--cohorts",
            *map(str, a.cohorts),
            "--chunks",
            *map(str, a.chunks),
            "--max-examples",
            *map(str, a.max_examples),
        ]
        t_end = time.monotonic() + a.timeout
        with subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:  # as each configuration finishes
                if not line.startswith("RESULT"):
                    continue
                row = json.loads(line[6:])
                row["load_average_after"] = list(os.getloadavg())
                runs.append(row)
                print(
                    f"devices {row['devices']} steps {row['local_steps']} cohort {row['cohort']:5d} "
                    f"chunk {row['client_chunk']:3d}: {row['sec_per_round']:8.3f} s/round "
                    f"{row['client_updates_per_s']:8.1f} clients/s (capacity {row['capacity']}, "
                    f"first call {row['first_call_s']:.1f} s, load {row['load_average_after'][0]:.1f})",
                    flush=True,
                )
                if time.monotonic() > t_end:
                    proc.terminate()
                    break
    if not runs:
        sys.exit("no configuration finished")
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["local_steps"], r["cohort"], r["client_chunk"], r["devices"]), []).append(r)
    rows = [
        {
            "local_steps": s,
            "cohort": k,
            "client_chunk": c,
            "devices": d,
            "sec_per_round": round(statistics.median(r["sec_per_round"] for r in g), 4),
            "client_updates_per_s": round(k / statistics.median(r["sec_per_round"] for r in g), 2),
            "per_pass_sec_per_round": [r["sec_per_round"] for r in g],
            "cpu_s_per_round": round(statistics.median(r["cpu_s_per_round"] for r in g), 4),
            "first_call_s": round(statistics.median(r["first_call_s"] for r in g), 2),
            "capacity": g[0]["capacity"],
        }
        for (s, k, c, d), g in sorted(groups.items())
    ]
    best = {}
    for r in rows:
        key = f"steps={r['local_steps']}/cohort={r['cohort']}"
        if key not in best or r["client_updates_per_s"] > best[key]["client_updates_per_s"]:
            best[key] = {k: r[k] for k in ("devices", "client_chunk", "client_updates_per_s", "sec_per_round")}
    report = {
        "what": (
            "DP-FedAvg round of the default CIFG-LSTM (V 2048, batch 8) against devices the cohort is sharded "
            "over, client_chunk, local steps and cohort"
        ),
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [".venv/bin/python", "benchmarks/bench_devices.py"] + (argv if argv is not None else sys.argv[1:])
        ),
        "devices_kind": "real accelerators"
        if a.real_devices
        else "fake CPU devices (--xla_force_host_platform_device_count)",
        "note": (
            "Fake CPU devices share the same cores. The machine is shared with other sessions: compare rows "
            "measured side by side, not absolute times."
        ),
        "timing": (
            "first_call_s = compile + one round; sec_per_round = median wall time of the timed rounds after it; "
            "cpu_s_per_round = process CPU time (all threads) per round"
        ),
        "machine": _machine(),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "num_params": runs[0]["num_params"],
        "best": best,
        "summary": rows,
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(best, indent=1))
    print(f"wrote {a.out}")
    return report


if __name__ == "__main__":
    main()
