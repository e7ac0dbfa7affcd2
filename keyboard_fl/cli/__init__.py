"""``keyboard-fl``: the command line of the project (typer + rich).

The Typer ``app`` lives in :mod:`keyboard_fl.cli.common`; importing the command
modules registers their commands on it, in the order ``--help`` lists them.
User errors (bad config, bad corpus line, missing run) print one clear red
line and exit with status 2; they never show a Python traceback.
"""

from keyboard_fl.cli.common import MAIN_DIR, USER_ERRORS, app, console

# Registration order is the order of `keyboard-fl --help`: keep it, not alphabetical.
# isort: off
from keyboard_fl.cli import train  # noqa: F401  train, config, main
from keyboard_fl.cli import inspect  # noqa: F401  evaluate, suggest, predict, audit, demo, export
from keyboard_fl.cli import privacy  # noqa: F401  privacy
from keyboard_fl.cli import data  # noqa: F401  generate, stats, tokenizer
from keyboard_fl.cli import personal  # noqa: F401  personalize
# isort: on

__all__ = ["MAIN_DIR", "USER_ERRORS", "app", "console"]
