"""Round throughput: keyboard_fl vs this machine's matmul peak and vs TFF 0.87.

One command measures, on one task (the shapes of the TFF reference run:
each client ``--seqs`` = 64 sequences of ``--seq-len`` = 20 tokens, batch 16,
one local epoch, so S×B×T = 4×16×20 per client; DP-FedAvg with clip 0.5,
noise multiplier 1.0, client SGD lr 1.0, server Adam lr 0.005):

* **ours**: keyboard_fl's real ``build_round`` (dp-fedavg mode, the preset's
  ``client_chunk``) at cohorts 16/64/256, via ``bench_fl_round.bench_vmap``;
  seconds per round (median of the rounds after the first), client updates/s,
  tokens/s, achieved matmul FLOP/s, time to the first round (compile + one
  round) and the worker process's peak RSS (``ru_maxrss``). Each
  measurement runs in its own process, so peaks are per configuration;
  The round runs as a real run does: its cohort sharded over the package's
  fixed number of host devices (:mod:`keyboard_fl.hostdevices`);
* **ours, one device** (``onedevice``): the same round on one XLA device, the
  default before every core was used (``--no-onedevice`` skips it);
* **ours, sharded** (``--host-devices N ...``): the round sharded over N host
  devices instead (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` in
  the worker);
* **python loop**: the same round written as a per-client Python loop
  (``bench_fl_round.bench_loop``: jitted ``client_update`` per client,
  jitted clip-and-add, jitted noise + server step);
* **tff**: ``benchmarks/tff/tff_round.py`` in the TFF venv
  (``benchmarks/tff/setup.sh``): the same CIFG-LSTM written in Keras (same
  parameters and FLOPs), ``build_unweighted_fed_avg`` with
  ``DifferentiallyPrivateFactory.gaussian_fixed``; run right after ours for
  the same model and cohort (interleaved, so both see similar load);
* **pfl**: ``benchmarks/pfl/pfl_round.py`` in the pfl venv
  (``benchmarks/pfl/setup.sh``): pfl-research 0.6 (arXiv 2404.06430) with its
  PyTorch backend, the same CIFG-LSTM in PyTorch (same parameters and FLOPs),
  ``FederatedAveraging`` with ``CentrallyAppliedPrivacyMechanism(GaussianMechanism(C, z))``;
  run right after TFF for the same model and cohort (interleaved);
* **peak**: float32 matmul peak of this machine (jitted ``jnp.matmul`` of
  square matrices, best of several; numpy's too), at the start and the end;
* **memory**: 500 rounds of a small configuration (the ``tiny`` preset model,
  a fresh random cohort each round), RSS every 10 rounds; flat means the
  largest RSS after round 50 is within 5% of the RSS at round 50.

FLOPs (matmuls only, 2 per multiply-add) per token, CIFG-LSTM with
vocabulary V, embedding E, H units: forward ``F = 2(E·3H + E·3H + H·E + E·V)``
(input gates, recurrent gates from the projected state, projection, tied
softmax); training ≈ 3F (the backward pass does two matmuls per forward one).
A round trains on ``K·S·B·T`` tokens, so it does ``3F·K·S·B·T`` FLOPs;
gathers, elementwise gates, softmax, clipping, noise and the optimizer are
not counted (they are O(params·K), small next to this).

Usage::

    .venv/bin/python benchmarks/bench_throughput.py                 # everything (~45 min idle, TFF dominates)
    .venv/bin/python benchmarks/bench_throughput.py --quick         # default model, cohorts 16 64, few rounds
    .venv/bin/python benchmarks/bench_throughput.py --models so --cohorts 64 --no-memory
    .venv/bin/python benchmarks/bench_throughput.py --no-tff --no-pfl
    .venv/bin/python benchmarks/bench_throughput.py --memory-only   # the 500-round memory run alone
    .venv/bin/python benchmarks/bench_throughput.py --gpu        # on a GPU machine: default model, 1,000 users a round

On a GPU machine, install JAX's CUDA build into the venv first
(``.venv/bin/pip install "jax[cuda12]"``, same jax version); ``--gpu`` then
runs the default model at cohort 1,000 (``--gpu-chunk`` clients per vmap,
one device) and writes ``benchmarks/results/throughput_gpu.json``.

Results are merged into ``benchmarks/results/throughput.json`` (rows keyed
by framework, variant, model and cohort; ``--fresh`` starts over) with
``throughput.png`` (seconds per round vs cohort), and
``memory_500_rounds.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TFF_SCRIPT = HERE / "tff" / "tff_round.py"
PFL_SCRIPT = HERE / "pfl" / "pfl_round.py"
MODELS = {  # name: (vocab V, embedding E, CIFG units H)
    "default": (2048, 64, 256),  # preset("default").model: the on-device model
    "so": (10000, 96, 670),  # Stack Overflow NWP / Gboard sizes
}
TASK = {"seqs": 64, "seq_len": 20, "batch": 16, "epochs": 1}  # per client; the TFF reference run's shapes
CLIP, NOISE_MULTIPLIER, CLIENT_LR, SERVER_LR = 0.5, 1.0, 1.0, 0.005
FIRST_ID = 4  # ids 0..3 are specials


def fwd_flops_per_token(v: int, e: int, h: int) -> int:
    """Forward matmul FLOPs per token of the CIFG-LSTM (see module docstring)."""
    return 2 * (e * 3 * h + e * 3 * h + h * e + e * v)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- workers (main venv, one per process)


def task_rows(seed: int, cohort: int, vocab: int, seqs: int, seq_len: int):
    """[K, seqs, seq_len + 1] Zipf token ids, as tff_round.py draws them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = (rng.zipf(1.2, size=(cohort, seqs, seq_len + 1)) % (vocab - FIRST_ID)) + FIRST_ID
    return rows.astype(np.int32)


