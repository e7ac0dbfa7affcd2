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
    <run>/canary_iterates/     released parameters after each round, with canary clients (ITERATES_DIR)
    <root>/.pretrained/<hash>/ public pretraining shared by sibling runs (PRETRAINED_DIR)
    <root>/summary.json        the main job's three runs side by side (SUMMARY_FILE)

This module owns those names, :func:`is_finished`, :func:`load_metrics`, the
mode names (``central``, ``fedavg``, ``dp-fedavg``) and labels, and the one
privacy label (:func:`privacy_label`) shown by the CLI, the demo and the
notebooks. It imports nothing else of the package (the config imports its
mode names). Loading a run's model is :mod:`keyboard_fl.loading`; the ONNX
back-end is loaded beside the demo (:mod:`keyboard_fl.demo.loading`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "metrics.jsonl"
TOKENIZER_FILE = "tokenizer.model"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "export"
ITERATES_DIR = "canary_iterates"
CURVE_FILE = "learning_curve.png"
PRETRAINED_DIR = ".pretrained"
SUMMARY_FILE = "summary.json"

CENTRAL = "central"  # pooled, non-private, non-federated baseline
FEDAVG = "fedavg"  # federated averaging, no privacy
DP_FEDAVG = "dp-fedavg"  # user-level DP-FedAvg (clip, Gaussian noise, fixed denominator)
MODES: tuple[str, ...] = (CENTRAL, FEDAVG, DP_FEDAVG)
MODE_LABELS = {CENTRAL: "Central", FEDAVG: "FedAvg", DP_FEDAVG: "DP-FedAvg"}

__all__ = [
    "CENTRAL",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "CURVE_FILE",
    "DP_FEDAVG",
    "EXPORT_DIR",
    "FEDAVG",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_DIR",
    "MODES",
    "MODE_LABELS",
    "PRETRAINED_DIR",
    "RunNotFound",
    "SUMMARY_FILE",
    "TOKENIZER_FILE",
    "discover_runs",
    "is_finished",
    "is_private",
    "load_history",
    "load_metrics",
    "mode_label",
    "model_info",
    "privacy_label",
    "read_json_object",
]


class RunNotFound(FileNotFoundError):
    """The directory is not a finished run (no metrics.json or no model/)."""


def is_finished(run_dir: str | Path) -> bool:
    """A finished run has its final metrics and model."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).is_file() and (run_dir / MODEL_DIR).is_dir()


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """The JSON object in ``path``; a ValueError naming the file (and line) when it is empty, truncated,
    not UTF-8, not JSON or not an object — a damaged or foreign file."""
    path = Path(path)
    try:
        data = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte {e.start}; corrupt file?)") from None
    if not data.strip():
        raise ValueError(f"{path}: {what} is empty (truncated write?)")
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: {what} is not valid JSON ({e.msg}; truncated or corrupt?)") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(obj).__name__}")
    return obj


def load_metrics(run_dir: str | Path) -> dict:
    """The run's final ``metrics.json``; :class:`RunNotFound` (naming the file) when it is missing,
    a ValueError naming it when it is damaged or from another version (no known ``mode``)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunNotFound(
            f"{run_dir} holds no finished run (no {METRICS_FILE}); train one with keyboard-fl train --out {run_dir}"
        )
    metrics = read_json_object(path, "metrics file")
    if metrics.get("mode") not in MODES:
        raise ValueError(
            f"{path}: 'mode' is {str(metrics.get('mode'))[:40]!r}, expected one of {', '.join(MODES)} "
            "(written by another version?)"
        )
    return metrics


def load_history(run_dir: str | Path) -> list[dict]:
    """The records logged during a federated run (``metrics.jsonl``: every round, quick evaluations every
    ``eval_every``); [] for central runs."""
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
        "empirical": _empirical(metrics),
    }


def _empirical(metrics: Mapping) -> dict | None:
    """The final model's measured privacy (``keyboard-fl audit`` with canary clients), if audited."""
    audit = metrics.get("audit")
    emp = audit.get("empirical") if isinstance(audit, dict) else None
    final = emp.get("final_model") if isinstance(emp, dict) else None
    if not isinstance(final, dict):
        return None
    return {
        "epsilon_est": _num(final.get("epsilon_est")),
        "epsilon_lower": _num(final.get("epsilon_lower")),
        "confidence": _num(final.get("confidence")),
        "accounted_epsilon": _num(emp.get("accounted_epsilon")),
    }
