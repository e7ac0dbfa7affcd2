"""The privacy–utility table: full-size private runs at ε ∈ {0.5, 1, 2, 4, 8} for each mechanism.

Each run is the main job's private run (``default`` preset: N = 1,000,000 streamed
users, about 1,000 a round, 40 rounds, the same public pretraining and the audit's
three canary users) with only the
mechanism and the target ε changed; the FedAvg run and the public-only start give
the non-private lines. Runs are resumable: a finished run directory is read back,
an unfinished one resumes from its checkpoint, and the JSON is rewritten after
every run, so the sweep can be stopped and continued.

    .venv/bin/python benchmarks/privacy_utility.py                  # DP-FedAvg and BandMF at every ε (BLT: --mechanisms dp-ftrl-blt)
    .venv/bin/python benchmarks/privacy_utility.py --mechanisms dp-fedavg --epsilons 2

Writes ``benchmarks/results/privacy_utility.json`` and ``privacy_utility.png``;
notebook 03 and the README's privacy–utility table read the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

from keyboard_fl import runs as run_dirs
from keyboard_fl.config import PopulationConfig, RunConfig, preset
from keyboard_fl.notebook_plots import plot_privacy_utility
from keyboard_fl.privacy.canaries import CanaryConfig
from keyboard_fl.runs import CENTRAL, DP_FEDAVG, FEDAVG
from keyboard_fl.train.run import init_model, pretrain_step, run, start_run, write_json
from keyboard_fl.train.rundata import prepare

# The mechanisms of the sweep and the config fields that select them (FederatedConfig).
MECHANISMS = {
    "dp-fedavg": dict(mechanism="dp-fedavg", sampling="poisson"),
    # Amplified BandMF (Choquette-Choo et al. 2023): users in 10 bands, round t samples band t mod 10.
    "dp-ftrl-bandmf": dict(mechanism="dp-ftrl-bandmf", sampling="cyclic", bands=10),
    # BLT-DP-FTRL (McMahan, Xu, Zhang 2024): every user of band t mod 10 takes part (q_b = 1).
    "dp-ftrl-blt": dict(mechanism="dp-ftrl-blt", sampling="cyclic", bands=10),
}
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
RESULTS = Path("benchmarks/results/privacy_utility.json")

# Figures kept from each run's metrics.json (the privacy ones make ε reproducible from the JSON alone).
KEYS = ("top1", "top3", "ksr", "perplexity", "epsilon", "delta", "noise_multiplier", "rounds", "population")


def run_config(base: RunConfig, mechanism: str | None, epsilon: float | None) -> RunConfig:
    """The main job's config with the mechanism and target ε of one cell (None: the FedAvg line)."""
    if mechanism is None:
        return dataclasses.replace(base, mode=FEDAVG)
    fed = dataclasses.replace(base.federated, target_epsilon=epsilon, noise_multiplier=None, **MECHANISMS[mechanism])
    return dataclasses.replace(base, mode=DP_FEDAVG, federated=fed)


def _log(s: str) -> None:
    print(f"  {s}", flush=True)


def run_once(cfg: RunConfig, out: Path) -> dict:
    """Summary of the run in ``out``: read back when finished, resumed when a checkpoint exists, else trained."""
    if run_dirs.is_finished(out):
        saved = RunConfig.load(out / run_dirs.CONFIG_FILE)
        if saved != cfg:
            raise ValueError(f"{out} holds a run of another configuration; move it away or choose another --out")
        m = run_dirs.load_metrics(out)
    else:
        m = run(cfg, out, resume=(out / run_dirs.CONFIG_FILE).exists(), log=_log)
    return summary(m, run_dirs.load_history(out))


