"""``python -m keyboard_fl.cli``: the same as ``keyboard-fl``."""

from keyboard_fl.cli import app

app()
