"""Atomic, verified checkpoints of pytrees plus JSON metadata.

A checkpoint is two files, ``ckpt-000100.npz`` (the leaves of a pytree, in
``jax.tree`` order) and ``ckpt-000100.json`` (metadata: the round, the privacy
ledger, the sha256 and shapes of the npz). Each is written to a temporary file
and renamed into place, the JSON last, so a crash leaves either the previous
checkpoint or a complete new one, never half a file. Loading checks the
sha256 and every leaf's shape and dtype against a template; a damaged
checkpoint is reported and the newest good one is used instead. Temporary
files left by a writer that was killed mid-write are removed by the next save.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

_NAME = re.compile(r"ckpt-(\d{6,})\.json$")
_TEMP = re.compile(r"\.ckpt-\d{6,}\.(?:json|npz)\.tmp-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the file and the reason."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete checkpoint temp files whose writer process is gone (killed mid-write); return them."""
    removed = []
    for p in Path(directory).iterdir():
        m = _TEMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save(directory: str | Path, step: int, tree: Any, meta: dict[str, Any], *, keep: int = 3) -> Path:
    """Write checkpoint ``step`` of ``tree`` with ``meta``; keep the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory)
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    buf = io.BytesIO()
    np.savez(buf, *leaves)
    data = buf.getvalue()
    stem = f"ckpt-{step:06d}"
    atomic_write_bytes(directory / f"{stem}.npz", data)
    record = {
        "step": step,
        "sha256": hashlib.sha256(data).hexdigest(),
        "leaves": [[list(x.shape), str(x.dtype)] for x in leaves],
        "meta": meta,
    }
    atomic_write_text(directory / f"{stem}.json", json.dumps(record, indent=1, sort_keys=True))
    for old in list_steps(directory)[:-keep]:
        for suffix in (".json", ".npz"):
            (directory / f"ckpt-{old:06d}{suffix}").unlink(missing_ok=True)
    return directory / f"{stem}.json"


def list_steps(directory: str | Path) -> list[int]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def load(directory: str | Path, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """Checkpoint ``step`` as a pytree shaped like ``template``, and its meta."""
    directory = Path(directory)
    jpath, npath = directory / f"ckpt-{step:06d}.json", directory / f"ckpt-{step:06d}.npz"
    try:
        record = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{jpath}: unreadable checkpoint metadata ({e})") from None
    try:
        data = npath.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{npath}: missing checkpoint data ({e.strerror})") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise CheckpointError(f"{npath}: sha256 mismatch with {jpath.name} (truncated or corrupt file)")
    leaves_t, treedef = jax.tree.flatten(template)
    with np.load(io.BytesIO(data)) as z:
        leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    if len(leaves) != len(leaves_t):
        raise CheckpointError(f"{npath}: {len(leaves)} arrays, expected {len(leaves_t)} (different model config?)")
    for i, (a, t) in enumerate(zip(leaves, leaves_t)):
        if a.shape != np.shape(t) or a.dtype != np.asarray(t).dtype:
            raise CheckpointError(
                f"{npath}: array {i} has shape {a.shape} {a.dtype}, expected {np.shape(t)} {np.asarray(t).dtype}"
            )
    return jax.tree.unflatten(treedef, leaves), record["meta"]


def load_latest(
    directory: str | Path, template: Any, errors: list[str] | None = None
) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest checkpoint that verifies; damaged newer ones are skipped with a warning
    (and their reasons appended to ``errors``)."""
    for step in reversed(list_steps(directory)):
        try:
            tree, meta = load(directory, step, template)
            return step, tree, meta
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
            if errors is not None:
                errors.append(str(e))
    return None


def newest_meta(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(metadata file, ``meta``) of the newest checkpoint whose metadata reads (its data is not verified here)."""
    for step in reversed(list_steps(directory)):
        path = Path(directory) / f"ckpt-{step:06d}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("meta"), dict):
            return path, record["meta"]
    return None
