"""Data commands: ``generate`` a population to JSONL, its ``stats``, and the public-split ``tokenizer``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from keyboard_fl import runs as run_dirs
from keyboard_fl.cli.common import MAIN_DIR, _config, _guard, app, console
from keyboard_fl.runs import CENTRAL


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
    runs: Path = typer.Option(
        MAIN_DIR, "--runs", help="the main job's output: when trained, the measured gap (central − public only)"
    ),
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
    gap = measured_gap(runs / run_dirs.SUMMARY_FILE)
    if gap is not None:
        t.add_row(
            f"what private data adds, measured ({runs}): central − public-only top-1 on held-out users",
            f"{gap['central']:.1%} − {gap['public_only']:.1%} = {gap['gap'] * 100:+.1f} points",
        )
    console.print(t)
    if plot:
        rank_frequency_plot(pop, plot)
        console.print(f"wrote {plot}")


def measured_gap(summary: Path) -> dict | None:
    """Central and public-only top-1 from the main job's ``summary.json`` and their difference; None if absent."""
    try:
        central = json.loads(summary.read_text())["central"]
        c, p = float(central["top1"]), float(central["public_pretrained"]["top1"])
    except (OSError, ValueError, KeyError, TypeError):  # not trained yet, or another job's summary
        return None
    return {"central": c, "public_only": p, "gap": c - p}


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
