"""On-device personalization against each global model, on training users' later messages (issue 22).

For the main job's global models (public-only start, FedAvg, DP-FedAvg; central
with ``--models``): the first ``--users`` training users with held-out
messages, each personalised with their own earlier messages only
(:mod:`keyboard_fl.personal.evaluate`): top-1 / top-3 / KSR of the global strip
and of the personalized ones, the per-user spread of the top-1 gain, and the
accuracy on the user's personal-entity words.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_personal.py [--run runs/main] [--users 200] [--ksr-messages 40]

Writes ``benchmarks/results/personalization.json`` and the README tables
``benchmarks/results/personalization.md``: each model's strips, then which
model personalization helps most (:mod:`keyboard_fl.personal.compare`: the
difference of two models' top-1 gains over the same users, with a paired
bootstrap interval over users).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs/main")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--ksr-messages", type=int, default=40)
    ap.add_argument("--models", default="public-only,fedavg,dp-fedavg")
    ap.add_argument("--prior-users", type=float, default=1.0, help="λ shrinkage (0: each user alone)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/personalization.json")
    a = ap.parse_args()
    from keyboard_fl.personal.compare import comparison_table
    from keyboard_fl.personal.evaluate import PersonalEvalConfig
    from keyboard_fl.personal.report import markdown_table, personalization_report

    t = time.perf_counter()
    cfg = PersonalEvalConfig(users=a.users, ksr_messages=a.ksr_messages, prior_users=a.prior_users)
    report = None
    for name in a.models.split(","):  # one model at a time: the file holds every model finished so far
        part = personalization_report(a.run, cfg, (name,), log=lambda s: print(s, flush=True))
        if report is None:
            report = part
        else:
            report["results"].update(part["results"])
        report["command"] = (
            f"nice -n 10 .venv/bin/python benchmarks/bench_personal.py --run {a.run} --users {a.users} "
            f"--ksr-messages {a.ksr_messages} --models {a.models} --prior-users {a.prior_users:g}"
        )
        report["wall_seconds"] = time.perf_counter() - t
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        table = markdown_table(report)
        if len(report["results"]) > 1:
            table += "\n" + comparison_table(report)
        a.out.with_suffix(".md").write_text(table)
        print(table, flush=True)


if __name__ == "__main__":
    main()
