"""The notebooks under notebooks/: each runs end to end on the tiny preset, and each .ipynb matches its .py source."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TIMEOUT_S = 240  # per cell; a whole tiny notebook takes seconds to ~1 minute on 2 cores


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _build_module()
SOURCES = build.sources()


def test_there_are_notebooks():
    stems = [p.stem for p in SOURCES]
    for want in ("01_meet_the_users", "02_federated_training", "03_privacy_utility", "04_private_suggestions"):
        assert want in stems


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_in_sync_with_source(py):
    assert build.out_of_sync(py) is None, build.out_of_sync(py)


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_ipynb_is_executed(py):
    import nbformat

    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{py.stem}.ipynb has unexecuted cells"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{py.stem}.ipynb was committed with an error output"


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One directory of tiny runs shared by the notebooks (02 trains them, 03 and 04 reuse them)."""
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.slow
@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_executes_on_tiny_preset(py, tmp_path, shared_runs, monkeypatch):
    monkeypatch.setenv("KEYBOARD_FL_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("KEYBOARD_FL_NOTEBOOK_RUNS", str(shared_runs))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "notebooks"
    work.mkdir()
    src = work / py.name
    shutil.copy(py, src)  # run a temp copy: the committed .ipynb is never touched
    committed = py.with_suffix(".ipynb")
    before = committed.stat().st_mtime_ns if committed.exists() else None
    t = time.perf_counter()
    build.build(src, work / f"{py.stem}.ipynb", timeout=TIMEOUT_S)  # raises CellExecutionError on any error
    assert time.perf_counter() - t < 600
    import nbformat

    nb = nbformat.read(work / f"{py.stem}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if py.stem != "04_private_suggestions":
        assert any("image/png" in o.get("data", {}) for o in outputs), "expected at least one figure"
    assert any("text/markdown" in o.get("data", {}) for o in outputs), "expected at least one table"
    if before is not None:
        assert committed.stat().st_mtime_ns == before
