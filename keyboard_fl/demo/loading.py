"""Load the runs the demo serves, with the JAX or the ONNX (int8, onnxruntime) back-end.

A :class:`LoadedRun` is a ready :class:`~keyboard_fl.suggester.Suggester` plus
the public facts a user must see beside the model (:func:`keyboard_fl.runs.model_info`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from keyboard_fl import runs
from keyboard_fl.loading import export_onnx, load_suggester
from keyboard_fl.suggester import Suggester

BACKENDS = ("jax", "onnx")

__all__ = ["BACKENDS", "LoadedRun", "ensure_exports", "load_run", "load_runs"]


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


def load_runs(
    paths: Mapping[str, str | Path], *, backend: str = "jax", report: Callable[[str], object] = sys.stderr.write
) -> dict[str, LoadedRun]:
    """Every run of ``paths`` (name → directory) that loads; a broken one (a damaged or foreign
    file: tokenizer, checkpoint, config, metrics, export) is reported in one line naming the file
    and skipped, so one bad run does not take the others down."""
    loaded = {}
    for name, path in paths.items():
        try:
            loaded[name] = load_run(path, name, backend=backend)
        except Exception as e:  # noqa: BLE001 - reported, then skipped
            why = " ".join(str(e).split())  # one line, whatever the library wrote
            report(f"skipping run {path}: {type(e).__name__}: {why}\n")
    return loaded


def ensure_exports(served: Mapping[str, Path | LoadedRun]) -> None:
    """Export (``keyboard-fl export``) every run whose export lacks a file the page needs or is damaged.

    A failure is reported and the model stays server-only.
    """
    from keyboard_fl.loading import export_onnx

    for name, r in served.items():
        path = r.path if isinstance(r, LoadedRun) else Path(r)
        if _export_ok(path / runs.EXPORT_DIR):
            continue
        try:
            export_onnx(path)
        except Exception as e:  # noqa: BLE001 - that model stays server-only
            why = f"{type(e).__name__}: {e}"
            sys.stderr.write(f"model {name}: no on-device export ({why}); it runs on the server only\n")


def _export_ok(d: Path) -> bool:
    """The export has every file the page needs, and each matches the manifest's sha256."""
    from keyboard_fl.export.onnx_export import read_manifest

    if not all((d / f).is_file() for f in ("manifest.json", "model.onnx", "tokenizer.json", "words.txt")):
        return False
    try:
        read_manifest(d)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"{' '.join(str(e).split())}: exporting again\n")
        return False
    return True
