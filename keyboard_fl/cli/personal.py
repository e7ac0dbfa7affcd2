"""``keyboard-fl personalize``: on-device personalization against the global models (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from keyboard_fl.cli.common import MAIN_DIR, _guard, _log, app, console


@app.command()
@_guard
def personalize(
    run: Path = typer.Option(MAIN_DIR, "--run", help="a main job's directory (its runs and public-only start)"),
    users: int = typer.Option(200, min=1, help="training users scored (the first ones with held-out messages)"),
    ksr_messages: int = typer.Option(100, min=0, help="held-out messages typed for keystroke savings"),
    models: Optional[str] = typer.Option(None, help="comma-separated model names (default: all, public-only first)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the report as JSON here"),
):
    """Personal cache and bias fine-tuning against each global model, on training users' later messages."""
    from keyboard_fl.personal.compare import comparison_table
    from keyboard_fl.personal.evaluate import PersonalEvalConfig
    from keyboard_fl.personal.report import markdown_table, personalization_report

    cfg = PersonalEvalConfig(users=users, ksr_messages=ksr_messages)
    names = tuple(n.strip() for n in models.split(",") if n.strip()) if models else None
    report = personalization_report(run, cfg, names, log=_log)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        _log(f"wrote {out}")
    console.print(markdown_table(report), highlight=False, markup=False)
    if len(report["results"]) > 1:  # which model personalization helps most, paired over the same users
        console.print(comparison_table(report), highlight=False, markup=False)
