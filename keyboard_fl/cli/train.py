"""Training commands: ``train`` one model, ``main`` (the README job) and ``config``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from keyboard_fl import runs as run_dirs
from keyboard_fl.cli.common import (
    CONFIG_OPTION,
    CORPUS_OPTION,
    MAIN_DIR,
    PRESET_OPTION,
    PUBLIC_CORPUS_OPTION,
    SET_OPTION,
    SKIP_BAD_LINES_OPTION,
    USERS_OPTION,
    _audit_table,
    _config,
    _empirical_audits,
    _fail,
    _guard,
    _log,
    _preset_for,
    _trained_with,
    _with_data,
    app,
    console,
)
from keyboard_fl.runs import CENTRAL, DP_FEDAVG, MODES
from keyboard_fl.tables import ProgressBars, empirical_table, results_table


@app.command()
@_guard
def train(
    out: Path = typer.Option(..., "--out", help="run directory"),
    mode: str = typer.Option(DP_FEDAVG, help=", ".join(MODES)),
    preset: Optional[str] = PRESET_OPTION,
    seed: int = typer.Option(0, help="the one seed (population, init, sampling, noise)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    rounds: Optional[int] = typer.Option(None, help="override the preset's federated rounds"),
    target_epsilon: Optional[float] = typer.Option(
        None, "--target-epsilon", help="calibrate the noise for this ε (dp-fedavg)"
    ),
    noise_multiplier: Optional[float] = typer.Option(None, "--noise-multiplier", help="fixed z instead of a target ε"),
    clients_per_round: Optional[float] = typer.Option(None, "--clients-per-round", help="expected cohort q·N"),
    clip_norm: Optional[float] = typer.Option(
        None, "--clip-norm", help="per-user L2 clip C (dp-fedavg; the initial C with adaptive clipping)"
    ),
    mechanism: Optional[str] = typer.Option(
        None, "--mechanism", help="privacy mechanism (dp-fedavg; see keyboard_fl.privacy.MECHANISMS)"
    ),
    adaptive_clip_quantile: Optional[float] = typer.Option(
        None,
        "--adaptive-clip-quantile",
        help="adaptive clipping: C tracks this quantile of update norms (Andrew et al. 2021; 0.5 is TFF's default)",
    ),
    corpus: Optional[str] = CORPUS_OPTION,
    public_corpus: Optional[str] = PUBLIC_CORPUS_OPTION,
    skip_bad_lines: bool = SKIP_BAD_LINES_OPTION,
    canaries: bool = typer.Option(
        False, "--canaries", help="plant Secret Sharer canaries in training users (for keyboard-fl audit)"
    ),
    canary_clients: int = typer.Option(
        0,
        "--canary-clients",
        help="canary directions for the empirical-ε audit (each inserted as a client on a fair coin; "
        "Andrew et al. 2024); 0: none",
    ),
    phrase_canaries: int = typer.Option(
        0,
        "--phrase-canaries",
        help="random phrases for the empirical-ε audit of any mode (each planted in one user on a fair coin); 0: none",
    ),
    config_file: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = SET_OPTION,
    users: Optional[int] = USERS_OPTION,
):
    """Train one model (central baseline, FedAvg or DP-FedAvg) and evaluate it."""
    from keyboard_fl.train.run import run

    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if noise_multiplier is not None and target_epsilon is not None:
        _fail("give either --noise-multiplier or --target-epsilon, not both")
    over = dict(
        rounds=rounds,
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        clients_per_round=clients_per_round,
        clip_norm=clip_norm,
        adaptive_clip_quantile=adaptive_clip_quantile,
    )
    if mechanism is not None:  # a str field: --set syntax, not JSON
        sets = [f"federated.mechanism={mechanism}", *sets]
    if noise_multiplier is not None:
        over["target_epsilon"] = None
    cfg = _config(_preset_for(preset, corpus), mode, seed, config_file, sets, users, **over)
    cfg = _with_data(cfg, corpus, public_corpus, skip_bad_lines, users)
    if canaries and cfg.canaries is None:  # canaries set by --config/--set are kept
        cfg = _with_canaries(cfg, seed)
    if canary_clients:
        cfg = _with_canary_clients(cfg, canary_clients)
    if phrase_canaries:
        cfg = _with_phrase_canaries(cfg, phrase_canaries)
    with ProgressBars(console) as bars:
        m = run(cfg, out, resume=resume, log=_log, progress=bars)
    console.print(results_table({cfg.mode: m}))
    console.print(f"wrote {out / 'metrics.json'}")


@app.command("config")
@_guard
def show_config(
    preset: str = typer.Option("default", help="tiny, default, corpus or large"),
    mode: str = typer.Option(DP_FEDAVG, help=", ".join(MODES)),
    seed: int = typer.Option(0),
    config_file: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = SET_OPTION,
):
    """Print the resolved run configuration as JSON (preset, then --config, then --set)."""
    typer.echo(_config(preset, mode, seed, config_file, sets).to_json())


@app.command()
@_guard
def main(
    out: Path = typer.Option(MAIN_DIR, "--out", help="directory for the three runs"),
    preset: Optional[str] = PRESET_OPTION,
    seed: int = typer.Option(0),
    canaries: bool = typer.Option(
        True,
        "--canaries/--no-canaries",
        help="plant Secret Sharer canaries in every run and audit them at the end (the demo's canary view)",
    ),
    empirical: bool = typer.Option(
        False,
        "--empirical/--no-empirical",
        help="also measure each run's empirical ε: planted phrases (all modes) and canary clients (federated "
        "modes). Off by default: the planted phrases change the training data, and the README's figures are "
        "from the job without them",
    ),
    users: Optional[int] = USERS_OPTION,
    corpus: Optional[str] = CORPUS_OPTION,
    public_corpus: Optional[str] = PUBLIC_CORPUS_OPTION,
    skip_bad_lines: bool = SKIP_BAD_LINES_OPTION,
):
    """The README main job: central baseline, FedAvg and DP-FedAvg on one population, side by side, then a memorization audit."""
    from keyboard_fl.train.run import run, write_json

    results = {}
    for mode in MODES:
        console.rule(f"[bold]{mode}")
        d = out / mode
        if run_dirs.is_finished(d):
            _log(f"{d} is already trained; delete it to retrain")
            results[mode] = run_dirs.load_metrics(d)
            continue
        cfg = _with_data(
            _config(_preset_for(preset, corpus), mode, seed, users=users), corpus, public_corpus, skip_bad_lines, users
        )
        if canaries:
            cfg = _with_canaries(cfg, seed)
        if empirical:
            cfg = _with_main_empirical(cfg)
        with ProgressBars(console) as bars:
            results[mode] = run(cfg, d, resume=(d / run_dirs.CONFIG_FILE).exists(), log=_log, progress=bars)
    console.print(results_table(results))
    write_json(
        out / run_dirs.SUMMARY_FILE,
        {
            k: {
                f: v.get(f)
                for f in (
                    "top1",
                    "top3",
                    "ngram_top1",
                    "ngram_top3",
                    "ngram_ksr",
                    "ksr",
                    "perplexity",
                    "epsilon",
                    "delta",
                    "params",
                    "public_pretrained",
                )
            }
            for k, v in results.items()
        },
    )
    audited = [out / m for m in results if _trained_with(out / m, "canaries")]
    if audited:
        console.rule("[bold]memorization audit")
        console.print(_audit_table(audited))
    measured = _empirical_audits([out / m for m in results])
    if measured:
        console.rule("[bold]empirical privacy")
        console.print(empirical_table(measured))
    console.print(f'runs in {out}/; try: keyboard-fl suggest --run {out}/{DP_FEDAVG} "see you"  or  keyboard-fl demo')


def _with_canaries(cfg, seed: int):
    from keyboard_fl.privacy.canaries import CanaryConfig

    return dataclasses.replace(cfg, canaries=CanaryConfig(seed=seed))


def _with_canary_clients(cfg, count: int, **fields):
    from keyboard_fl.privacy.empirical import CanaryClientConfig

    try:  # new runs: an independent coin per canary, as the one-run bound assumes
        return dataclasses.replace(cfg, canary_clients=CanaryClientConfig(count=count, assignment="coin", **fields))
    except ValueError as e:
        _fail(f"--canary-clients: {e}")


def _with_phrase_canaries(cfg, count: int):
    from keyboard_fl.privacy.phrase_canaries import PhraseCanaryConfig

    try:
        return dataclasses.replace(cfg, phrase_canaries=PhraseCanaryConfig(count=count))
    except ValueError as e:
        _fail(f"--phrase-canaries: {e}")


# The main job's empirical-ε audit (issue 21), added here and not in the presets: benchmarks/privacy_utility.py
# builds "the main job's config" from the preset, and its finished cells were trained without these.
MAIN_PHRASES = 1000  # phrases, about half planted (typed 50x each, PhraseCanaryConfig) in users every mode trains on
# Canary directions: at q = 1e-3 over 40 rounds about 4% are ever scheduled (~200 in, ~200 out), the ones the
# schedule-aware audit scores; the schedule-blind statistics score the first MAIN_BLIND_SCORED (cost: one
# d-dimensional draw each). About 40 s of audit on 2 cores for both federated runs.
MAIN_CANARY_CLIENTS = 10_000
MAIN_BLIND_SCORED = 1_000


def _with_main_empirical(cfg):
    """The main job's run config with phrase canaries (every mode) and canary clients (federated modes)."""
    cfg = _with_phrase_canaries(cfg, MAIN_PHRASES)
    if cfg.mode == CENTRAL or cfg.federated.sampling != "poisson":
        return cfg
    return _with_canary_clients(cfg, MAIN_CANARY_CLIENTS, scored=MAIN_BLIND_SCORED)
