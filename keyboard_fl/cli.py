"""``keyboard-fl``: the command line of the project (typer + rich).

User errors (bad config, bad corpus line, missing run) print one clear red
line and exit with status 2; they never show a Python traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from keyboard_fl import runs as run_dirs
from keyboard_fl.runs import CENTRAL, DP_FEDAVG, MODES, privacy_label
from keyboard_fl.tables import ProgressBars, audit_table, pct, results_table

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="A private phone keyboard: federated, differentially private next-word prediction.",
)
console = Console()
err = Console(stderr=True)

MAIN_DIR = Path("runs/main")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError)


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)  # one line, never wrapped at 80 columns
    raise typer.Exit(2)


def _guard(fn):
    """Turn user errors into one clear line (set KEYBOARD_FL_DEBUG=1 for tracebacks)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except typer.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary
            from keyboard_fl.checkpoint import CheckpointError

            known = USER_ERRORS + (CheckpointError,)
            try:
                from keyboard_fl.data import CorpusError

                known = known + (CorpusError,)
            except ImportError:
                pass
            if os.environ.get("KEYBOARD_FL_DEBUG") or not isinstance(e, known):
                raise
            _fail(str(e))

    return wrapper


def _config(
    preset: str,
    mode: str,
    seed: int,
    config_file: Optional[Path] = None,
    sets=(),
    users: Optional[int] = None,
    **overrides,
):
    """The preset, then the --config file, then the dedicated flags (--users, federated.*), then each --set, in order."""
    from keyboard_fl.config import PRESETS
    from keyboard_fl.config import preset as make_preset
    from keyboard_fl.overrides import resolve

    if preset not in PRESETS:
        _fail(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if users is not None and users < 1:
        _fail(f"--users must be ≥ 1, got {users}")
    flags = [f"population.num_train_users={users}"] if users is not None else []
    flags += [f"federated.{k}={json.dumps(v)}" for k, v in overrides.items() if v is not None]
    return resolve(make_preset(preset, mode=mode, seed=seed), config_file=config_file, sets=[*flags, *sets])


CONFIG_OPTION = typer.Option(None, "--config", help="a full or partial RunConfig JSON file laid over the preset")
SET_OPTION = typer.Option([], "--set", help="section.field=value (repeatable), e.g. federated.local_epochs=2")
USERS_OPTION = typer.Option(
    None, "--users", help="training users N of the simulated population (default preset: 1,000,000, streamed)"
)


def _log(msg: str) -> None:
    console.print(f"[dim]·[/] {msg}", highlight=False)


@app.command()
@_guard
def train(
    out: Path = typer.Option(..., "--out", help="run directory"),
    mode: str = typer.Option(DP_FEDAVG, help=", ".join(MODES)),
    preset: str = typer.Option("default", help="tiny, default or large"),
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
    corpus: Optional[Path] = typer.Option(
        None,
        "--corpus",
        help="your own corpus: a JSONL file ({user_id, text} per line) or a directory of per-user text files",
    ),
    skip_bad_lines: bool = typer.Option(
        False, "--skip-bad-lines", help="skip and count malformed corpus lines instead of stopping"
    ),
    canaries: bool = typer.Option(
        False, "--canaries", help="plant Secret Sharer canaries in training users (for keyboard-fl audit)"
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
    cfg = _config(preset, mode, seed, config_file, sets, users, **over)
    if corpus is not None:
        if not corpus.exists():
            _fail(f"--corpus {corpus}: no such file or directory")
        cfg = dataclasses.replace(cfg, corpus=str(corpus.resolve()), skip_bad_lines=skip_bad_lines)
    if canaries and cfg.canaries is None:  # canaries set by --config/--set are kept
        cfg = _with_canaries(cfg, seed)
    with ProgressBars(console) as bars:
        m = run(cfg, out, resume=resume, log=_log, progress=bars)
    console.print(results_table({cfg.mode: m}))
    console.print(f"wrote {out / 'metrics.json'}")


@app.command("config")
@_guard
def show_config(
    preset: str = typer.Option("default", help="tiny, default or large"),
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
    preset: str = typer.Option("default", help="tiny, default or large"),
    seed: int = typer.Option(0),
    canaries: bool = typer.Option(
        True,
        "--canaries/--no-canaries",
        help="plant Secret Sharer canaries in every run and audit them at the end (the demo's canary view)",
    ),
    users: Optional[int] = USERS_OPTION,
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
        cfg = _config(preset, mode, seed, users=users)
        if canaries:
            cfg = _with_canaries(cfg, seed)
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
    audited = [out / m for m in results if _has_canaries(out / m)]
    if audited:
        console.rule("[bold]memorization audit")
        console.print(_audit_table(audited))
    console.print(f'runs in {out}/; try: keyboard-fl suggest --run {out}/{DP_FEDAVG} "see you"  or  keyboard-fl demo')


def _with_canaries(cfg, seed: int):
    from keyboard_fl.privacy.canaries import CanaryConfig

    return dataclasses.replace(cfg, canaries=CanaryConfig(seed=seed))


def _has_canaries(run_dir: Path) -> bool:
    path = run_dir / run_dirs.CONFIG_FILE
    return path.exists() and json.loads(path.read_text()).get("canaries") is not None


@app.command()
@_guard
def evaluate(run_dir: Path = typer.Argument(..., help="a run directory")):
    """Show a run's metrics: quality, baselines and privacy."""
    path = run_dir / run_dirs.METRICS_FILE
    if not path.exists():
        _fail(f"{path} not found: is {run_dir} a finished run?")
    m = run_dirs.load_metrics(run_dir)
    console.print(results_table({m.get("mode", run_dir.name): m}))
    h = m["heldout_users"]["per_user_top1"]
    console.print(
        f"per-user top-1 over {h['users']} held-out users: p10 {pct(h['p10'])}, median {pct(h['median'])}, p90 {pct(h['p90'])}"
    )
    o = m["train_users_heldout_messages"]
    console.print(
        f"held-out messages of training users: top-1 {pct(o['top1'])}, top-3 {pct(o['top3'])}; OOV rate {pct(m['heldout_users']['oov_rate'])}"
    )
    if run_dirs.is_private(m):
        console.print(
            f"privacy: ({m['epsilon']:.3f}, {m['delta']:.0e})-DP per {m['privacy_unit']}, {m['accountant']} accountant; "
            f"z={m['noise_multiplier']:.4f}, q={m['sampling_prob']:.4g} (Poisson), {m['rounds']} rounds, C={m['clip_norm']}, N={m['population']}"
        )


@app.command()
@_guard
def suggest(
    text: Optional[str] = typer.Argument(None, help="text typed so far; a trailing partial word gets completions"),
    run: Optional[Path] = typer.Option(None, "--run", help="run directory (default: the main job's DP-FedAvg run)"),
    k: int = typer.Option(3, min=1, max=10, help="number of suggestions"),
    interactive: bool = typer.Option(
        False, "--interactive", "-i", help="type live and watch the strip (digits 1–3 accept)"
    ),
):
    """Print the suggestion strip for a text, or show it live while typing (-i)."""
    run = run or MAIN_DIR / DP_FEDAVG
    from keyboard_fl.loading import load_suggester

    s, m = load_suggester(run)
    if interactive or text is None:
        from keyboard_fl.interactive import run_interactive

        console.print(f"[dim]{run} · {privacy_label(m)} · Ctrl-D to quit[/]", highlight=False)
        run_interactive(s, k=k)
        return
    words = s.suggest(text, k)
    console.print("  |  ".join(f"[bold]{w}[/]" for w in words) if words else "[dim](no suggestion)[/]")
    console.print(f"[dim]{run} · {privacy_label(m)}[/]", highlight=False)


predict = app.command("predict", help="Alias of suggest.")(suggest)


@app.command()
@_guard
def audit(
    runs: list[Path] = typer.Argument(
        ..., help="run directories trained with --canaries (e.g. central, fedavg, dp-fedavg)"
    ),
):
    """Memorization audit: canary exposure and whether the strip types the secret (Carlini et al. 2019)."""
    console.print(_audit_table(runs))


def _audit_table(runs: list[Path]) -> Table:
    """Audit each run (results saved in its metrics.json) and tabulate exposure and completion."""
    from keyboard_fl.audit import audit_run

    return audit_table({str(d.name): (audit_run(d), run_dirs.load_metrics(d)) for d in runs})


@app.command()
@_guard
def demo(
    runs: Path = typer.Option(MAIN_DIR, "--runs", help="directory holding trained runs (the main job's by default)"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="port"),
    onnx: bool = typer.Option(False, "--onnx", help="serve each run's int8 ONNX export (onnxruntime) instead of JAX"),
):
    """Serve the phone-keyboard suggestion-strip demo for the trained models."""
    from keyboard_fl.demo import demo_command

    demo_command(runs, host, port, backend="onnx" if onnx else "jax")


@app.command()
@_guard
def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default RUN_DIR/export)"),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="also write int8 weights (model.int8.onnx)"),
):
    """Export a run for on-device use: per-step ONNX model (float and int8), tokenizer and manifest."""
    from keyboard_fl.loading import export_onnx

    manifest = export_onnx(run_dir, out, quantize=quantize)
    files = manifest.get("files", {})
    for name, info in files.items():
        size = info.get("bytes") if isinstance(info, dict) else info
        console.print(f"  {name}: {size:,} bytes" if isinstance(size, int) else f"  {name}")
    console.print(f"wrote {out or run_dir / 'export'}")


@app.command()
@_guard
def privacy(
    sampling_prob: Optional[float] = typer.Option(None, "--q", help="Poisson sampling probability per round"),
    clients_per_round: Optional[float] = typer.Option(
        None, "--clients-per-round", help="expected cohort (with --population)"
    ),
    population: Optional[int] = typer.Option(None, "--population", help="number of users N"),
    rounds: int = typer.Option(..., help="training rounds"),
    noise_multiplier: Optional[float] = typer.Option(None, "--noise-multiplier", "-z", help="z: what ε does it give?"),
    target_epsilon: Optional[float] = typer.Option(None, "--target-epsilon", help="what z does this ε need?"),
    delta: Optional[float] = typer.Option(None, help="δ (default: below 1/N)"),
    mechanism: str = typer.Option(
        "dp-fedavg", "--mechanism", help="privacy mechanism (keyboard_fl.privacy.MECHANISMS)"
    ),
    sampling: str = typer.Option("poisson", "--sampling", help="participation: poisson, or fixed (replace-one, RDP)"),
    accountant: Optional[str] = typer.Option(None, "--accountant", help="pld or rdp (default: the mechanism's own)"),
    clip_norm: float = typer.Option(1.0, "--clip-norm", help="C: to show the noise std zC on the sum"),
    adaptive_clip_quantile: Optional[float] = typer.Option(
        None, "--adaptive-clip-quantile", help="with adaptive clipping: show the sum/count split of z"
    ),
    count_stddev: Optional[float] = typer.Option(
        None, "--count-stddev", help="adaptive clipping's count noise σ_b (default 0.05·qN)"
    ),
):
    """Privacy without training: ε for a noise level, or the noise for a target ε, for a mechanism (user-level)."""
    from keyboard_fl.privacy import Participation, calibrate_mechanism, default_delta, make_mechanism, mechanism_epsilon

    if (noise_multiplier is None) == (target_epsilon is None):
        _fail("give exactly one of --noise-multiplier or --target-epsilon")
    if sampling_prob is None:
        if clients_per_round is None or population is None:
            _fail("give --q, or --clients-per-round with --population")
        sampling_prob = clients_per_round / population
    if delta is None:
        if population is None:
            _fail("give --delta, or --population to use the default δ below 1/N")
        delta = default_delta(population)
    if adaptive_clip_quantile is not None and population is None:
        _fail("adaptive clipping needs --population (its count noise and denominator are qN)")
    try:
        mech = make_mechanism(
            mechanism,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier or 0.0,
            participation=Participation(sampling, sampling_prob, population),
            adaptive_clip_quantile=adaptive_clip_quantile,
            adaptive_clip_count_stddev=count_stddev,
        )
        if target_epsilon is not None:
            mech = calibrate_mechanism(mech, target_epsilon, rounds, delta, accountant=accountant)
        acc = accountant or mech.accountant
        rep = {"epsilon": mechanism_epsilon(mech, rounds, delta, accountant=acc)}
    except ValueError as e:
        _fail(f"--mechanism {mechanism} --sampling {sampling}: {e}")
    try:
        rep["epsilon_rdp"] = mechanism_epsilon(mech, rounds, delta, accountant="rdp")
    except ValueError:
        pass
    d = mech.to_dict()
    p = mech.participation
    name = f"{d['base']['name']} + adaptive clipping" if "base" in d else d["name"]
    rep.update(delta=delta, mechanism=name, noise_multiplier=mech.noise_multiplier)
    if "sum_noise_multiplier" in d:
        rep.update(sum_noise_multiplier=d["sum_noise_multiplier"], count_stddev=d["count_stddev"])
    z_sum = d.get("sum_noise_multiplier", mech.noise_multiplier)
    rep["noise_std_sum"] = z_sum * clip_norm
    if population is not None:
        rep["noise_std_average"] = z_sum * clip_norm / mech.expected_cohort
    rep.update(
        sampling_prob=p.sampling_prob,
        rounds=rounds,
        population=population,
        privacy_unit="user",
        accountant=acc,
        sampling=p.scheme,
        neighbouring=p.neighbouring,
    )
    t = Table(title=f"user-level privacy: {name}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key in (
        "epsilon",
        "epsilon_rdp",
        "delta",
        "mechanism",
        "noise_multiplier",
        "sum_noise_multiplier",
        "count_stddev",
        "noise_std_sum",
        "noise_std_average",
        "sampling_prob",
        "rounds",
        "population",
        "privacy_unit",
        "accountant",
        "sampling",
        "neighbouring",
    ):
        if key in rep:
            v = rep[key]
            t.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)


@app.command()
@_guard
def generate(
    out: Path = typer.Option(..., "--out", help="directory for the JSONL files and manifest.json"),
    preset: str = typer.Option("default"),
    seed: int = typer.Option(0),
    split: list[str] = typer.Option(["train", "heldout", "public"], help="splits to write"),
):
    """Materialise a simulated population to JSONL with a manifest (seed, counts, sha256)."""
    from keyboard_fl.data import Population
    from keyboard_fl.data.materialize import materialize

    cfg = _config(preset, CENTRAL, seed)
    manifest = materialize(Population(cfg.population), out, splits=tuple(split))
    console.print_json(json.dumps(manifest, default=str))


@app.command()
@_guard
def stats(
    preset: str = typer.Option("default"),
    seed: int = typer.Option(0),
    split: str = typer.Option("train"),
    max_users: int = typer.Option(2000, help="users to summarise"),
    plot: Optional[Path] = typer.Option(None, help="write a rank–frequency plot (PNG) beside wordfreq's English"),
):
    """Show that the simulated data looks like typing: users, messages, words, overlap, samples."""
    from keyboard_fl.data import Population
    from keyboard_fl.data.stats import population_stats, rank_frequency_plot, register_gap_stats

    cfg = _config(preset, CENTRAL, seed)
    pop = Population(cfg.population)
    s = population_stats(pop, split=split, max_users=max_users)
    samples = s.pop("sample_messages", [])
    t = Table(title=f"population stats ({split}, first {max_users} users)")
    t.add_column("statistic")
    t.add_column("value", justify="right")
    for k, v in s.items():
        t.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    console.print(t)
    for m in samples[:12]:
        console.print(f"  [cyan]›[/] {m}", highlight=False)
    g = register_gap_stats(pop, split=split, max_users=max_users)
    t = Table(title=f"what private typing holds that public text lacks ({split}, first {g['users']} users)")
    t.add_column("kind")
    t.add_column("value", justify="right")
    t.add_row(f"OOV rate against the {g['public_vocabulary']} most frequent public words", f"{g['oov_rate']:.1%}")
    t.add_row("phrases typed by ≥5% of users that the public split never contains", str(g["shared_phrases"]))
    for x in g["top_shared_phrases"]:
        t.add_row(f"  “{x['phrase']}”", f"{x['user_share']:.1%} of users")
    t.add_row("words (names) typed by one user only, never in public text", str(g["single_user_words"]))
    if g["single_user_word_examples"]:
        t.add_row(f"  e.g. “{g['single_user_word_examples'][0]}”", "1 user")
    console.print(t)
    if plot:
        rank_frequency_plot(pop, plot)
        console.print(f"wrote {plot}")


@app.command()
@_guard
def tokenizer(
    out: Path = typer.Option(..., "--out", help="path of the .model file"),
    preset: str = typer.Option("default"),
    seed: int = typer.Option(0),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size"),
):
    """Train the SentencePiece tokenizer on the public split only."""
    from keyboard_fl.data import Population
    from keyboard_fl.tokenizer import train_tokenizer

    cfg = _config(preset, CENTRAL, seed)
    tcfg = cfg.tokenizer if vocab_size is None else dataclasses.replace(cfg.tokenizer, vocab_size=vocab_size)
    tok = train_tokenizer((m for u in Population(cfg.population).users("public") for m in u.train), tcfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(out)
    console.print(f"wrote {out}: {tok.vocab_size} pieces (public split only)")


if __name__ == "__main__":
    app()
