"""Find trained runs on disk and load their suggestion models (CLI, demo, benchmarks).

A *finished run* is a directory holding ``metrics.json`` and ``model/`` (see
:mod:`keyboard_fl.train.run`). :func:`load_run` turns one into a
:class:`LoadedRun`: a ready :class:`~keyboard_fl.suggest.Suggester` plus the
public facts a user must see beside the model (mode, ε/δ, quality).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

MODE_LABELS = {"central": "Central", "fedavg": "FedAvg", "dp-fedavg": "DP-FedAvg"}
MODE_ORDER = ("central", "fedavg", "dp-fedavg")


class RunNotFound(FileNotFoundError):
    """The directory is not a finished run (no metrics.json or no model/)."""


def is_finished_run(path: Path) -> bool:
    return (path / "metrics.json").is_file() and (path / "model").is_dir()


def discover_runs(root: str | Path) -> dict[str, Path]:
    """Finished runs under ``root``, by directory name (``root`` itself if it is one).

    Ordered central, FedAvg, DP-FedAvg first (by directory name), then the rest
    alphabetically.
    """
    root = Path(root)
    if is_finished_run(root):
        return {root.name: root}
    if not root.is_dir():
        return {}
    found = {p.name: p for p in root.iterdir() if p.is_dir() and is_finished_run(p)}
    rank = {m: i for i, m in enumerate(MODE_ORDER)}
    return {k: found[k] for k in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def privacy_label(metrics: dict) -> str:
    """``"ε=2.31, δ=1e-05"`` for a DP run, ``"not private"`` otherwise."""
    if metrics.get("mode") != "dp-fedavg":
        return "not private"
    eps, delta = _num(metrics.get("epsilon")), _num(metrics.get("delta"))
    if eps is None:
        return "ε=∞"
    return f"ε={eps:.2f}, δ={delta:.0e}" if delta is not None else f"ε={eps:.2f}"


def model_info(name: str, metrics: dict) -> dict:
    """Public, JSON-ready facts about a run (no training text, only aggregates)."""
    mode = str(metrics.get("mode", name))
    private = mode == "dp-fedavg"
    return {
        "name": name,
        "mode": mode,
        "label": MODE_LABELS.get(mode, mode),
        "private": private,
        "epsilon": _num(metrics.get("epsilon")) if private else None,
        "delta": _num(metrics.get("delta")) if private else None,
        "privacy": privacy_label(metrics),
        "top1": _num(metrics.get("top1")),
        "top3": _num(metrics.get("top3")),
        "ksr": _num(metrics.get("ksr")),
        "params": metrics.get("params") if isinstance(metrics.get("params"), int) else None,
    }


@dataclasses.dataclass
class LoadedRun:
    name: str
    path: Path
    suggester: Any  # keyboard_fl.suggest.Suggester
    metrics: dict

    @property
    def info(self) -> dict:
        return model_info(self.name, self.metrics)


def load_suggester(run_dir: str | Path):
    """``(Suggester, metrics)`` of a finished run; :class:`RunNotFound` if it is not one."""
    import jax

    from keyboard_fl import checkpoint
    from keyboard_fl.config import RunConfig
    from keyboard_fl.models import init_params
    from keyboard_fl.suggest import Suggester
    from keyboard_fl.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise RunNotFound(
            f"{run_dir} holds no finished run (no metrics.json); train one with keyboard-fl train --out {run_dir}"
        )
    cfg = RunConfig.load(run_dir / "config.json")
    tok = Tokenizer.load(run_dir / "tokenizer.model")
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, template = init_params(model_cfg, jax.random.key(0))
    found = checkpoint.load_latest(run_dir / "model", template)
    if found is None:
        raise RunNotFound(f"{run_dir / 'model'}: no usable model checkpoint")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    from keyboard_fl.dictionary import run_dictionary

    return Suggester(graphdef, found[1], tok, dictionary=run_dictionary(run_dir)), metrics


def load_run(run_dir: str | Path, name: str | None = None, *, backend: str = "jax") -> LoadedRun:
    """A finished run with its suggester: JAX (``"jax"``) or its int8 ONNX export (``"onnx"``).

    The ONNX export is written under ``run_dir/export`` the first time it is needed.
    """
    run_dir = Path(run_dir)
    if backend == "onnx":
        from keyboard_fl.export import OnnxSuggester, export_run

        if not (run_dir / "export" / "manifest.json").exists():
            export_run(run_dir)
        _, metrics = load_suggester(run_dir)
        from keyboard_fl.dictionary import run_dictionary

        onnx_s = OnnxSuggester(run_dir / "export", int8=True, dictionary=run_dictionary(run_dir))  # also for older exports
        return LoadedRun(name or run_dir.name, run_dir, onnx_s, metrics)
    if backend != "jax":
        raise ValueError(f"backend must be 'jax' or 'onnx', got {backend!r}")
    suggester, metrics = load_suggester(run_dir)
    return LoadedRun(name or run_dir.name, run_dir, suggester, metrics)


__all__ = [
    "LoadedRun", "RunNotFound", "discover_runs", "is_finished_run", "load_run", "load_suggester",
    "model_info", "privacy_label",
]
