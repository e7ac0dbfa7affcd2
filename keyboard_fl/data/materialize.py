"""Write any ``UserSource`` to JSONL files plus a ``manifest.json``, and read them back.

Layout of a materialised population::

    out_dir/train.jsonl      train users' training messages
    out_dir/test.jsonl       train users' held-out last messages
    out_dir/heldout.jsonl    held-out users (all messages)
    out_dir/public.jsonl     public users (all messages)
    out_dir/manifest.json    source description, counts and sha256 of each file

One ``{"user_id": ..., "text": ...}`` per line, users in source order, each
user's messages in time order. Output is deterministic (same source, same
bytes) and written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..text import words
from .corpus import JsonlCorpus, ReaderConfig
from .splits import SPLITS, Split, SplitConfig, User, UserSource

FILES: dict[str, tuple[Split, str]] = {  # file stem -> (split, User field)
    "train": ("train", "train"),
    "test": ("train", "test"),
    "heldout": ("heldout", "test"),
    "public": ("public", "train"),
}


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``path`` atomically; return the sha256 hex digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                h.update(c)
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return h.hexdigest()


def materialize(source: UserSource, out_dir: str | Path, splits: Iterable[Split] = SPLITS) -> dict:
    """Write the chosen splits of ``source`` under ``out_dir``; return the manifest."""
    out = Path(out_dir)
    splits = tuple(splits)
    files: dict[str, dict] = {}
    for stem, (split, field) in FILES.items():
        if split not in splits:
            continue
        counts = {"users": 0, "messages": 0, "words": 0}

        def lines() -> Iterator[bytes]:
            for u in source.users(split):  # streamed: the train split is read twice  # noqa: B023 (used within this iteration)
                msgs = getattr(u, field)  # noqa: B023 (used within this iteration)
                if msgs:
                    counts["users"] += 1  # noqa: B023 (used within this iteration)
                for m in msgs:
                    counts["messages"] += 1  # noqa: B023 (used within this iteration)
                    counts["words"] += len(words(m))  # noqa: B023 (used within this iteration)
                    yield (json.dumps({"user_id": u.user_id, "text": m}, ensure_ascii=False) + "\n").encode("utf-8")

        digest = _atomic_write(out / f"{stem}.jsonl", lines())
        files[stem] = {"path": f"{stem}.jsonl", "split": split, **counts, "sha256": digest}
    manifest = {"format": "keyboard_fl.materialized/1", "source": source.describe(), "files": files}
    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    _atomic_write(out / "manifest.json", [data])
    return manifest


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class MaterializedSource:
    """A ``UserSource`` over a directory written by :func:`materialize` (exact splits)."""

    def __init__(self, directory: str | Path, verify: bool = False) -> None:
        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / "manifest.json").read_text(encoding="utf-8"))
        if verify:
            for _stem, info in self.manifest["files"].items():
                got = file_sha256(self.directory / info["path"])
                if got != info["sha256"]:
                    raise ValueError(f"{self.directory / info['path']}: sha256 {got} != manifest {info['sha256']}")

    def _groups(self, stem: str) -> Iterator[tuple[str, tuple[str, ...]]]:
        if stem not in self.manifest["files"]:
            return
        # every user of the file goes to "public" when public_fraction is 1
        r = JsonlCorpus(
            self.directory / f"{stem}.jsonl", ReaderConfig(split=SplitConfig(public_fraction=1.0, heldout_fraction=0.0))
        )
        for u in r.users("public"):
            yield u.user_id, u.train

    def users(self, split: Split) -> Iterator[User]:
        if split == "train":
            test = dict(self._groups("test"))
            for uid, msgs in self._groups("train"):
                yield User(uid, msgs, test.get(uid, ()))
        elif split == "heldout":
            for uid, msgs in self._groups("heldout"):
                yield User(uid, (), msgs)
        elif split == "public":
            for uid, msgs in self._groups("public"):
                yield User(uid, msgs, ())
        else:
            raise ValueError(f"unknown split {split!r}")

    def _index(self, stem: str):
        from .corpus import BadLineReport, JsonlIndex

        if stem not in self.manifest["files"]:
            return None
        r = JsonlCorpus(
            self.directory / f"{stem}.jsonl", ReaderConfig(split=SplitConfig(public_fraction=1.0, heldout_fraction=0.0))
        )
        return JsonlIndex.build(r, "public", BadLineReport())

    def split_view(self, split: Split):
        """``split``'s users by index from byte-offset indexes of the files (text read per user)."""
        from .access import FunctionView

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        idx = self._index(split)
        if idx is None:
            return FunctionView(0, lambda i: None, lambda i: "")
        test = self._index("test") if split == "train" else None
        where = test.index_of() if test is not None else {}

        def user(i: int) -> User:
            uid, msgs = idx.user_id(i), tuple(idx.messages(i))
            if split == "train":
                j = where.get(uid)
                return User(uid, msgs, tuple(test.messages(j)) if j is not None else ())
            return User(uid, (), msgs) if split == "heldout" else User(uid, msgs, ())

        return FunctionView(len(idx), user, idx.user_id)

    def num_users(self, split: Split) -> int:
        stem = {"train": "train", "heldout": "heldout", "public": "public"}[split]
        return int(self.manifest["files"].get(stem, {}).get("users", 0))

    def describe(self) -> dict:
        return {
            "kind": "materialized",
            "path": str(self.directory),
            "source": self.manifest["source"],
            "seed": self.manifest["source"].get("seed"),
        }


def open_source(path: str | Path, config: ReaderConfig = ReaderConfig()) -> UserSource:
    """A ``UserSource`` for ``path``: a materialised directory (has ``manifest.json``),
    a directory of per-user text files, or a JSONL file."""
    p = Path(path)
    if p.is_dir():
        if (p / "manifest.json").is_file():
            return MaterializedSource(p)
        from .corpus import DirectoryCorpus

        return DirectoryCorpus(p, config)
    if p.is_file():
        return JsonlCorpus(p, config)
    raise FileNotFoundError(f"{p}: no such corpus file or directory")
