"""Seconds per DP-FedAvg round on the real default model (CIFG-LSTM, real loss).

What is timed, for each cohort size K (all slots real, capacity = K):

* ``vmap+jit``: ``build_round`` in DP mode with ``client_chunk`` from
  ``preset("default").federated`` (clients trained a chunk at a time by vmap);
* ``vmap+jit padded``: the same K real clients in a capacity of 1.75·K
  (rounded up to a multiple of the chunk): the padding chunks are skipped,
  so the time should follow K, not the capacity;
* ``vmap+jit chunk=c`` (K=64, c in ``--chunk-sweep``, default 1 and 4): the
  same round with other chunk sizes; chunk 1 is a compiled loop over single
  clients (no vmap), separating "one jitted round" from "vmap batching";
* ``python loop`` (K=16, 64): one jitted ``client_update`` called per client
  from Python, each delta clipped and summed, then noise, divide and the server
  step, all jitted; shows what vmap + one jitted round buys.

Client data: synthetic but shaped like the real pipeline: per user a
heavy-tailed number of rows of ``seq_len + 1`` pieces (Zipf-distributed ids,
messages packed into rows, a partial last row), laid out by
``keyboard_fl.train.examples.client_steps`` into ``[S, B, T]`` with
``S = epochs · ceil(max_examples / B)``, ``B`` and ``T = seq_len`` from the
preset. Zero-weight padding inside a client still costs compute (fixed shapes).

Reported per variant: time to first round (compile + one round), median
seconds per round of the timed rounds after it, client updates/s, real
(weighted) tokens/s and slot tokens/s (K·S·B·T, padding included). Machine
info includes the load average at start and end: the machine is shared.

Usage::

    .venv/bin/python benchmarks/bench_fl_round.py            # full (≤ ~10 min)
    .venv/bin/python benchmarks/bench_fl_round.py --quick    # cohorts 16, 64 only

Writes ``benchmarks/results/fl_round.json`` and ``fl_round.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import keyboard_fl  # noqa: F401  (the fixed host device count, before JAX starts)
from keyboard_fl.config import preset
from keyboard_fl.fl import (
    AggregatorConfig,
    CohortBatch,
    build_round,
    client_update,
    dp_mean_delta,
    make_server_optimizer,
    server_init,
    server_update,
)
from keyboard_fl.fl.sharding import client_mesh
from keyboard_fl.models import init_params, make_loss_fn, param_count
from keyboard_fl.privacy.clipping import clip_update
from keyboard_fl.tokenizer import EOS_ID, PAD_ID
from keyboard_fl.train.examples import as_batch, client_steps

RESULTS = Path(__file__).resolve().parent / "results"
NOISE_MULTIPLIER = 1.0  # cost does not depend on z; a typical value


def synthetic_user_rows(rng: np.random.Generator, vocab: int, seq_len: int, max_examples: int) -> np.ndarray:
    """One user's rows [n, seq_len + 1]: packed messages of Zipf pieces, last row partial."""
    n_rows = int(np.clip(np.round(rng.lognormal(mean=np.log(16), sigma=1.0)), 1, 4 * max_examples))
    n_tokens = (n_rows - 1) * (seq_len + 1) + int(rng.integers(2, seq_len + 2))
    ids = (rng.zipf(1.2, size=n_tokens) % (vocab - EOS_ID - 1)) + EOS_ID + 1
    # Message ends every ~12 pieces.
    ids[rng.random(n_tokens) < 1 / 12] = EOS_ID
    rows = np.full((n_rows, seq_len + 1), PAD_ID, np.int32)
    rows.reshape(-1)[:n_tokens] = ids
    return rows


def synthetic_cohort(
    seed: int, capacity: int, num_real: int, *, vocab: int, seq_len: int, batch: int, max_examples: int, epochs: int
) -> CohortBatch:
    """Padded cohort [capacity, S, B, T]; the first ``num_real`` slots are real (as the sampler lays them out)."""
    rng = np.random.default_rng(seed)
    steps = epochs * -(-max_examples // batch)
    out = np.full((capacity, steps, batch, seq_len + 1), PAD_ID, np.int32)
    for k in range(num_real):
        rows = synthetic_user_rows(rng, vocab, seq_len, max_examples)
        out[k] = client_steps(rows, batch_size=batch, max_examples=max_examples, epochs=epochs, rng=rng)
    b = as_batch(out)
    mask = np.arange(capacity) < num_real
    return CohortBatch(
        jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]), jnp.asarray(b["weights"]), jnp.asarray(mask)
    )


