"""DP rounds over a streamed population of 1,000,000 users against 10,000: memory, start-up, speed.

Each configuration runs in its own subprocess (so peak RSS is its own) and
goes through the real path: ``train.rundata.prepare`` (evaluation sets, the
streamed training split) then ``train.federated.train_federated`` (Poisson
sampling, fault draw, cohort gathering on the prefetch thread, the jitted
DP-FedAvg round). Recorded per run:

* ``peak_rss_mib``: ``resource.getrusage`` high-water mark of the process;
* ``time_to_first_round_s``: from the start of the process (imports included)
  to the end of round 1 (the round's compile included);
* ``sec_per_round``: median wall time of rounds 2..R;
* ``gen_ms_per_user``: making one user (simulate, then tokenize and pack), and
  ``simulate_ms_per_user`` for the simulator alone, over 200 random users.

The tokenizer is trained once (on the 10,000-user population's public split)
and copied into every run, so runs differ only in N and in prefetching.

    python benchmarks/bench_population.py                # 1M and 10k, with and without prefetch
    python benchmarks/bench_population.py --rounds 4 --cohort 128 --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_PROCESS = (
    time.perf_counter()
)  # before the heavy imports (jax, keyboard_fl: in the child): time to first round counts them

RESULTS = Path(__file__).resolve().parent / "results"


def config(users: int, cohort: int, rounds: int):
    from keyboard_fl.config import preset

    cfg = preset("default", mode="dp-fedavg")
    return dataclasses.replace(
        cfg,
        population=dataclasses.replace(cfg.population, num_train_users=users),
        pretrain=dataclasses.replace(cfg.pretrain, steps=0),
        federated=dataclasses.replace(
            cfg.federated,
            rounds=rounds,
            clients_per_round=float(cohort),
            noise_multiplier=1.0,
            target_epsilon=None,
            checkpoint_every=10**6,
        ),
    )


def child(users: int, cohort: int, rounds: int, prefetch: bool, tokenizer: str, out: Path) -> dict:
    """One run in this process; returns its measurements."""
    import jax
    import numpy as np

    from keyboard_fl.models import init_params, make_loss_fn
    from keyboard_fl.train.federated import resolve_dp, train_federated
    from keyboard_fl.train.rundata import prepare

    cfg = config(users, cohort, rounds)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer, out / "tokenizer.model")
    t_prepare = time.perf_counter()
    tok, data = prepare(cfg, out, log=lambda s: None)
    prepare_s = time.perf_counter() - t_prepare
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, params = init_params(model_cfg, jax.random.key(cfg.seed))
    dp = resolve_dp(cfg.federated, data.num_train_users, True)
    ends, cohorts = [], []

    def on_round(r, record, p, ledger):
        ends.append(time.perf_counter())
        cohorts.append(record["sampled_clients"])

    train_federated(
        make_loss_fn(graphdef),
        params,
        data.rows,
        cfg.federated,
        dp,
        private=True,
        seed=cfg.seed,
        ckpt_dir=out / "ckpt",
        resume=False,
        on_round=on_round,
        prefetch=prefetch,
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    sample = rng.integers(0, users, 200)
    t = time.perf_counter()
    for i in sample:
        data.rows.users.user(int(i))
    sim = (time.perf_counter() - t) / len(sample)
    t = time.perf_counter()
    for i in sample:
        data.rows.user(int(i))
    gen = (time.perf_counter() - t) / len(sample)
    per_round = [b - a for a, b in itertools.pairwise(ends)]
    return {
        "users": users,
        "prefetch": prefetch,
        "expected_cohort": cohort,
        "rounds": rounds,
        "mean_sampled_clients": float(np.mean(cohorts)),
        "peak_rss_mib": peak_kib / 1024,
        "time_to_first_round_s": ends[0] - T_PROCESS,
        "prepare_s": prepare_s,
        "sec_per_round": statistics.median(per_round),
        "sec_per_round_all": per_round,
        "gen_ms_per_user": gen * 1e3,
        "simulate_ms_per_user": sim * 1e3,
        "gen_s_per_round": gen * float(np.mean(cohorts)),
        "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "noise_multiplier": dp.noise_multiplier,
    }


def _shared_tokenizer(cohort: int, rounds: int, work: Path) -> Path:
    from keyboard_fl.data import Population
    from keyboard_fl.tokenizer import train_tokenizer

    cfg = config(10_000, cohort, rounds)
    path = work / "tokenizer.model"
    train_tokenizer((m for u in Population(cfg.population).users("public") for m in u.train), cfg.tokenizer).save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--cohort", type=int, default=256, help="expected cohort q·N (the same for every N)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="with prefetch only")
    ap.add_argument("--out", type=Path, default=RESULTS / "population_scale.json")
    ap.add_argument(
        "--child", nargs=5, metavar=("USERS", "PREFETCH", "TOKENIZER", "OUT", "RESULT"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.child:
        users, pre, tok, out, result = a.child
        m = child(int(users), a.cohort, a.rounds, pre == "1", tok, Path(out))
        Path(result).write_text(json.dumps(m))
        return
    runs = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        tok = _shared_tokenizer(a.cohort, a.rounds, work)
        for pre in [True] if a.quick else [True, False]:
            for n in a.users:
                res = work / f"{n}-{int(pre)}.json"
                cmd = [
                    sys.executable,
                    __file__,
                    "--cohort",
                    str(a.cohort),
                    "--rounds",
                    str(a.rounds),
                    "--child",
                    str(n),
                    str(int(pre)),
                    str(tok),
                    str(work / f"run-{n}-{int(pre)}"),
                    str(res),
                ]
                subprocess.run(cmd, check=True)
                runs.append(json.loads(res.read_text()))
                r = runs[-1]
                print(
                    f"N={n:>9,} prefetch={pre!s:5}: peak RSS {r['peak_rss_mib']:7.1f} MiB, first round at "
                    f"{r['time_to_first_round_s']:6.1f} s, {r['sec_per_round']:.2f} s/round, "
                    f"{r['gen_ms_per_user']:.2f} ms/user made",
                    flush=True,
                )
    by = {(r["users"], r["prefetch"]): r for r in runs}
    lo, hi = min(a.users), max(a.users)
    summary = {
        "rss_ratio_large_over_small": by[hi, True]["peak_rss_mib"] / by[lo, True]["peak_rss_mib"],
        "first_round_ratio_large_over_small": by[hi, True]["time_to_first_round_s"]
        / by[lo, True]["time_to_first_round_s"],
    }
    if not a.quick:
        summary["sec_per_round_without_over_with_prefetch"] = {
            str(n): by[n, False]["sec_per_round"] / by[n, True]["sec_per_round"] for n in a.users
        }
    result = {
        "benchmark": "population_scale",
        "command": " ".join(["python", "benchmarks/bench_population.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "summary": summary,
        "runs": runs,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
