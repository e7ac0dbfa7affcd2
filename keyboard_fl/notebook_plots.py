"""Figures for the notebooks: learning curves, per-user histograms, privacy-utility,
and :func:`show` to display one whatever the matplotlib backend.

Re-exported by :mod:`keyboard_fl.notebook_utils`, which the notebooks import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

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


def plot_privacy_utility(sweep: Sequence[Mapping], reference: Mapping[str, float] | None = None):
    """Top-1 and KSR against ε (log scale), with optional horizontal references (e.g. FedAvg, public-only)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    eps = [float(r["epsilon"]) for r in sweep]
    for ax, key, title in ((axes[0], "top1", "top-1"), (axes[1], "ksr", "keystroke savings")):
        ax.plot(eps, [float(r.get(key) or np.nan) for r in sweep], marker="o")
        for r, e in zip(sweep, eps):
            ax.annotate(
                f"z={r['noise_multiplier']:g}",
                (e, float(r.get(key) or np.nan)),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
        for name, vals in (reference or {}).items():
            if vals.get(key) is not None:
                ax.axhline(float(vals[key]), ls="--", lw=1, color="grey")
                ax.annotate(name, (min(eps), float(vals[key])), fontsize=7, textcoords="offset points", xytext=(0, 3))
        ax.set_xscale("log")
        ax.set_xlabel("ε (user-level)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["plot_learning_curves", "plot_per_user_hist", "plot_privacy_utility", "show"]