def _time_rounds(step, state, rounds: int):
    """First call (compile + run) then ``rounds`` timed calls; returns (first_s, times, state, metrics)."""
    t0 = time.perf_counter()
    state, m = step(state, 0)
    jax.block_until_ready((state, m))
    first = time.perf_counter() - t0
    times = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        state, m = step(state, r)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    return first, times, state, m


def bench_vmap(
    loss_fn, params, cohort: CohortBatch, *, num_real: int, fed, rounds: int, chunk: int | None = None, mesh=None
) -> dict:
    chunk = fed.client_chunk if chunk is None else chunk
    server_opt = make_server_optimizer(fed.server_optimizer, fed.server_lr)
    agg = AggregatorConfig(
        mode="dp-fedavg", clip_norm=fed.clip_norm, noise_multiplier=NOISE_MULTIPLIER, expected_cohort=float(num_real)
    )
    mesh = client_mesh(fed.devices) if mesh is None else mesh  # the run's default: the package's host devices
    fl_round = build_round(loss_fn, fed.client_lr, server_opt, agg, client_chunk=chunk, mesh=mesh)
    fn, state = fl_round.apply, fl_round.init(params)
    first, times, _, m = _time_rounds(lambda s, r: fn(s, cohort, jax.random.key(r)), state, rounds)
    row = _row(first, times, num_real, cohort, float(m.num_tokens), float(m.train_loss))
    row["client_chunk"] = chunk
    row["nonfinite_clients"] = int(m.nonfinite_clients)
    return row


def bench_loop(loss_fn, params, cohort: CohortBatch, *, num_real: int, fed, rounds: int) -> dict:
    """Per-client Python loop: jit(client_update) per client, jit(clip + add), jitted finish."""
    server_opt = make_server_optimizer(fed.server_optimizer, fed.server_lr)
    client_opt = optax.sgd(fed.client_lr)
    one = jax.jit(functools.partial(client_update, loss_fn=loss_fn, client_opt=client_opt))

    @jax.jit
    def clip_add(acc, delta):
        clipped, _ = clip_update(delta, fed.clip_norm)
        return jax.tree.map(jnp.add, acc, clipped)

    agg = AggregatorConfig(
        mode="dp-fedavg", clip_norm=fed.clip_norm, noise_multiplier=NOISE_MULTIPLIER, expected_cohort=float(num_real)
    )

    @jax.jit
    def finish(state, total, key):  # the jitted round's own server side
        return server_update(state, dp_mean_delta(total, agg, key), server_opt)

    def step(state, r):
        key = jax.random.key(r)
        ckey, nkey = jax.random.split(key)
        keys = jax.random.split(ckey, num_real)
        acc = jax.tree.map(jnp.zeros_like, state.params)
        tokens = 0.0
        for k in range(num_real):
            batches = {"inputs": cohort.inputs[k], "targets": cohort.targets[k], "weights": cohort.weights[k]}
            delta, cm = one(state.params, batches, keys[k])
            acc = clip_add(acc, delta)
            tokens = tokens + cm.num_tokens
        return finish(state, acc, nkey), tokens

    state = server_init(params, server_opt)
    first, times, _, tokens = _time_rounds(step, state, rounds)
    return _row(first, times, num_real, cohort, float(tokens), None)


def _row(first, times, num_real, cohort, tokens, loss) -> dict:
    sec = statistics.median(times) if times else first
    k, s, b, t = cohort.inputs.shape
    return {
        "cohort": num_real,
        "capacity": int(k),
        "first_round_s": round(first, 3),
        "compile_s_est": round(first - sec, 3),
        "sec_per_round": round(sec, 4),
        "round_times_s": [round(x, 4) for x in times],
        "client_updates_per_s": round(num_real / sec, 2),
        "tokens_per_s": round(tokens / sec, 1),
        "slot_tokens_per_s": round(num_real * s * b * t / sec, 1),
        "real_tokens_per_round": tokens,
        "train_loss": loss,
    }


