"""Run directories: their layout, the training modes, and what a user sees beside a model.

A run is a directory written by :func:`keyboard_fl.train.run.run`::

    <run>/config.json          the RunConfig (CONFIG_FILE)
    <run>/tokenizer.model      SentencePiece, trained on public text (TOKENIZER_FILE)
    <run>/checkpoints/         federated checkpoints, for --resume (CHECKPOINTS_DIR)
    <run>/model/               the final parameters (MODEL_DIR)
    <run>/metrics.jsonl        one line per quick evaluation during training (HISTORY_FILE)
    <run>/metrics.json         final metrics; its presence marks a finished run (METRICS_FILE)
    <run>/learning_curve.png   (CURVE_FILE)
    <run>/export/              the ONNX export, once made (EXPORT_DIR)
    <root>/.pretrained/<hash>/ public pretraining shared by sibling runs (PRETRAINED_DIR)
    <root>/summary.json        the main job's three runs side by side (SUMMARY_FILE)

This module owns those names, :func:`is_finished`, :func:`load_metrics`, the
mode names (``central``, ``fedavg``, ``dp-fedavg``) and labels, and the one
privacy label (:func:`privacy_label`) shown by the CLI, the demo and the
notebooks. Loading a model is :func:`load_suggester` (JAX); the ONNX back-end
is loaded beside the demo (:mod:`keyboard_fl.demo.loading`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "metrics.jsonl"
TOKENIZER_FILE = "tokenizer.model"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "export"
CURVE_FILE = "learning_curve.png"
PRETRAINED_DIR = ".pretrained"
SUMMARY_FILE = "summary.json"

CENTRAL = "central"  # pooled, non-private, non-federated baseline
FEDAVG = "fedavg"  # federated averaging, no privacy
DP_FEDAVG = "dp-fedavg"  # user-level DP-FedAvg (clip, Gaussian noise, fixed denominator)
MODES: tuple[str, ...] = (CENTRAL, FEDAVG, DP_FEDAVG)
MODE_LABELS = {CENTRAL: "Central", FEDAVG: "FedAvg", DP_FEDAVG: "DP-FedAvg"}

__all__ = [
    "CENTRAL", "CHECKPOINTS_DIR", "CONFIG_FILE", "CURVE_FILE", "DP_FEDAVG", "EXPORT_DIR", "FEDAVG", "HISTORY_FILE",
    "METRICS_FILE", "MODEL_DIR", "MODES", "MODE_LABELS", "PRETRAINED_DIR", "RunNotFound", "SUMMARY_FILE",
    "TOKENIZER_FILE", "discover_runs", "export_onnx", "is_finished", "is_private", "load_history", "load_metrics", "load_suggester",
    "mode_label", "model_info", "privacy_label",
]


class RunNotFound(FileNotFoundError):
    """The directory is not a finished run (no metrics.json or no model/)."""


def is_finished(run_dir: str | Path) -> bool:
    """A finished run has its final metrics and model."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).is_file() and (run_dir / MODEL_DIR).is_dir()


def load_metrics(run_dir: str | Path) -> dict:
    """The run's final ``metrics.json``; :class:`RunNotFound` (naming the file) when it is missing."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunNotFound(f"{run_dir} holds no finished run (no {METRICS_FILE}); train one with keyboard-fl train --out {run_dir}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def load_history(run_dir: str | Path) -> list[dict]:
    """The quick evaluations logged during a federated run (``metrics.jsonl``); [] when there are none."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return out


