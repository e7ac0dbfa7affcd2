"""Rich output for the terminal: models side by side, the memorization audit, training progress bars.

Pure rendering: each function takes metrics dicts (``metrics.json`` of a run,
:mod:`keyboard_fl.runs`) and returns a :class:`rich.table.Table`; nothing is
trained, audited or written here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from keyboard_fl.runs import privacy_label

__all__ = ["ProgressBars", "audit_table", "pct", "results_table"]


def pct(x) -> str:
    """``0.2034`` → ``"20.3%"``; ``None`` or NaN → ``"—"``."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def results_table(rows: Mapping[str, dict]) -> Table:
    """Models side by side, with the baselines DESIGN.md §3 asks for (n-gram, and the public-only start)."""
    t = Table(title="next-word prediction on held-out users (whole words, OOV targets excluded)")
    for col in ("model", "top-1", "top-3", "KSR", "ppl/piece", "privacy"):
        t.add_column(col, justify="right" if col != "model" else "left")
    first = next(iter(rows.values()))
    t.add_row(
        "Kneser–Ney trigram",
        pct(first["ngram_top1"]),
        pct(first["ngram_top3"]),
        pct(first.get("ngram_ksr")),
        "—",
        "not private",
    )
    for m in rows.values():
        pub = m.get("public_pretrained")
        if pub:
            t.add_row(
                "public data only", pct(pub["top1"]), pct(pub["top3"]), "—", f"{pub['perplexity']:.1f}", "no user data"
            )
    for name, m in rows.items():
        t.add_row(name, pct(m["top1"]), pct(m["top3"]), pct(m.get("ksr")), f"{m['perplexity']:.1f}", privacy_label(m))
    return t


def _typed(row: dict) -> str:
    if row["completes_top1"]:
        return "yes (top-1)"
    return "top-3 only" if row["completes_top3"] else f"no ({row['top1_digits']}/{row['digits']} digits top-1)"


def audit_table(audits: Mapping[str, tuple[dict, dict]]) -> Table:
    """``{run name: (audit result, run metrics)}`` → exposure and completion of each planted canary."""
    t = Table(
        title="Secret Sharer audit: exposure of planted canaries (higher = more memorised)",
        caption='exposure ≈ 1 is chance; results were added to each run\'s metrics.json under "audit"',
    )
    for col in (
        "model",
        "privacy",
        "repetitions",
        "rank",
        "exposure",
        "extrapolated",
        "public-only exposure",
        "strip types the secret",
    ):
        t.add_column(col, justify="left" if col in ("model", "privacy") else "right")
    for name, (res, m) in audits.items():
        for row in res["canaries"]:
            t.add_row(
                name,
                privacy_label(m),
                str(row["repetitions"]),
                f"{row['rank']}/{res['references']}",
                f"{row['exposure']:.2f} / {res['max_exposure']:.2f}",
                f"{row['exposure_extrapolated']:.1f}",
                f"{row['public_only_exposure']:.2f}" if "public_only_exposure" in row else "—",
                _typed(row),
            )
    return t


def _eps(x) -> str:
    if x is None or x == float("inf") or x == "inf":
        return "∞"
    return f"{float(x):.2f}" if float(x) < 100 else f"{float(x):.2g}"


def _empirical_rows(audit: Mapping) -> list[tuple[str, dict, object, str]]:
    """(audit label, result, the ε bounding it, canaries in/out) for each empirical audit in ``audit``."""
    rows = []
    e, p = audit.get("empirical"), audit.get("phrases")
    if isinstance(e, dict):
        for stat, label in (("final_model", "final model"), ("all_iterates", "all iterates")):
            r = e[stat]
            rows.append((label, r, e["accounted_epsilon"], f"{r['in_canaries']}/{r['out_canaries']}"))
        g = e.get("given_schedule")
        if isinstance(g, dict):
            label = f"given schedule (≤{g['max_participations']} rounds)"
            rows.append((label, g, g["compared_epsilon"], f"{g['in_canaries']}/{g['out_canaries']}"))
    if isinstance(p, dict):
        rows.append(
            (f"phrases ×{p['repetitions']}", p, p["compared_epsilon"], f"{p['in_canaries']}/{p['out_canaries']}")
        )
    return rows


def empirical_table(audits: Mapping[str, dict]) -> Table:
    """``{run name: metrics["audit"]}`` → ε_est and ε_lower of each empirical audit, beside the ε that bounds it.

    A value may also be ``metrics["audit"]["empirical"]`` alone (canary clients).
    """
    t = Table(
        title="Empirical privacy: canary clients (final model, all iterates, given schedule; Andrew et al. 2024) "
        "and planted phrases; one-run ε_lower (Steinke et al. 2023)",
        caption="bound: the ε ε_lower must stay under (accounted; unamplified given the schedule; replace-one user for "
        "phrases), at each run's δ; ε_lower at 95% confidence, of at most what perfect scores would show; "
        'saved in metrics.json under "audit"',
    )
    for col in ("model", "audit", "accounted ε", "bound", "ε_est", "ε_lower / max", "TPR@FPR", "AUROC", "in/out"):
        t.add_column(col, justify="left" if col in ("model", "audit") else "right")
    for name, audit in audits.items():
        audit = {"empirical": audit} if "final_model" in audit else audit
        acc = (audit.get("empirical") or audit.get("phrases"))["accounted_epsilon"]
        for label, r, bound, n in _empirical_rows(audit):
            top = r.get("epsilon_lower_max")
            t.add_row(
                name,
                label,
                _eps(acc),
                "?" if bound is None else _eps(bound),
                "—" if r.get("epsilon_est") is None else _eps(r["epsilon_est"]),
                _eps(r["epsilon_lower"]) + ("" if top is None else f" / {_eps(top)}"),
                f"{r['tpr_at_fpr']:.3f}",
                f"{r['auroc']:.3f}",
                n,
            )
    return t


class ProgressBars:
    """A rich progress bar per training phase, fed by ``run(progress=...)``."""

    def __init__(self, console: Console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.p.add_task(phase, total=total)
        self.p.update(self.tasks[phase], completed=done)
