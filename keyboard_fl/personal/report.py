"""The personalization report over a main job's global models: JSON-ready results and a README table."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Callable
from pathlib import Path

from keyboard_fl.personal.evaluate import PersonalEvalConfig, evaluate_model
from keyboard_fl.personal.global_models import load_global_models

__all__ = ["markdown_table", "personalization_report"]


def personalization_report(
    root: str | Path,
    cfg: PersonalEvalConfig = PersonalEvalConfig(),
    names: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Personalized against global for every global model under ``root`` (public-only first)."""
    models = load_global_models(root, names)
    results = {}
    for name, model in models.items():
        log(f"{name}: personalising {cfg.users} training users ({model.privacy})")
        results[name] = evaluate_model(model, cfg, log)
    return _clean(
        {
            "benchmark": "on-device personalization on training users' later messages (issue 22)",
            "root": str(root),
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "config": dataclasses.asdict(cfg),
            "cpus": os.cpu_count(),
            "results": results,
        }
    )


def _clean(x):
    """JSON-safe: non-finite floats become None (``nan`` ratios of empty counts)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}"


def _pp(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:+.1f}"


def markdown_table(report: dict, variants: tuple[str, ...] = ("global", "cache", "bias", "cache+bias")) -> str:
    """One row per (model, variant): top-1 / top-3 / KSR, entity top-1 / top-3, per-user top-1 gain spread."""
    head = (
        "| model | strip | top-1 % | top-3 % | KSR % | entity top-1 % | entity top-3 % "
        "| per-user Δtop-1 p10 / median / p90 (pp) | users better / worse |\n"
        "|---|---|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for name, r in report["results"].items():
        for v in variants:
            m = r["variants"][v]
            g = m.get("per_user_gain_top1")
            spread = f"{_pp(g['p10'])} / {_pp(g['median'])} / {_pp(g['p90'])}" if g and g.get("users") else ""
            share = f"{_pct(g['better'])}% / {_pct(g['worse'])}%" if g and g.get("users") else ""
            label = f"{name} ({r['privacy']})" if v == "global" else ""
            rows.append(
                f"| {label} | {v} | {_pct(m['top1'])} | {_pct(m['top3'])} | {_pct(m['ksr'])} "
                f"| {_pct(m['entity_top1'])} | {_pct(m['entity_top3'])} | {spread} | {share} |"
            )
    return head + "\n".join(rows) + "\n"
