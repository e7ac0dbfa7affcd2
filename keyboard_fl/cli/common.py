"""The ``keyboard-fl`` Typer app and what every command shares: consoles, the
user-error guard, config resolution, shared options and log lines.

User errors (bad config, bad corpus line, missing run) print one clear red
line and exit with status 2; they never show a Python traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from keyboard_fl import runs as run_dirs
from keyboard_fl.tables import audit_table

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="A private phone keyboard: federated, differentially private next-word prediction.",
)
console = Console()
err = Console(stderr=True)

MAIN_DIR = Path("runs/main")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError)


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)  # one line, never wrapped at 80 columns
    raise typer.Exit(2)


def _guard(fn):
    """Turn user errors into one clear line (set KEYBOARD_FL_DEBUG=1 for tracebacks)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except typer.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary
            from keyboard_fl.checkpoint import CheckpointError

            known = USER_ERRORS + (CheckpointError,)
            try:
                from keyboard_fl.data import CorpusError

                known = known + (CorpusError,)
            except ImportError:
                pass
            if os.environ.get("KEYBOARD_FL_DEBUG") or not isinstance(e, known):
                raise
            _fail(str(e))

    return wrapper


def _config(
    preset: str,
    mode: str,
    seed: int,
    config_file: Optional[Path] = None,
    sets=(),
    users: Optional[int] = None,
    **overrides,
):
    """The preset, then the --config file, then the dedicated flags (--users, federated.*), then each --set, in order."""
    from keyboard_fl.config import PRESETS
    from keyboard_fl.config import preset as make_preset
    from keyboard_fl.overrides import resolve

    if preset not in PRESETS:
        _fail(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if users is not None and users < 1:
        _fail(f"--users must be ≥ 1, got {users}")
    flags = [f"population.num_train_users={users}"] if users is not None else []
    flags += [f"federated.{k}={json.dumps(v)}" for k, v in overrides.items() if v is not None]
    return resolve(make_preset(preset, mode=mode, seed=seed), config_file=config_file, sets=[*flags, *sets])


def _preset_for(preset: Optional[str], corpus: Optional[str]) -> str:
    """``--preset`` as given, else ``corpus`` (the real-text recipe) with ``--corpus`` and ``default`` without."""
    return preset if preset is not None else ("corpus" if corpus else "default")


def _with_data(cfg, corpus: Optional[str], public_corpus: Optional[str], skip_bad_lines: bool, users: Optional[int]):
    """``cfg`` reading ``--corpus`` (a shipped corpus's name, a JSONL file or a directory) and ``--public-corpus``."""
    import dataclasses

    from keyboard_fl.sources import SIMULATOR, check_corpus_spec

    if corpus is not None:
        if users is not None:
            _fail("--users sets the simulated population; a --corpus brings its own users")
        cfg = dataclasses.replace(cfg, corpus=check_corpus_spec(corpus), skip_bad_lines=skip_bad_lines)
    if public_corpus is not None:
        spec = public_corpus if public_corpus == SIMULATOR else check_corpus_spec(public_corpus, "--public-corpus")
        cfg = dataclasses.replace(cfg, public_corpus=spec)
    return cfg


PRESET_OPTION = typer.Option(
    None, "--preset", help="tiny, default, corpus or large (unset: corpus with --corpus, else default)"
)
CORPUS_OPTION = typer.Option(
    None,
    "--corpus",
    help="real users instead of the simulator: a shipped corpus by name (chitchat; the `corpus` extra), "
    "a JSONL file ({user_id, text} per line) or a directory of per-user text files",
)
PUBLIC_CORPUS_OPTION = typer.Option(
    None,
    "--public-corpus",
    help="public text for the tokenizer and pretraining: 'simulator' (its public register), a corpus name, "
    "FILE or DIR (every user public); unset: the corpus's own public split (~10% of its users)",
)
SKIP_BAD_LINES_OPTION = typer.Option(
    False, "--skip-bad-lines", help="skip and count malformed corpus lines instead of stopping"
)
CONFIG_OPTION = typer.Option(None, "--config", help="a full or partial RunConfig JSON file laid over the preset")
SET_OPTION = typer.Option([], "--set", help="section.field=value (repeatable), e.g. federated.local_epochs=2")
USERS_OPTION = typer.Option(
    None, "--users", help="training users N of the simulated population (default preset: 1,000,000, streamed)"
)


def _log(msg: str) -> None:
    console.print(f"[dim]·[/] {msg}", highlight=False)


def _audit_table(runs: list[Path]) -> Table:
    """Audit each run (results saved in its metrics.json) and tabulate exposure and completion."""
    from keyboard_fl.audit import audit_run

    return audit_table({str(d.name): (audit_run(d), run_dirs.load_metrics(d)) for d in runs})


def _trained_with(run_dir: Path, section: str) -> bool:
    """Whether the run's config.json has ``section`` set (canaries, canary_clients, phrase_canaries)."""
    import json

    path = run_dir / run_dirs.CONFIG_FILE
    return path.exists() and json.loads(path.read_text()).get(section) is not None


def _empirical_audits(runs: list[Path]) -> dict[str, dict]:
    """The empirical-ε audits (canary clients, planted phrases) of the runs trained for them, saved in metrics.json."""
    from keyboard_fl.empirical_audit import empirical_audit_run
    from keyboard_fl.phrase_audit import phrase_audit_run

    out = {}
    for d in runs:
        a = {}
        if _trained_with(d, "canary_clients"):
            a["empirical"] = empirical_audit_run(d)
        if _trained_with(d, "phrase_canaries"):
            a["phrases"] = phrase_audit_run(d)
        if a:
            out[d.name] = a
    return out
