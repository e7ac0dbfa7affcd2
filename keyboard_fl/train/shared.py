"""What sibling runs share: results that are pure functions of part of the config, computed once.

The main job's three runs (and a sweep's many) train the same tokenizer on the
same public split and fit the same n-gram baseline on the same users. Each is
computed by the first run and cached beside the runs, under
``<out>/../.shared/<kind>-<hash>``, keyed by exactly the config fields it depends
on (as the public pretraining is, under ``.pretrained``). Every run directory
still holds its own copy (``tokenizer.model``; the n-gram figures in
``metrics.json``), so a run stays self-contained when the cache is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from keyboard_fl import checkpoint

SHARED_DIR = ".shared"

__all__ = ["SHARED_DIR", "cache_dir", "shared_file", "shared_json"]


def cache_dir(out: Path, kind: str, key: Sequence[Any]) -> Path:
    """``<out>/../.shared/<kind>-<hash of key>``: the cache of ``kind`` for runs beside ``out``."""
    digest = hashlib.sha256(json.dumps([kind, *key], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(out).parent / SHARED_DIR / f"{kind}-{digest}"


def shared_json(out: Path, kind: str, key: Sequence[Any], compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``compute()``, or the result a sibling run cached for the same key; ``(result, reused)``."""
    path = cache_dir(out, kind, key) / f"{kind}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text()), True
        except json.JSONDecodeError:  # a torn write from a killed run: recompute and overwrite
            pass
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_text(path, json.dumps(result, sort_keys=True))
    return result, False


def shared_file(out: Path, kind: str, key: Sequence[Any], dest: Path, make: Callable[[Path], None]) -> bool:
    """Write ``dest`` by copying a sibling's cached file, or with ``make(dest)`` and cache it; True if reused."""
    cached = cache_dir(out, kind, key) / dest.name
    if cached.is_file():
        shutil.copyfile(cached, dest)
        return True
    make(dest)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    shutil.copyfile(dest, tmp)
    os.replace(tmp, cached)  # atomic: a sibling never reads half a file
    return False
