"""Commands on trained runs: ``evaluate``, ``suggest``/``predict``, ``audit``, ``demo`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from keyboard_fl import runs as run_dirs
from keyboard_fl.cli.common import MAIN_DIR, _audit_table, _empirical_audits, _fail, _guard, _trained_with, app, console
from keyboard_fl.runs import DP_FEDAVG, privacy_label
from keyboard_fl.tables import pct, results_table


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
        ...,
        help="run directories trained with --canaries, --canary-clients and/or --phrase-canaries "
        "(e.g. central, fedavg, dp-fedavg)",
    ),
):
    """Memorization audit (Secret Sharer canaries, Carlini et al. 2019) and empirical ε beside the accounted ε
    (canary clients, Andrew et al. 2024, and planted phrases: ε_est; one-run lower bound ε_lower, Steinke et al. 2023)."""
    from keyboard_fl.tables import empirical_table

    kinds = ("canaries", "canary_clients", "phrase_canaries")
    for d in runs:
        if not any(_trained_with(d, k) for k in kinds):
            _fail(f"{d}: trained without canaries; train with --canaries, --canary-clients N or --phrase-canaries K")
    secret = [d for d in runs if _trained_with(d, "canaries")]
    if secret:
        console.print(_audit_table(secret))
    empirical = _empirical_audits(runs)
    if empirical:
        console.print(empirical_table(empirical))


@app.command()
@_guard
def demo(
    runs: Path = typer.Option(MAIN_DIR, "--runs", help="directory holding trained runs (the main job's by default)"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="port"),
    onnx: bool = typer.Option(False, "--onnx", help="serve each run's int8 ONNX export (onnxruntime) instead of JAX"),
    workers: int = typer.Option(1, "--workers", min=1, help="server processes (each loads every model)"),
):
    """Serve the phone-keyboard suggestion-strip demo for the trained models."""
    from keyboard_fl.demo import demo_command

    demo_command(runs, host, port, backend="onnx" if onnx else "jax", workers=workers)


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