def public_only(cfg: RunConfig, out: Path) -> dict:
    """The public-pretrained start every run shares, evaluated on the same held-out users (cached in ``out``)."""
    path = out / "public_only.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = dataclasses.replace(cfg, mode=CENTRAL)
    start_run(cfg, out, resume=True, log=_log)
    tokenizer, data = prepare(cfg, out, _log)
    _, q = pretrain_step(cfg, out, tokenizer, data, init_model(cfg, tokenizer, _log), _log, lambda *a: None)
    write_json(path, q)
    return q


def summary(m: dict, history: list[dict]) -> dict:
    """One cell of the table: quality, privacy, the quick-eval curve and the mechanism's own record."""
    row = {k: m.get(k) for k in KEYS}
    row.update(
        seconds=m.get("seconds"),
        mechanism=m.get("mechanism"),
        accountant=m.get("accountant"),
        sampling=m.get("sampling"),
        curve=[
            {"round": h["round"], "top1": h["eval_top1"], "perplexity": h.get("eval_perplexity")}
            for h in history
            if "eval_top1" in h
        ],
    )
    return row


def plot(results: dict, path: Path) -> None:
    """The figure notebook 03 shows, written beside the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_privacy_utility(results)
    fig.suptitle("Privacy against utility: N = 1M users, ~1,000 a round, 40 rounds (held-out users)", y=1.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def markdown(results: dict) -> str:
    """The README's privacy–utility table (the same rows as notebook 03)."""
    from keyboard_fl.notebook_utils import PRIVACY_UTILITY_HEADERS, markdown_table, privacy_utility_rows

    return markdown_table(PRIVACY_UTILITY_HEADERS, privacy_utility_rows(results)) + "\n"


def write(results: dict, path: Path) -> None:
    """The JSON, its figure and its Markdown table, side by side."""
    write_json(path, results)
    plot(results, path.with_suffix(".png"))
    path.with_suffix(".md").write_text(markdown(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mechanisms", default="dp-fedavg,dp-ftrl-bandmf", help=f"comma list of {', '.join(MECHANISMS)}")
    ap.add_argument("--epsilons", default=",".join(str(e) for e in EPSILONS))
    ap.add_argument("--users", type=int, default=None, help="training users N (default: the preset's 1,000,000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default: the preset's)")
    ap.add_argument("--out", type=Path, default=Path("runs/privacy_utility"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    # The main job's configuration as its finished cells here were trained: the preset plus the audit's 3
    # canary users. Deliberately without the empirical-ε audit the main job now adds (`keyboard-fl main`'s
    # _with_main_empirical: phrase canaries and canary clients, not part of any preset): those change the
    # training data and the rounds' sums, so main-job runs trained since then are no longer cells of this table.
    base = dataclasses.replace(preset("default"), canaries=CanaryConfig(seed=0))
    if args.users:
        base = dataclasses.replace(base, population=PopulationConfig(seed=base.seed, num_train_users=args.users))
    if args.rounds:
        base = dataclasses.replace(base, federated=dataclasses.replace(base.federated, rounds=args.rounds))
    results = args.results
    data = json.loads(results.read_text()) if results.exists() else {}
    data.update(
        command="python benchmarks/privacy_utility.py " + " ".join(os.sys.argv[1:]),
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        config=base.to_dict(),
    )
    data.setdefault("private", {})
    t0 = time.perf_counter()
    data["public_only"] = public_only(base, args.out / "public_only")
    data["fedavg"] = run_once(run_config(base, None, None), args.out / "fedavg")
    for mech in args.mechanisms.split(","):
        for eps in (float(e) for e in args.epsilons.split(",")):
            print(f"{mech} ε={eps}", flush=True)
            cell = run_once(run_config(base, mech, eps), args.out / f"{mech}_eps{eps:g}")
            data["private"].setdefault(mech, {})[f"{eps:g}"] = cell
            data["load_average"] = os.getloadavg()
            write(data, results)
    data["sweep_seconds"] = time.perf_counter() - t0
    write(data, results)
    print(f"wrote {results} and {results.with_suffix('.png')}")


if __name__ == "__main__":
    main()
