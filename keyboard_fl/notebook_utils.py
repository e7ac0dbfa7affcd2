"""Helpers for the notebooks under ``notebooks/`` (no logic lives only in a notebook).

The notebooks read one parameter, the environment variable
``KEYBOARD_FL_NOTEBOOK_PRESET``:

- ``full`` (default): use the README main job's runs in ``runs/main/{central,fedavg,dp-fedavg}``
  when they are finished, else train the ``default`` preset into ``runs/notebooks/default``;
- ``tiny`` (CI): train ``tiny``-preset runs (seconds each) into a temporary directory,
  ``$KEYBOARD_FL_NOTEBOOK_RUNS`` if set (so several notebooks share them), else
  ``<tmp>/keyboard_fl_notebooks_tiny``.

Everything here returns plain data or matplotlib figures; tables are rendered as
Markdown (pandas is not a dependency).
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The figures (and show()) live in keyboard_fl.notebook_plots.
from keyboard_fl.notebook_plots import plot_learning_curves, plot_per_user_hist, plot_privacy_utility, show  # noqa: F401

# Run directories, modes and labels come from keyboard_fl.runs (re-exported here for the notebooks).
from keyboard_fl.runs import (  # noqa: F401
    CENTRAL,
    CONFIG_FILE,
    DP_FEDAVG,
    FEDAVG,
    MODES,
    is_finished,
    load_history,
    load_metrics,
    mode_label,
    privacy_label,
)

PRESET_ENV = "KEYBOARD_FL_NOTEBOOK_PRESET"
RUNS_ENV = "KEYBOARD_FL_NOTEBOOK_RUNS"
NOTEBOOK_PRESETS = ("full", "tiny")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def quiet_logs() -> None:
    """Silence absl's RDP convergence warnings (the RDP cross-check drops those orders; PLD is the reported ε)."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


def notebook_preset() -> str:
    """The notebooks' parameter: ``full`` (default) or ``tiny``, from ``$KEYBOARD_FL_NOTEBOOK_PRESET``."""
    name = os.environ.get(PRESET_ENV, "full").strip().lower() or "full"
    if name not in NOTEBOOK_PRESETS:
        raise ValueError(f"{PRESET_ENV}={name!r}: choose one of {', '.join(NOTEBOOK_PRESETS)}")
    return name


def training_preset(notebook: str) -> str:
    """The ``keyboard_fl.config.preset`` name a notebook preset trains with."""
    return "tiny" if notebook == "tiny" else "default"


def scratch_dir(notebook: str) -> Path:
    """Where a notebook trains runs of its own."""
    if notebook == "tiny":
        d = Path(os.environ.get(RUNS_ENV) or Path(tempfile.gettempdir()) / "keyboard_fl_notebooks_tiny")
    else:
        d = repo_root() / "runs" / "notebooks" / "default"
    d.mkdir(parents=True, exist_ok=True)
    return d


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (for tables), else as is."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def ensure_run(cfg, out: Path, log: Callable[[str], None] = lambda s: None) -> dict:
    """Metrics of the finished run in ``out``, training it with ``cfg`` first if needed."""
    from keyboard_fl.train.run import run

    out = Path(out)
    if is_finished(out):
        return load_metrics(out)
    if out.exists():  # an unfinished leftover: resume it
        return run(cfg, out, resume=True, log=log)
    return run(cfg, out, log=log)


def main_runs(notebook: str | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Path]:
    """``{mode: run_dir}`` for central, FedAvg and DP-FedAvg under the notebook preset (training what is missing)."""
    from keyboard_fl.config import preset

    notebook = notebook or notebook_preset()
    if notebook == "full":
        main = repo_root() / "runs" / "main"
        if all(is_finished(main / m) for m in MODES):
            return {m: main / m for m in MODES}
    root = scratch_dir(notebook)
    out = {}
    for mode in MODES:
        ensure_run(preset(training_preset(notebook), mode), root / mode, log)
        out[mode] = root / mode
    return out


