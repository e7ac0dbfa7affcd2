"""Regenerate the executed notebooks (``NN_*.ipynb``) from their jupytext sources (``NN_*.py``).

    .venv/bin/python notebooks/build.py                 # all notebooks, preset from $KEYBOARD_FL_NOTEBOOK_PRESET (default full)
    .venv/bin/python notebooks/build.py --preset tiny 02_federated_training
    .venv/bin/python notebooks/build.py --check         # only check that every .ipynb matches its .py (no execution)

The ``.py`` files (jupytext percent format) are the source of truth; the ``.ipynb``
files are outputs, committed so that a reader browsing the repository sees results.
Notebooks run with the ``python3`` kernel of the current interpreter (ipykernel's
kernelspec under ``sys.prefix``), with the notebooks folder as working directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRESET_ENV = "KEYBOARD_FL_NOTEBOOK_PRESET"


def sources(names: list[str] | None = None) -> list[Path]:
    """The notebook sources ``NN_*.py`` (sorted), optionally only those whose stem starts with one of ``names``."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if names:
        found = [p for p in found if any(p.stem == n or p.stem.startswith(n) for n in names)]
    return found


def read_source(py: Path):
    """The notebook (nbformat v4, no outputs) of a jupytext ``.py`` source."""
    import jupytext

    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def code_cells(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def execute(nb, cwd: Path, timeout: int = 600):
    """Execute ``nb`` in place with nbclient (raises ``CellExecutionError`` on the first failing cell)."""
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def build(py: Path, out: Path, *, timeout: int = 600, run: bool = True) -> float:
    """Convert ``py`` to ``out`` (.ipynb), executed unless ``run`` is False; returns seconds taken."""
    import nbformat

    t = time.perf_counter()
    nb = read_source(py)
    if run:
        execute(nb, py.parent, timeout)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, out)
    return time.perf_counter() - t


def out_of_sync(py: Path) -> str | None:
    """Why ``py``'s committed ``.ipynb`` differs from it (code cells), or None."""
    import nbformat

    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        return f"{ipynb.name} is missing"
    a, b = code_cells(read_source(py)), code_cells(nbformat.read(ipynb, as_version=4))
    if a != b:
        diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return f"{ipynb.name}: code cell {diff + 1} differs from {py.name} ({len(a)} vs {len(b)} code cells)"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebooks to build (stem or prefix, e.g. 02); default all")
    ap.add_argument("--preset", choices=("full", "tiny"), help=f"sets ${PRESET_ENV} (default: the environment's, else full)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--no-execute", action="store_true", help="write the .ipynb without running it")
    ap.add_argument("--check", action="store_true", help="only check that each .ipynb has its .py's code cells")
    args = ap.parse_args(argv)
    pys = sources(args.names)
    if not pys:
        print("no notebook sources matched", file=sys.stderr)
        return 2
    if args.check:
        bad = [r for r in (out_of_sync(p) for p in pys) if r]
        for r in bad:
            print(r, file=sys.stderr)
        return 1 if bad else 0
    if args.preset:
        os.environ[PRESET_ENV] = args.preset
    for py in pys:
        secs = build(py, py.with_suffix(".ipynb"), timeout=args.timeout, run=not args.no_execute)
        print(f"{py.with_suffix('.ipynb').name}: {'executed' if not args.no_execute else 'written'} in {secs:.0f}s "
              f"(preset {os.environ.get(PRESET_ENV, 'full')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