def worker_ours(a) -> dict:
    import jax
    import jax.numpy as jnp

    import keyboard_fl  # noqa: F401  (the fixed host device count, before JAX starts)

    sys.path.insert(0, str(HERE))
    from bench_fl_round import bench_loop, bench_vmap

    from keyboard_fl.config import preset
    from keyboard_fl.fl import CohortBatch
    from keyboard_fl.models import ModelConfig, init_params, make_loss_fn, param_count
    from keyboard_fl.train.examples import as_batch

    v, e, h = MODELS[a.model]
    fed = dataclasses.replace(
        preset("default").federated,
        batch_size=TASK["batch"],
        max_examples=TASK["seqs"],
        local_epochs=TASK["epochs"],
        clip_norm=CLIP,
        client_lr=CLIENT_LR,
        server_optimizer="adam",
        server_lr=SERVER_LR,
    )
    if a.chunk:
        fed = dataclasses.replace(fed, client_chunk=a.chunk)
    graphdef, params = init_params(ModelConfig(vocab_size=v, embed_dim=e, hidden_dim=h), jax.random.key(0))
    loss_fn = make_loss_fn(graphdef)
    k = a.cohort
    rows = task_rows(a.seed, k, v, TASK["seqs"], TASK["seq_len"])
    s = TASK["epochs"] * TASK["seqs"] // TASK["batch"]
    b = as_batch(rows.reshape(k, s, TASK["batch"], TASK["seq_len"] + 1))
    cohort = CohortBatch(
        jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]), jnp.asarray(b["weights"]), jnp.ones((k,), bool)
    )
    if a.variant == "loop":
        row = bench_loop(loss_fn, params, cohort, num_real=k, fed=fed, rounds=a.rounds)
    else:
        from keyboard_fl.fl.sharding import client_mesh

        mesh = client_mesh(fed.devices)  # "vmap": the default, the package's fixed host devices
        if a.variant == "onedevice":  # the default before every core was: one device
            mesh = client_mesh(1)
        elif a.variant.startswith("sharded"):  # the cohort axis over N host devices (XLA_FLAGS set by the parent)
            mesh = client_mesh(int(a.variant.removeprefix("sharded")))
        row = bench_vmap(loss_fn, params, cohort, num_real=k, fed=fed, rounds=a.rounds, mesh=mesh)
        row["client_chunk_used"] = fed.client_chunk
        row["devices"] = len(jax.devices())
    tokens = k * s * TASK["batch"] * TASK["seq_len"]
    fpt = fwd_flops_per_token(v, e, h)
    row.update(
        framework="keyboard_fl",
        variant=a.variant,
        model=a.model,
        num_params=param_count(params),
        vocab=v,
        embed=e,
        hidden=h,
        tokens_per_round=tokens,
        fwd_matmul_flops_per_token=fpt,
        train_matmul_flops_per_round=3 * fpt * tokens,
        achieved_flops_per_s=round(3 * fpt * tokens / row["sec_per_round"], 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        jax=jax.__version__,
    )
    return row


def worker_memory(a) -> dict:
    """``a.rounds`` rounds of the tiny preset, fresh cohort each round; RSS every 10 rounds."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import psutil

    from keyboard_fl.config import preset
    from keyboard_fl.fl import AggregatorConfig, CohortBatch, build_round, make_server_optimizer, server_init
    from keyboard_fl.models import init_params, make_loss_fn, param_count

    cfg = preset("tiny")
    fed, m = cfg.federated, cfg.model
    k, s, bsz, t = 16, 2, fed.batch_size, cfg.seq_len
    graphdef, params = init_params(m, jax.random.key(0))
    server_opt = make_server_optimizer(fed.server_optimizer, fed.server_lr)
    agg = AggregatorConfig(
        mode="dp-fedavg", clip_norm=fed.clip_norm, noise_multiplier=NOISE_MULTIPLIER, expected_cohort=float(k)
    )
    round_fn = build_round(make_loss_fn(graphdef), fed.client_lr, server_opt, agg, client_chunk=fed.client_chunk).apply
    state = server_init(params, server_opt)
    rng = np.random.default_rng(0)
    proc = psutil.Process()
    trace, times = [], []
    t_start = time.perf_counter()
    for r in range(1, a.rounds + 1):
        rows = rng.integers(FIRST_ID, m.vocab_size, size=(k, s, bsz, t + 1), dtype=np.int32)
        mask = rng.random(k) < 0.9  # a realized cohort that varies, as Poisson sampling gives
        cohort = CohortBatch(
            jnp.asarray(rows[..., :-1]),
            jnp.asarray(rows[..., 1:]),
            jnp.ones((k, s, bsz, t), jnp.float32),
            jnp.asarray(mask),
        )
        t0 = time.perf_counter()
        state, metrics = round_fn(state, cohort, jax.random.key(r))
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
        if r % 10 == 0:
            trace.append(
                {
                    "round": r,
                    "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                    "loss": round(float(metrics.train_loss), 4),
                }
            )
    at50 = next(x["rss_mb"] for x in trace if x["round"] >= min(50, a.rounds))
    after = [x["rss_mb"] for x in trace if x["round"] >= min(50, a.rounds)]
    growth = (max(after) - at50) / at50
    return {
        "what": f"RSS over {a.rounds} DP-FedAvg rounds of the tiny preset model (fresh random cohort each round)",
        "model": {
            "vocab_size": m.vocab_size,
            "embed_dim": m.embed_dim,
            "hidden_dim": m.hidden_dim,
            "num_params": param_count(params),
        },
        "cohort_capacity": k,
        "steps": s,
        "batch": bsz,
        "seq_len": t,
        "client_chunk": fed.client_chunk,
        "rounds": a.rounds,
        "median_sec_per_round": round(statistics.median(times), 5),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "rss_at_round_50_mb": at50,
        "rss_max_after_round_50_mb": max(after),
        "rss_min_after_round_50_mb": min(after),
        "growth_max_vs_round_50": round(growth, 4),
        "flat_within_5pct": bool(growth <= 0.05),
        "trace": trace,
    }


# ---------------------------------------------------------------- peak


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict:
    """Best float32 GFLOP/s of a jitted square matmul (and numpy's), n×n @ n×n."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    out = {"n": n, "repeats": repeats}
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    y = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(x, y).block_until_ready()
    best = min(_timed(lambda: f(x, y).block_until_ready()) for _ in range(repeats))
    out["jax_gflops"] = round(2 * n**3 / best / 1e9, 2)
    xn, yn = np.asarray(x), np.asarray(y)
    xn @ yn
    best = min(_timed(lambda: xn @ yn) for _ in range(repeats))
    out["numpy_gflops"] = round(2 * n**3 / best / 1e9, 2)
    out["load_average"] = load_avg()
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- orchestration


def run_child(cmd: list[str], marker: str, timeout: float, env=None) -> dict | None:
    """Runs a worker in its own session (its stdout to a file: TFF's worker_binary
    keeps inherited pipes open), then ends what is left of that session by its id."""
    fd, name = tempfile.mkstemp(prefix="bench_throughput_", suffix=".log")
    os.close(fd)
    log = Path(name)
    with open(log, "w") as f:
        p = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  timed out after {timeout:.0f} s: {' '.join(cmd[:4])} …", flush=True)
        finally:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # only the group this call started
            except ProcessLookupError:
                pass
            if p.poll() is None:
                p.kill()
                p.wait()
    text = log.read_text()
    log.unlink()
    for line in text.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1 :])
    print(f"  no result from {' '.join(cmd[:3])}; last output:\n" + "\n".join(text.splitlines()[-15:]), flush=True)
    return None


