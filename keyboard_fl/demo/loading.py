"""Load the runs the demo serves, with the JAX or the ONNX (int8, onnxruntime) back-end.

A :class:`LoadedRun` is a ready :class:`~keyboard_fl.suggester.Suggester` plus
the public facts a user must see beside the model (:func:`keyboard_fl.runs.model_info`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from keyboard_fl import runs
from keyboard_fl.loading import export_onnx, load_suggester
from keyboard_fl.suggester import Suggester

BACKENDS = ("jax", "onnx")

__all__ = ["BACKENDS", "LoadedRun", "load_run"]


@dataclasses.dataclass
class LoadedRun:
    name: str
    path: Path
    suggester: Suggester
    metrics: dict

    @property
    def info(self) -> dict:
        return runs.model_info(self.name, self.metrics)


def load_run(run_dir: str | Path, name: str | None = None, *, backend: str = "jax") -> LoadedRun:
    """A finished run with its suggester: JAX (``"jax"``) or its int8 ONNX export (``"onnx"``).

    The ONNX export is written under ``<run>/export`` the first time it is needed.
    """
    run_dir = Path(run_dir)
    name = name or run_dir.name
    if backend == "onnx":
        from keyboard_fl.export.onnx_export import MANIFEST_NAME
        from keyboard_fl.export.runner import OnnxSuggester

        export_dir = run_dir / runs.EXPORT_DIR
        if not (export_dir / MANIFEST_NAME).exists():
            export_onnx(run_dir)
        from keyboard_fl.dictionary import run_dictionary

        onnx_s = OnnxSuggester(export_dir, int8=True, dictionary=run_dictionary(run_dir))  # also for older exports
        return LoadedRun(name, run_dir, onnx_s, runs.load_metrics(run_dir))
    if backend != "jax":
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    suggester, metrics = load_suggester(run_dir)
    return LoadedRun(name, run_dir, suggester, metrics)
