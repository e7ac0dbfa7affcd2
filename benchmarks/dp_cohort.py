"""What the cohort size buys DP-FedAvg: FedAvg vs DP-FedAvg at a larger cohort.

A long run (about 15 minutes per mode on 2 CPU cores), not a test. It uses the
``default`` preset with a larger population and cohort, and writes
``benchmarks/results/dp_cohort.json``:

    .venv/bin/python benchmarks/dp_cohort.py --users 50000 --cohort 500 --rounds 120
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

from keyboard_fl.config import PopulationConfig, preset
from keyboard_fl.train.run import run, write_json

KEYS = (
    "top1",
    "top3",
    "ngram_top1",
    "ksr",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sampling_prob",
    "rounds",
    "population",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50_000, help="training users N")
    ap.add_argument("--cohort", type=float, default=500, help="expected users per round q·N")
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("runs/dp_cohort"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/dp_cohort.json"))
    args = ap.parse_args()
    results = {}
    for mode in ("fedavg", "dp-fedavg"):
        cfg = preset("default", mode=mode)
        cfg = dataclasses.replace(
            cfg,
            population=PopulationConfig(seed=cfg.seed, num_train_users=args.users),
            federated=dataclasses.replace(
                cfg.federated,
                rounds=args.rounds,
                clients_per_round=args.cohort,
                target_epsilon=args.epsilon,
                eval_every=40,
                checkpoint_every=40,
            ),
        )
        t = time.perf_counter()
        m = run(cfg, args.out / mode, resume=(args.out / mode / "config.json").exists())
        results[mode] = {k: m.get(k) for k in KEYS} | {"seconds": time.perf_counter() - t}
    results["dp_over_fedavg_top1"] = results["dp-fedavg"]["top1"] / results["fedavg"]["top1"]
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_end": os.getloadavg()}
    results["command"] = f"benchmarks/dp_cohort.py --users {args.users} --cohort {args.cohort} --rounds {args.rounds}"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.results, results)  # ε = inf is written as "inf" (strict JSON)
    print(args.results.read_text())


if __name__ == "__main__":
    main()