def host_devices_env(n: int) -> dict:
    """The environment for a worker that sees ``n`` CPU devices (one XLA host device per core, say)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
    return env


def ours_cmd(model, cohort, variant, rounds, chunk=None) -> list[str]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "ours",
        "--model",
        model,
        "--cohort",
        str(cohort),
        "--variant",
        variant,
        "--rounds",
        str(rounds),
    ]
    return cmd + (["--chunk", str(chunk)] if chunk else [])


def tff_cmd(a, model, cohort, rounds, cell) -> list[str]:
    v, e, h = MODELS[model]
    return [
        a.tff_python,
        str(TFF_SCRIPT),
        "--vocab",
        str(v),
        "--embed",
        str(e),
        "--hidden",
        str(h),
        "--cell",
        cell,
        "--cohort",
        str(cohort),
        "--seqs",
        str(TASK["seqs"]),
        "--seq-len",
        str(TASK["seq_len"]),
        "--batch",
        str(TASK["batch"]),
        "--epochs",
        str(TASK["epochs"]),
        "--rounds",
        str(rounds),
        "--clip",
        str(CLIP),
        "--noise-multiplier",
        str(NOISE_MULTIPLIER),
        "--client-lr",
        str(CLIENT_LR),
        "--server-lr",
        str(SERVER_LR),
    ]


def pfl_cmd(a, model, cohort, rounds) -> list[str]:
    v, e, h = MODELS[model]
    args = {
        "vocab": v,
        "embed": e,
        "hidden": h,
        "cohort": cohort,
        "rounds": rounds,
        "clip": CLIP,
        "threads": a.pfl_threads,
    }
    args.update({"seqs": TASK["seqs"], "seq-len": TASK["seq_len"], "batch": TASK["batch"], "epochs": TASK["epochs"]})
    args.update({"noise-multiplier": NOISE_MULTIPLIER, "client-lr": CLIENT_LR, "server-lr": SERVER_LR})
    return [a.pfl_python, str(PFL_SCRIPT)] + [x for k, val in args.items() for x in (f"--{k}", str(val))]


def row_key(r: dict) -> str:
    cell = f"/{r['cell']}" if r.get("framework") == "tff" else ""
    chunk = (
        f"/chunk{r['client_chunk_used']}" if r.get("variant", "").startswith(("vmap", "sharded", "onedevice")) else ""
    )
    return f"{r['framework']}/{r.get('variant', 'fedavg')}{cell}{chunk}/{r['model']}/{r['cohort']}"


def machine_description() -> dict:
    sys.path.insert(0, str(HERE))
    from bench_fl_round import machine_info

    info = machine_info()
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["shared"] = "2 vCPUs shared with other sessions: timings are noisy; ours, TFF and pfl run interleaved"
    return info


def save(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report["rows"] = dict(sorted(report["rows"].items()))
    report["ratios"] = ratios(report)
    path.write_text(json.dumps(report, indent=2))


def run_peak(report: dict) -> float | None:
    """The best matmul peak (jax GFLOP/s) measured in the latest run: the least loaded moment of it."""
    run = report.get("last_run_utc")
    return max((p["jax_gflops"] for p in report.get("peaks", []) if p.get("run") == run), default=None)


def ratios(report: dict) -> dict:
    """TFF s/round ÷ ours (vmap) s/round, and % of matmul peak, per model and cohort.

    Only the rows and peaks of the latest run (``last_run_utc``) take part: a ratio or a
    percentage of the peak is measured side by side in one run, never across machines or days
    (``rows`` keeps the latest measurement of every configuration ever run, for the plot)."""
    run = report.get("last_run_utc")
    rows = [r for r in report["rows"].values() if r.get("run") == run]
    peak = run_peak(report)
    out = {}
    for r in rows:
        if r["framework"] != "keyboard_fl" or r["variant"] == "loop":
            continue
        key = f"{r['model']}/{r['cohort']}"
        if r["variant"] != "vmap":  # the round sharded over host devices: its own columns
            n = r["variant"]
            d = out.setdefault(key, {})
            d[f"ours_{n}_sec_per_round"] = r["sec_per_round"]
            d[f"ours_{n}_gflops"] = round(r["achieved_flops_per_s"] / 1e9, 1)
            d[f"ours_{n}_pct_of_matmul_peak"] = round(100 * r["achieved_flops_per_s"] / 1e9 / peak, 1) if peak else None
            for t in rows:
                if t["framework"] == "tff" and t["model"] == r["model"] and t["cohort"] == r["cohort"]:
                    d[f"tff_{t['cell']}_over_ours_{n}"] = round(t["sec_per_round"] / r["sec_per_round"], 2)
            continue
        d = out.setdefault(key, {})
        d["ours_sec_per_round"] = r["sec_per_round"]
        d["ours_gflops"] = round(r["achieved_flops_per_s"] / 1e9, 1)
        d["ours_pct_of_matmul_peak"] = round(100 * r["achieved_flops_per_s"] / 1e9 / peak, 1) if peak else None
        if r.get("matmul_peak_measured_before_gflops"):
            d["ours_pct_of_peak_measured_just_before"] = round(
                100 * r["achieved_flops_per_s"] / 1e9 / r["matmul_peak_measured_before_gflops"], 1
            )
        for t in rows:
            if t["framework"] == "tff" and t["model"] == r["model"] and t["cohort"] == r["cohort"]:
                d[f"tff_{t['cell']}_sec_per_round"] = t["sec_per_round"]
                d[f"tff_{t['cell']}_over_ours"] = round(t["sec_per_round"] / r["sec_per_round"], 2)
            if t["framework"] == "pfl" and t["model"] == r["model"] and t["cohort"] == r["cohort"]:
                d["pfl_sec_per_round"] = t["sec_per_round"]
                d["pfl_over_ours"] = round(t["sec_per_round"] / r["sec_per_round"], 2)
            if (
                t["framework"] == "keyboard_fl"
                and t["variant"] == "loop"
                and t["model"] == r["model"]
                and t["cohort"] == r["cohort"]
            ):
                d["loop_over_ours"] = round(t["sec_per_round"] / r["sec_per_round"], 2)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list] = {}
    for r in report["rows"].values():
        name = (
            f"TFF 0.87 ({r['cell']})"
            if r["framework"] == "tff"
            else "pfl 0.6 (PyTorch)"
            if r["framework"] == "pfl"
            else "keyboard_fl jit round"
            if r["variant"] == "vmap"
            else "keyboard_fl per-client Python loop"
            if r["variant"] == "loop"
            else "keyboard_fl jit round, one device"
            if r["variant"] == "onedevice"
            else f"keyboard_fl jit round, cohort sharded over {r['variant'].removeprefix('sharded')} CPU devices"
        )
        series.setdefault(f"{r['model']}: {name}", []).append(r)
    colors = {"default": "tab:blue", "so": "tab:red"}
    for label, rs in sorted(series.items()):
        rs.sort(key=lambda r: r["cohort"])
        model = rs[0]["model"]
        style = (
            "^--"
            if "TFF" in label
            else "v--"
            if "pfl" in label
            else ":x"
            if "loop" in label
            else "s-."
            if ("sharded" in label or "one device" in label)
            else "o-"
        )
        ks = [r["cohort"] for r in rs]
        axes[0].plot(ks, [r["sec_per_round"] for r in rs], style, color=colors.get(model), label=label)
        axes[1].plot(ks, [r["tokens_per_s"] for r in rs], style, color=colors.get(model), label=label)
    for ax, ylabel in zip(axes, ["seconds per round (median)", "tokens / s"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("cohort K (clients per round)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    m = report["machine"]
    loads = [r["load_average_before"][0] for r in report["rows"].values() if "load_average_before" in r]
    la = f"load avg (1 min) before runs {min(loads):.1f}–{max(loads):.1f}" if loads else ""
    fig.suptitle(
        "DP-FedAvg round, 64 seq × 20 tokens per client, batch 16, 1 epoch; default = CIFG V2048 E64 H256, "
        f"so = V10k E96 H670\n{m['nproc']} CPU cores ({m['cpu_model'][:40]}), shared; {la}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(mem: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    tr = mem["trace"]
    ax.plot([x["round"] for x in tr], [x["rss_mb"] for x in tr], "o-", ms=2)
    ax.axhline(mem["rss_at_round_50_mb"] * 1.05, color="tab:red", ls=":", label="round-50 RSS + 5%")
    ax.set_xlabel("round")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, mem["rss_max_after_round_50_mb"] * 1.2)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{mem['rounds']} rounds, tiny model: growth after round 50 = {100 * mem['growth_max_vs_round_50']:.2f}%",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure_memory(a, report: dict, rounds: int) -> None:
    """RSS over ``rounds`` rounds in a child process: ``memory_500_rounds.{json,png}`` and ``report["memory"]``."""
    la = load_avg()
    mem = run_child([sys.executable, __file__, "--worker", "memory", "--rounds", str(rounds)], "MEM_RESULT", a.timeout)
    if not mem:
        return
    mem.update(
        load_average_before=la,
        machine=machine_description(),
        when_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    mpath = a.out.with_name("memory_500_rounds.json")
    mpath.write_text(json.dumps(mem, indent=2))
    plot_memory(mem, mpath.with_suffix(".png"))
    print(
        f"memory: RSS {mem['rss_at_round_50_mb']} MB at round 50, max {mem['rss_max_after_round_50_mb']} MB "
        f"after it ({100 * mem['growth_max_vs_round_50']:+.2f}%), flat={mem['flat_within_5pct']}",
        flush=True,
    )
    keys = ("rounds", "rss_at_round_50_mb", "rss_max_after_round_50_mb", "growth_max_vs_round_50", "flat_within_5pct")
    report["memory"] = {k: mem[k] for k in keys}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="default model, cohorts 16 64, 2+1 rounds, 100 memory rounds")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    p.add_argument("--cohorts", type=int, nargs="+", default=None, help="ours (default 16 64 256)")
    p.add_argument("--tff-cohorts", type=int, nargs="*", default=None, help="default: the same as --cohorts")
    p.add_argument("--loop-cohorts", type=int, nargs="*", default=None, help="per-client Python loop (default 16 64)")
    p.add_argument("--rounds", type=int, default=None, help="ours: timed rounds after the first (default 5)")
    p.add_argument("--tff-rounds", type=int, default=None, help="TFF: timed rounds after the first (default 3)")
    p.add_argument(
        "--tff-cell",
        choices=["cifg", "lstm"],
        nargs="+",
        default=["cifg"],
        help="Keras body: cifg = our cell in Keras (exact); lstm = stock LSTM matched in parameters",
    )
    p.add_argument("--no-tff", action="store_true")
    p.add_argument("--no-pfl", action="store_true")
    p.add_argument("--pfl-python", default=os.environ.get("PFL_PYTHON", "/work/pfl-venv/bin/python"))
    p.add_argument("--pfl-cohorts", type=int, nargs="*", default=None, help="default: --tff-cohorts up to 64")
    p.add_argument("--pfl-rounds", type=int, default=None, help="pfl: timed rounds after the first (default 2)")
    p.add_argument(
        "--pfl-threads", type=int, default=0, help="torch threads for pfl (0: torch's default, one per core)"
    )
    p.add_argument("--gpu", action="store_true", help="GPU machine: default model, cohort 1000, ours only")
    p.add_argument("--gpu-chunk", type=int, default=250, help="--gpu: clients per vmap chunk (divides the cohort)")
    p.add_argument("--tff-python", default=os.environ.get("TFF_PYTHON", "/tmp/tff-venv/bin/python"))
    p.add_argument("--chunks", type=int, nargs="*", default=[], help="extra client_chunk values for ours")
    p.add_argument(
        "--host-devices",
        type=int,
        nargs="*",
        default=None,
        help="also run ours with the cohort sharded over N XLA host devices (default: none)",
    )
    p.add_argument("--no-onedevice", action="store_true", help="skip ours on one device (the old default)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory run: keeps --out's rows, peaks and ratios (no new run) and updates its memory",
    )
    p.add_argument("--memory-rounds", type=int, default=None, help="default 500 (100 with --quick)")
    p.add_argument("--timeout", type=float, default=1800, help="per child process, seconds")
    p.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    p.add_argument("--fresh", action="store_true", help="do not merge with the rows already in --out")
    # worker mode (internal)
    p.add_argument("--worker", choices=["ours", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="default", help=argparse.SUPPRESS)
    p.add_argument("--cohort", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="vmap", help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker == "ours":
        print("OURS_RESULT " + json.dumps(worker_ours(a)), flush=True)
        return
    if a.worker == "memory":
        print("MEM_RESULT " + json.dumps(worker_memory(a)), flush=True)
        return

    if a.memory_only:
        report = json.loads(a.out.read_text()) if a.out.exists() else {"rows": {}, "peaks": []}
        measure_memory(a, report, a.memory_rounds or 500)
        save(report, a.out)
        return

    if a.gpu:
        a.models, a.cohorts, a.no_tff, a.no_pfl, a.no_onedevice, a.no_memory = (
            ["default"],
            a.cohorts or [1000],
            1,
            1,
            1,
            1,
        )
        a.loop_cohorts, a.chunks = [], []
        a.out = a.out if a.out != RESULTS / "throughput.json" else RESULTS / "throughput_gpu.json"
    models = a.models or (["default"] if a.quick else ["default", "so"])
    cohorts = a.cohorts or ([16, 64] if a.quick else [16, 64, 256])
    tff_cohorts = cohorts if a.tff_cohorts is None else a.tff_cohorts
    loop_cohorts = a.loop_cohorts if a.loop_cohorts is not None else ([16] if a.quick else [16, 64])
    rounds = a.rounds or (2 if a.quick else 5)
    tff_rounds = a.tff_rounds or (1 if a.quick else 3)
    mem_rounds = a.memory_rounds or (100 if a.quick else 500)
    use_tff = not a.no_tff and bool(tff_cohorts)
    pfl_cohorts = [k for k in tff_cohorts if k <= 64] if a.pfl_cohorts is None else a.pfl_cohorts
    pfl_rounds = a.pfl_rounds or (1 if a.quick else 2)
    use_pfl = not a.no_pfl and bool(pfl_cohorts)
    if use_pfl and not Path(a.pfl_python).exists():
        sys.exit(f"{a.pfl_python} not found: run `bash benchmarks/pfl/setup.sh` first, or pass --no-pfl")
    host_devices = [n for n in (a.host_devices or []) if n > 1]
    if use_tff and not Path(a.tff_python).exists():
        sys.exit(f"{a.tff_python} not found: run `bash benchmarks/tff/setup.sh` first, or pass --no-tff")

    report = {"rows": {}, "peaks": []}
    if a.out.exists() and not a.fresh:
        report = json.loads(a.out.read_text())
    report.update(
        {
            "what": "seconds per DP-FedAvg round: keyboard_fl (jit round, same round sharded over host devices, per-client Python loop) vs TFF 0.87 and pfl 0.6, same task",
            "task": {
                **TASK,
                "steps_per_client": TASK["epochs"] * TASK["seqs"] // TASK["batch"],
                "clip_norm": CLIP,
                "noise_multiplier": NOISE_MULTIPLIER,
                "client_opt": f"sgd lr {CLIENT_LR}",
                "server_opt": f"adam lr {SERVER_LR} b2 0.99 eps 1e-3",
                "data": "synthetic Zipf token ids, no padding",
            },
            "models": {
                k: {"vocab": v, "embed": e, "hidden": h, "fwd_matmul_flops_per_token": fwd_flops_per_token(v, e, h)}
                for k, (v, e, h) in MODELS.items()
            },
            "flops": "matmul only: forward F = 2(E·3H + E·3H + H·E + E·V) per token; training 3F; round = 3F·K·S·B·T",
            "timing": "first_round_s = compile + one round; sec_per_round = median of the timed rounds after it",
            "machine": machine_description(),
            "last_command": " ".join([os.path.relpath(sys.executable, HERE.parent)] + sys.argv),
            "last_run_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    report.setdefault("rows", {})
    report.setdefault("peaks", [])
    report.setdefault(
        "history",
        [
            {"key": k, "sec_per_round": r["sec_per_round"], "load_average_before": r.get("load_average_before")}
            for k, r in report["rows"].items()
        ],
    )
    t_start = time.perf_counter()

    def peak(where):
        pk = matmul_peak()
        pk["when"], pk["run"] = where, report["last_run_utc"]
        report["peaks"].append(pk)
        print(
            f"matmul peak ({where}): jax {pk['jax_gflops']} GFLOP/s, numpy {pk['numpy_gflops']} GFLOP/s, "
            f"load {pk['load_average']}",
            flush=True,
        )
        save(report, a.out)

    def record(row, extra=None):
        if row is None:
            return
        row.update(extra or {})
        row["matmul_peak_measured_before_gflops"] = report["peaks"][-1]["jax_gflops"]
        row["run"] = report["last_run_utc"]  # ratios pair rows of one run only
        report["rows"][row_key(row)] = row  # the latest measurement of each configuration
        report.setdefault("history", []).append(
            {
                "key": row_key(row),
                "sec_per_round": row["sec_per_round"],
                "load_average_before": row.get("load_average_before"),
                "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        save(report, a.out)
        plot(report, a.out.with_suffix(".png"))
        pk = run_peak(report)  # the same peak as the saved ratios
        print(
            f"  {row_key(row):40s} {row['sec_per_round']:9.3f} s/round  first {row['first_round_s']:7.2f} s  "
            f"{row['tokens_per_s']:9.0f} tok/s  {row['achieved_flops_per_s'] / 1e9:6.1f} GFLOP/s "
            f"({100 * row['achieved_flops_per_s'] / 1e9 / pk:4.1f}% of peak)  "
            f"peak RSS {row.get('peak_rss_mb', row.get('peak_rss_total_mb'))} MB",
            flush=True,
        )

    peak("start")
    for model in models:
        for k in cohorts:
            peak(f"before {model}/{k}")  # the load changes: a peak beside each measurement
            la = load_avg()
            for chunk in [a.gpu_chunk if a.gpu else None] + list(a.chunks):
                record(
                    run_child(ours_cmd(model, k, "vmap", 3 if k >= 256 else rounds, chunk), "OURS_RESULT", a.timeout),
                    {"load_average_before": la},
                )
            if not a.no_onedevice:
                la = load_avg()
                record(
                    run_child(ours_cmd(model, k, "onedevice", 3 if k >= 256 else rounds), "OURS_RESULT", a.timeout),
                    {"load_average_before": la},
                )
            for n in host_devices:
                la = load_avg()
                record(
                    run_child(
                        ours_cmd(model, k, f"sharded{n}", 3 if k >= 256 else rounds),
                        "OURS_RESULT",
                        a.timeout,
                        env=host_devices_env(n),
                    ),
                    {"load_average_before": la},
                )
            if use_tff and k in tff_cohorts:
                for cell in a.tff_cell:
                    la = load_avg()
                    record(
                        run_child(tff_cmd(a, model, k, tff_rounds, cell), "TFF_RESULT", a.timeout),
                        {"model": model, "load_average_before": la},
                    )
            if use_pfl and k in pfl_cohorts:
                la = load_avg()
                record(
                    run_child(pfl_cmd(a, model, k, pfl_rounds), "PFL_RESULT", a.timeout),
                    {"model": model, "variant": "dp-fedavg", "load_average_before": la},
                )
            if k in loop_cohorts:
                la = load_avg()
                record(run_child(ours_cmd(model, k, "loop", 2), "OURS_RESULT", a.timeout), {"load_average_before": la})
    peak("end")

    if not a.no_memory:
        measure_memory(a, report, mem_rounds)
    report["load_average_end"] = load_avg()
    report["last_run_wall_s"] = round(time.perf_counter() - t_start, 1)
    save(report, a.out)
    plot(report, a.out.with_suffix(".png"))
    print(json.dumps(report["ratios"], indent=1))
    print(f"wrote {a.out}, {a.out.with_suffix('.png')} in {report['last_run_wall_s']} s")


if __name__ == "__main__":
    main()
