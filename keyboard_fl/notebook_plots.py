"""Figures for the notebooks: learning curves, per-user histograms, privacy-utility,
and :func:`show` to display one whatever the matplotlib backend.

Re-exported by :mod:`keyboard_fl.notebook_utils`, which the notebooks import.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keyboard_fl.runs import load_history, load_metrics, mode_label


def show(fig=None) -> None:
    """Display a matplotlib figure (the current one by default) and close it.

    Renders the PNG itself, so it works whatever the backend: training switches
    matplotlib to Agg (to write ``learning_curve.png``), after which neither
    ``plt.show()`` nor ``display(fig)`` shows anything in a notebook.
    """
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    fig = fig or plt.gcf()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="png"))


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(runs: Mapping[str, Path], metric: str = "eval_top1", ax=None):
    """Quick-evaluation ``metric`` against round for federated runs; central (no rounds) as its final value."""
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    final_key = {"eval_top1": "top1", "eval_top3": "top3", "eval_perplexity": "perplexity"}.get(metric)
    start = None
    for name, d in runs.items():
        h = [r for r in load_history(d) if metric in r]  # quick evaluations: every eval_every rounds
        m = load_metrics(d)
        if m.get("public_pretrained") and final_key in m["public_pretrained"]:
            start = m["public_pretrained"][final_key]
        if h:
            ax.plot([r["round"] for r in h], [r[metric] for r in h], marker="o", ms=3, label=mode_label(name))
        elif final_key and m.get(final_key) is not None:
            ax.axhline(
                float(m[final_key]), color="k", ls="--", lw=1, label=f"{mode_label(name)} (final, {m.get('mode')})"
            )
    if start is not None:
        ax.axhline(float(start), color="grey", ls=":", lw=1, label="public-only start")
    ax.set_xlabel("round")
    ax.set_ylabel(metric.replace("eval_", "quick-eval "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig or ax.figure


def plot_per_user_hist(per_user: Mapping[str, Mapping[str, float]], bins: int = 20, ax=None):
    """Overlaid histograms of per-user top-1, one per model."""
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.linspace(0, max([max(v.values(), default=0) for v in per_user.values()] + [0.05]) * 1.02, bins + 1)
    for name, vals in per_user.items():
        v = np.array(list(vals.values()))
        ax.hist(
            v,
            bins=edges,
            histtype="step",
            lw=1.5,
            label=f"{mode_label(name)} (median {np.median(v) if v.size else float('nan'):.3f})",
        )
    ax.set_xlabel("per-user top-1 (held-out users)")
    ax.set_ylabel("users")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig or ax.figure


def plot_privacy_utility(results: Mapping[str, Any]):
    """Top-1, KSR and perplexity against ε, one line per mechanism, with the public-only and FedAvg lines.

    ``results``: ``benchmarks/results/privacy_utility.json`` (``benchmarks/privacy_utility.py``).
    """
    plt = _plt()
    panels = (("top1", "top-1 (held-out users)"), ("ksr", "keystroke savings"), ("perplexity", "perplexity / piece"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, panels):
        for mech, cells in sorted(results.get("private", {}).items()):
            pts = sorted((float(c["epsilon"]), float(c[key])) for c in cells.values() if c.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=mech)
        for name, style in (("fedavg", "--"), ("public_only", ":")):
            ref = results.get(name) or {}
            if ref.get(key) is not None:
                ax.axhline(float(ref[key]), ls=style, lw=1, color="grey", label=name.replace("_", "-"))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ε (user-level)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["plot_learning_curves", "plot_per_user_hist", "plot_privacy_utility", "show"]