def _exe() -> str:
    """The interpreter, relative to the repo root when it lives there (e.g. .venv/bin/python)."""
    exe, root = Path(sys.executable), Path(__file__).resolve().parent.parent
    return str(exe.relative_to(root)) if exe.is_relative_to(root) else str(exe)


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = os.cpu_count()
    return {
        "nproc": nproc,
        "os_cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "vmap+jit": "o-",
        "vmap+jit padded (capacity≈1.75K)": "s--",
        "python loop": "^:",
        "jit, client_chunk=1": "x",
        "jit, client_chunk=4": "+",
    }
    for name, rows in report["variants"].items():
        if not rows:
            continue
        ks = [r["cohort"] for r in rows]
        label = f"{name} (client_chunk={report['client_chunk']})" if name.startswith("vmap+jit") else name
        axes[0].plot(ks, [r["sec_per_round"] for r in rows], styles.get(name, "o-"), label=label)
        axes[1].plot(ks, [r["client_updates_per_s"] for r in rows], styles.get(name, "o-"), label=name)
    for ax, ylabel in zip(axes, ["seconds per round (median)", "client updates / s"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cohort K (real clients)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    m = report["model"]
    la = report["machine"]
    fig.suptitle(
        f"DP-FedAvg round, CIFG-LSTM V={m['vocab_size']} E={m['embed_dim']} H={m['hidden_dim']} "
        f"({m['num_params'] / 1e6:.2f}M params), S×B×T={m['steps']}×{m['batch']}×{m['seq_len']}, "
        f"chunk {report['client_chunk']}\n{la['nproc']} CPU cores ({la['cpu_model'][:40]}), shared: "
        f"load avg {report['load_average_start'][0]:.1f}→{report['load_average_end'][0]:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="cohorts 16 and 64, 2 timed rounds (~2 min)")
    p.add_argument("--cohorts", type=int, nargs="+", default=None)
    p.add_argument("--loop-cohorts", type=int, nargs="+", default=None)
    p.add_argument("--padded-cohorts", type=int, nargs="+", default=None)
    p.add_argument(
        "--chunk-sweep",
        type=int,
        nargs="*",
        default=None,
        help="extra client_chunk values timed at K=--sweep-cohort (default 1 4; none with --quick)",
    )
    p.add_argument("--sweep-cohort", type=int, default=64)
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds after the first (default 5; 3 for K ≥ 256; 2 with --quick)",
    )
    p.add_argument("--batch", type=int, default=None, help="override preset federated.batch_size")
    p.add_argument("--max-examples", type=int, default=None, help="override preset federated.max_examples")
    p.add_argument("--out", type=Path, default=RESULTS / "fl_round.json")
    p.add_argument("--plot", type=Path, default=None, help="default: the --out path with .png")
    a = p.parse_args(argv)
    cohorts = a.cohorts or ([16, 64] if a.quick else [16, 64, 256])
    loop_cohorts = a.loop_cohorts if a.loop_cohorts is not None else ([16] if a.quick else [16, 64])
    padded_cohorts = a.padded_cohorts if a.padded_cohorts is not None else cohorts
    rounds_for = lambda k: a.rounds if a.rounds is not None else (2 if a.quick else 3 if k >= 256 else 5)  # noqa: E731

    load_start = list(os.getloadavg())
    t_start = time.perf_counter()
    cfg = preset("default")
    fed, mcfg = cfg.federated, cfg.model
    overrides = {k: v for k, v in (("batch_size", a.batch), ("max_examples", a.max_examples)) if v is not None}
    fed = dataclasses.replace(fed, **overrides)
    assert mcfg.vocab_size == cfg.tokenizer.vocab_size, "model vocab follows the tokenizer in the default preset"
    graphdef, params = init_params(mcfg, jax.random.key(cfg.seed))
    loss_fn = make_loss_fn(graphdef)
    steps = fed.local_epochs * -(-fed.max_examples // fed.batch_size)
    data = dict(
        vocab=mcfg.vocab_size,
        seq_len=cfg.seq_len,
        batch=fed.batch_size,
        max_examples=fed.max_examples,
        epochs=fed.local_epochs,
    )
    chunk = fed.client_chunk

    def capacity_padded(k):
        return int(chunk * math.ceil(1.75 * k / chunk))

    chunk_sweep = a.chunk_sweep if a.chunk_sweep is not None else ([] if a.quick else [1, 4])
    variants: dict[str, list] = {"vmap+jit": [], "vmap+jit padded (capacity≈1.75K)": [], "python loop": []}
    for c in chunk_sweep:
        variants[f"jit, client_chunk={c}"] = []
    for k in cohorts:
        cohort = synthetic_cohort(k, k, k, **data)
        row = bench_vmap(loss_fn, params, cohort, num_real=k, fed=fed, rounds=rounds_for(k))
        variants["vmap+jit"].append(row)
        print(
            f"vmap+jit        K={k:4d} cap={row['capacity']:4d}: {row['sec_per_round']:8.3f} s/round "
            f"{row['client_updates_per_s']:7.2f} clients/s {row['tokens_per_s']:9.0f} tok/s "
            f"(first round {row['first_round_s']:.2f} s)",
            flush=True,
        )
        if k in padded_cohorts:
            cap = capacity_padded(k)
            pc = synthetic_cohort(k, cap, k, **data)  # same K real clients, padding after them
            row = bench_vmap(loss_fn, params, pc, num_real=k, fed=fed, rounds=rounds_for(k))
            variants["vmap+jit padded (capacity≈1.75K)"].append(row)
            print(
                f"vmap+jit padded K={k:4d} cap={cap:4d}: {row['sec_per_round']:8.3f} s/round "
                f"(first round {row['first_round_s']:.2f} s)",
                flush=True,
            )
        if k in loop_cohorts:
            row = bench_loop(loss_fn, params, cohort, num_real=k, fed=fed, rounds=min(rounds_for(k), 2))
            variants["python loop"].append(row)
            print(
                f"python loop     K={k:4d}: {row['sec_per_round']:8.3f} s/round "
                f"{row['client_updates_per_s']:7.2f} clients/s (first round {row['first_round_s']:.2f} s)",
                flush=True,
            )
        if k == a.sweep_cohort:
            for c in chunk_sweep:
                row = bench_vmap(loss_fn, params, cohort, num_real=k, fed=fed, rounds=rounds_for(k), chunk=c)
                variants[f"jit, client_chunk={c}"].append(row)
                print(
                    f"jit chunk={c:<3d}   K={k:4d}: {row['sec_per_round']:8.3f} s/round "
                    f"{row['client_updates_per_s']:7.2f} clients/s (first round {row['first_round_s']:.2f} s)",
                    flush=True,
                )

    # Ratios that answer the two questions directly.
    by_k = lambda name: {r["cohort"]: r for r in variants[name]}  # noqa: E731
    vm, pad, loop = by_k("vmap+jit"), by_k("vmap+jit padded (capacity≈1.75K)"), by_k("python loop")
    summary = {
        "padded_over_unpadded_sec_per_round": {
            k: round(pad[k]["sec_per_round"] / vm[k]["sec_per_round"], 3) for k in pad if k in vm
        },
        "loop_over_vmap_sec_per_round": {
            k: round(loop[k]["sec_per_round"] / vm[k]["sec_per_round"], 3) for k in loop if k in vm
        },
        "chunk_sweep_sec_per_round": {
            f"K={r['cohort']} chunk={r['client_chunk']}": r["sec_per_round"]
            for name in variants
            if name.startswith("jit, ") or name == "vmap+jit"
            for r in variants[name]
            if r["cohort"] == a.sweep_cohort
        },
    }
    report = {
        "what": "seconds per DP-FedAvg round, default CIFG-LSTM, real loss, synthetic client rows",
        "when_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([_exe()] + sys.argv),
        "quick": a.quick,
        "preset_overrides": overrides,
        "model": {
            **{k: getattr(mcfg, k) for k in ("kind", "vocab_size", "embed_dim", "hidden_dim")},
            "num_params": param_count(params),
            "steps": steps,
            "batch": fed.batch_size,
            "seq_len": cfg.seq_len,
        },
        "dp": {
            "mode": "dp-fedavg",
            "clip_norm": fed.clip_norm,
            "noise_multiplier": NOISE_MULTIPLIER,
            "expected_cohort": "= K (real clients)",
            "client_lr": fed.client_lr,
            "server": f"{fed.server_optimizer} lr {fed.server_lr}",
        },
        "client_chunk": chunk,
        "timing": "first_round_s = compile + one round; sec_per_round = median of the timed rounds after it",
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
        "summary": summary,
        "variants": variants,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    png = a.plot or a.out.with_suffix(".png")
    plot(report, png)
    print(json.dumps(summary))
    print(f"wrote {a.out} and {png} in {report['total_wall_s']} s")


if __name__ == "__main__":
    main()