def discover_runs(root: str | Path) -> dict[str, Path]:
    """Finished runs under ``root``, by directory name (``root`` itself if it is one).

    Ordered central, FedAvg, DP-FedAvg first (by directory name), then the rest
    alphabetically.
    """
    root = Path(root)
    if is_finished(root):
        return {root.name: root}
    if not root.is_dir():
        return {}
    found = {p.name: p for p in root.iterdir() if p.is_dir() and is_finished(p)}
    rank = {m: i for i, m in enumerate(MODES)}
    return {k: found[k] for k in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def is_private(metrics: Mapping) -> bool:
    """Whether the run was trained with differential privacy (its mode is DP-FedAvg)."""
    return metrics.get("mode") == DP_FEDAVG


def mode_label(mode: str) -> str:
    """Display name of a mode ("DP-FedAvg"); unknown names as they are."""
    return MODE_LABELS.get(mode, mode)


def privacy_label(metrics: Mapping) -> str:
    """The one privacy label: ``"ε=2.31, δ=1e-05"`` for a DP run, ``"not private"`` otherwise.

    ``"ε=∞"`` when a DP run has no finite ε; the mechanism's name is appended
    when the metrics record one (``metrics["mechanism"]["name"]``).
    """
    if not is_private(metrics):
        return "not private"
    eps, delta = _num(metrics.get("epsilon")), _num(metrics.get("delta"))
    if eps is None:
        label = "ε=∞"
    else:
        label = f"ε={eps:.2f}, δ={delta:.0e}" if delta is not None else f"ε={eps:.2f}"
    mech = metrics.get("mechanism")
    name = mech.get("name") if isinstance(mech, Mapping) else None
    return f"{label} ({name})" if isinstance(name, str) and name else label


def model_info(name: str, metrics: Mapping) -> dict:
    """Public, JSON-ready facts about a run (no training text, only aggregates)."""
    mode = str(metrics.get("mode", name))
    private = is_private({"mode": mode})
    return {
        "name": name,
        "mode": mode,
        "label": mode_label(mode),
        "private": private,
        "epsilon": _num(metrics.get("epsilon")) if private else None,
        "delta": _num(metrics.get("delta")) if private else None,
        "privacy": privacy_label({**metrics, "mode": mode}),
        "top1": _num(metrics.get("top1")),
        "top3": _num(metrics.get("top3")),
        "ksr": _num(metrics.get("ksr")),
        "params": metrics.get("params") if isinstance(metrics.get("params"), int) else None,
    }


def load_suggester(run_dir: str | Path):
    """``(Suggester, metrics)`` of a finished run (JAX); :class:`RunNotFound` if it is not one."""
    import dataclasses

    import jax

    from keyboard_fl import checkpoint
    from keyboard_fl.models import ModelConfig, init_params
    from keyboard_fl.suggest import Suggester
    from keyboard_fl.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    try:
        model = json.loads(cfg_path.read_text()).get("model", {})
        model_cfg = ModelConfig(**model)
    except (OSError, json.JSONDecodeError, TypeError, AttributeError) as e:
        raise ValueError(f"{cfg_path}: cannot read the model configuration ({type(e).__name__}: {e})") from None
    tok = Tokenizer.load(run_dir / TOKENIZER_FILE)
    graphdef, template = init_params(dataclasses.replace(model_cfg, vocab_size=tok.vocab_size), jax.random.key(0))
    found = checkpoint.load_latest(run_dir / MODEL_DIR, template)
    if found is None:
        raise RunNotFound(f"{run_dir / MODEL_DIR}: no usable model checkpoint")
    return Suggester(graphdef, found[1], tok), metrics


def export_onnx(run_dir: str | Path, out_dir: str | Path | None = None, *, quantize: bool = True) -> dict:
    """Export a finished run to ONNX in ``out_dir`` (default ``<run>/export``); returns the manifest."""
    from keyboard_fl.export.onnx_export import ACCOUNTING_KEYS, export_run

    run_dir = Path(run_dir)
    suggester, metrics = load_suggester(run_dir)
    model_cfg = json.loads((run_dir / CONFIG_FILE).read_text()).get("model", {})
    info = model_info(run_dir.name, metrics) | {
        "model_config": model_cfg,
        "accounting": {k: metrics[k] for k in ACCOUNTING_KEYS if k in metrics},
    }
    out = Path(out_dir) if out_dir is not None else run_dir / EXPORT_DIR
    return export_run(suggester.graphdef, suggester.params, suggester.tokenizer, info, out,
                      search=suggester.config, quantize=quantize)