def load_config(run_dir: str | Path):
    from keyboard_fl.config import RunConfig

    return RunConfig.load(Path(run_dir) / CONFIG_FILE)


# ---------------------------------------------------------------- tables


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not np.isfinite(v):
            return "∞" if v > 0 else ("—" if np.isnan(v) else "-∞")
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if v is None:
        return "—"
    return str(v).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (floats to 3 significant digits, None as —)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def show_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Display a Markdown table in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(headers, rows)))


def pct(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return f"{100 * x:.1f}%" if np.isfinite(x) else "—"


def results_rows(runs: Mapping[str, Path]) -> list[list[str]]:
    """One row per run: top-1, top-3, KSR, perplexity, per-user top-1 p10/median/p90, privacy."""
    rows = []
    for name, d in runs.items():
        m = load_metrics(d)
        pu = (m.get("heldout_users") or {}).get("per_user_top1") or {}
        rows.append(
            [
                mode_label(name),
                pct(m.get("top1")),
                pct(m.get("top3")),
                pct(m.get("ksr")),
                m.get("perplexity"),
                pct(pu.get("p10")),
                pct(pu.get("median")),
                pct(pu.get("p90")),
                privacy_label(m),
            ]
        )
    return rows


RESULTS_HEADERS = ["model", "top-1", "top-3", "KSR", "perplexity", "user p10", "user median", "user p90", "privacy"]


# ---------------------------------------------------------------- population


def message_counts(source, split: str = "train", max_users: int | None = None) -> list[int]:
    """Messages per user (train + test parts) of the first ``max_users`` users of a split."""
    out = []
    for i, u in enumerate(source.users(split)):
        if max_users is not None and i >= max_users:
            break
        out.append(len(u.train) + len(u.test))
    return out


def user_vocabularies(source, split: str = "train", max_users: int | None = None) -> dict[str, collections.Counter]:
    """``{user_id: Counter(word -> uses)}`` over all of each user's messages."""
    from keyboard_fl.text import words

    out = {}
    for i, u in enumerate(source.users(split)):
        if max_users is not None and i >= max_users:
            break
        c: collections.Counter = collections.Counter()
        for m in tuple(u.train) + tuple(u.test):
            c.update(words(m))
        out[u.user_id] = c
    return out


def jaccard_matrix(vocabs: Sequence[collections.Counter]) -> np.ndarray:
    """Pairwise Jaccard overlap of users' vocabularies (diagonal 1)."""
    sets = [set(v) for v in vocabs]
    n = len(sets)
    m = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            u = len(sets[i] | sets[j])
            m[i, j] = m[j, i] = len(sets[i] & sets[j]) / u if u else 0.0
    return m


def personal_words(vocabs: Mapping[str, collections.Counter], top: int = 5) -> dict[str, list[tuple[str, int]]]:
    """Each user's most used words that no other user (in ``vocabs``) uses."""
    users_of: collections.Counter = collections.Counter()
    for v in vocabs.values():
        users_of.update(set(v))
    return {uid: [(w, c) for w, c in v.most_common() if users_of[w] == 1][:top] for uid, v in vocabs.items()}


def users_per_word(vocabs: Mapping[str, collections.Counter]) -> list[int]:
    """For each distinct word, how many users use it."""
    users_of: collections.Counter = collections.Counter()
    for v in vocabs.values():
        users_of.update(set(v))
    return list(users_of.values())


# ---------------------------------------------------------------- per-user accuracy


def word_vocab(source, size: int | None = None) -> frozenset[str]:
    """The evaluation word vocabulary of a run: the most frequent words of the public split (as training uses)."""
    from keyboard_fl.text import words
    from keyboard_fl.train.run import WORD_VOCAB_SIZE

    c = collections.Counter(w for u in source.users("public") for m in u.train for w in words(m))
    return frozenset(w for w, _ in c.most_common(size or WORD_VOCAB_SIZE))


def heldout_messages(run_dir: str | Path, max_users: int | None = None, max_messages: int | None = None):
    """``(source, {user_id: messages})``: the run's held-out users, as its evaluation picks them."""
    from keyboard_fl.data import Population
    from keyboard_fl.train.rundata import eval_users

    cfg = load_config(run_dir)
    source = Population(cfg.population)
    users = eval_users(
        source.users("heldout"), max_users or cfg.eval.max_users, max_messages or cfg.eval.max_messages_per_user
    )
    return source, users


def per_user_top1(suggester, users: Mapping[str, Sequence[str]], vocab, min_targets: int = 1) -> dict[str, float]:
    """``{user_id: top-1}`` of a model (a ``Suggester``'s graphdef/params/tokenizer) on each user's messages."""
    from keyboard_fl.eval.metrics import TopKCounter
    from keyboard_fl.eval.neural import predict_messages

    ids, msgs = [], []
    for uid, ms in users.items():
        ids += [uid] * len(ms)
        msgs += list(ms)
    preds, _, _ = predict_messages(suggester.graphdef, suggester.params, suggester.tokenizer, msgs)
    counter = TopKCounter(vocab=vocab)
    for uid, per in zip(ids, preds):
        counter.add(uid, [p for _, p in per], [w for w, _ in per])
    return {uid: c.hits[1] / c.targets for uid, c in counter.per_user.items() if c.targets >= max(min_targets, 1)}


# ---------------------------------------------------------------- privacy sweep


PRIVACY_UTILITY_JSON = "benchmarks/results/privacy_utility.json"  # written by benchmarks/privacy_utility.py


def privacy_utility_results(path: str | Path | None = None) -> dict:
    """The full-size privacy–utility sweep (``benchmarks/privacy_utility.py``); {} when it was never run."""
    import json

    path = Path(path) if path else repo_root() / PRIVACY_UTILITY_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def privacy_utility_rows(results: Mapping) -> list[list[Any]]:
    """One row per (mechanism, ε) cell, then the non-private lines, for :func:`show_table`."""
    rows = []
    for mech, cells in sorted(results.get("private", {}).items()):
        for c in sorted(cells.values(), key=lambda c: c["epsilon"]):
            z = c.get("noise_multiplier")
            rows.append(
                [mech, c["epsilon"], z, pct(c.get("top1")), pct(c.get("top3")), pct(c.get("ksr")), c.get("perplexity")]
            )
    privacy = {"fedavg": "∞ (not private)", "public_only": "0 (no user data)"}
    for name, eps in privacy.items():
        r = results.get(name) or {}
        if r:
            rows.append(
                [name, eps, "—", pct(r.get("top1")), pct(r.get("top3")), pct(r.get("ksr")), r.get("perplexity")]
            )
    return rows


PRIVACY_UTILITY_HEADERS = ["mechanism", "ε", "noise z", "top-1", "top-3", "KSR", "perplexity"]


def noise_for_targets(
    mechanism: str,
    targets: Sequence[float],
    *,
    population: int,
    cohort: float,
    rounds: int,
    bands: int = 1,
    clip_norm: float = 0.5,
) -> list[dict]:
    """What each target ε needs from ``mechanism`` (calibrated as training does), without training."""
    from keyboard_fl.privacy import default_delta
    from keyboard_fl.privacy.report import build_mechanism, participation_for, privacy_report

    sampling = "cyclic" if mechanism.startswith("dp-ftrl") else "poisson"
    part = participation_for(sampling, cohort / population, population, bands if sampling == "cyclic" else 1)
    mech = build_mechanism(mechanism, part, rounds, clip_norm=clip_norm)
    return [privacy_report(mech, rounds, default_delta(population), target_epsilon=t)[1] for t in targets]


# ---------------------------------------------------------------- suggestions


def suggestion_rows(suggesters: Mapping[str, Any], texts: Sequence[str], k: int = 3) -> list[list[str]]:
    """One row per text: the text, then each model's ``k`` suggestions joined by " · "."""
    rows = []
    for t in texts:
        rows.append([repr(t)] + [" · ".join(s.suggest(t, k)) or "—" for s in suggesters.values()])
    return rows
