"""Terminal mode: the suggestion strip, live, while you type.

On a terminal the keys are read one at a time (raw mode) and the strip is
redrawn after every key press::

    1 you │ 2 your │ 3 yours
    > see yo▌

Keys: digits ``1``–``3`` accept a suggestion (replacing the word being typed,
or adding the next word, then a space), ``Tab`` accepts the first one,
``Backspace`` deletes, ``Ctrl-U`` clears the line, ``Enter`` ends the message,
``Ctrl-C`` or ``Ctrl-D`` quits. Digits 1–3 are therefore reserved for the
strip; other digits type normally.

When stdin is not a terminal (a pipe, a file), each input line is taken as the
text typed so far — a trailing space asks for the next word, otherwise the
last word is completed — and one strip is printed per line, its words joined
by ``" | "`` (an empty line when there is no suggestion).

Typed text stays in this process: nothing is logged or written anywhere.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import sys
from collections.abc import Sequence
from typing import IO

from keyboard_fl import text as text_lib
from keyboard_fl.suggester import Suggester

_TRAILING_CHUNK = re.compile(r"\S+$")


def match_case(typed: str, word: str) -> str:
    """Give ``word`` the capitalisation of the ``typed`` partial word (``Hel`` → ``Hello``)."""
    if not typed or not word:
        return word
    if len(typed) > 1 and typed.isupper():
        return word.upper()
    if typed[0].isupper():
        return word[0].upper() + word[1:]
    return word


def apply_suggestion(text: str, word: str) -> str:
    """The text after accepting ``word``, as a phone keyboard does it.

    Inside a word, ``word`` replaces the partial word; after a space it is
    appended; after punctuation (``"hi,"``) a space is put in first. A space
    always follows the accepted word.
    """
    if text and not text[-1].isspace():
        m = _TRAILING_CHUNK.search(text)
        chunk = m.group(0)
        if text_lib.WORD_RE.fullmatch(text_lib.normalize(chunk)):
            return text[: m.start()] + match_case(chunk, word) + " "
        return text + " " + word + " "
    return text + word + " "


def format_strip(words: Sequence[str], numbered: bool = True) -> str:
    if not words:
        return ""
    if numbered:
        return " │ ".join(f"{i} {w}" for i, w in enumerate(words, 1))
    return " | ".join(words)


def run_interactive(
    suggester: Suggester, *, k: int = 3, stdin: IO[str] | None = None, stdout: IO[str] | None = None
) -> None:
    """Show the suggestion strip live while typing (see the module docstring)."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    suggester = _incremental(suggester)
    if _isatty(stdin) and _isatty(stdout):
        _run_tty(suggester, k, stdin, stdout)
    else:
        run_lines(suggester, stdin, stdout, k=k)


def run_lines(suggester: Suggester, stdin: IO[str], stdout: IO[str], *, k: int = 3) -> int:
    """Non-terminal mode: one strip per input line; returns the number of lines read."""
    n = 0
    for line in stdin:
        n += 1
        words = suggester.suggest(line.rstrip("\r\n"), k)
        stdout.write(format_strip(words, numbered=False) + "\n")
        stdout.flush()
    return n


def _incremental(suggester: Suggester) -> Suggester:
    """A full :class:`Suggester` gets the keystroke cache (same answers, less work inside a word);
    an object with only ``suggest`` (all this module calls) is used as is."""
    from keyboard_fl.demo.incremental import IncrementalSuggester

    if isinstance(suggester, Suggester) and not isinstance(suggester, IncrementalSuggester):
        return IncrementalSuggester(suggester)
    return suggester


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------- terminal
CTRL_C, CTRL_D, CTRL_U, TAB, ESC = "\x03", "\x04", "\x15", "\t", "\x1b"
BACKSPACES = ("\x7f", "\x08")
ENTERS = ("\r", "\n")
DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


class _Screen:
    """Two lines at the bottom of the terminal: the strip and the message being typed."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.drawn = False

    def draw(self, text: str, words: Sequence[str]) -> None:
        cols = shutil.get_terminal_size((80, 24)).columns
        strip = " │ ".join(f"{DIM}{i}{RESET} {BOLD if i == 1 else ''}{w}{RESET}" for i, w in enumerate(words, 1))
        shown = text.replace("\n", " ")
        room = max(cols - 4, 8)
        if len(shown) > room:  # keep to one line so the redraw stays in place
            shown = "…" + shown[-(room - 1) :]
        up = "\x1b[1A" if self.drawn else ""
        self.out.write(f"\r{up}\x1b[2K{strip or DIM + '(no suggestion)' + RESET}\r\n\x1b[2K> {shown}")
        self.out.flush()
        self.drawn = True

    def newline(self) -> None:
        self.out.write("\r\n")
        self.out.flush()
        self.drawn = False


def _read_key(fd: int, decoder) -> str:
    """One key press: a character, or a whole escape sequence (returned as ESC)."""
    import select

    while True:
        b = os.read(fd, 1)
        if not b:
            return CTRL_D
        ch = decoder.decode(b)
        if not ch:
            continue  # inside a multi-byte UTF-8 character
        if ch == ESC:  # arrows, function keys…: swallow the rest of the sequence
            while select.select([fd], [], [], 0.01)[0]:
                if not os.read(fd, 1):
                    break
            decoder.reset()
        return ch


def _run_tty(suggester: Suggester, k: int, stdin: IO[str], stdout: IO[str]) -> None:
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    screen = _Screen(stdout)
    stdout.write(f"{DIM}type; 1–3 or Tab accept a suggestion, Enter ends the message, Ctrl-C quits{RESET}\r\n")
    text = ""
    try:
        tty.setraw(fd)
        words = suggester.suggest(text, k)
        screen.draw(text, words)
        while True:
            key = _read_key(fd, decoder)
            if key in (CTRL_C, CTRL_D):
                break
            if key in ENTERS:
                screen.newline()
                text = ""
            elif key in BACKSPACES:
                text = text[:-1]
            elif key == CTRL_U:
                text = ""
            elif key == TAB or key in "123":
                i = 0 if key == TAB else int(key) - 1
                if i < len(words):
                    text = apply_suggestion(text, words[i])
            elif key == ESC or (len(key) == 1 and ord(key) < 32):
                continue  # other control keys do nothing
            else:
                text += key
            words = suggester.suggest(text, k)
            screen.draw(text, words)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        stdout.write("\r\n")
        stdout.flush()


__all__ = ["run_interactive", "run_lines", "apply_suggestion", "match_case", "format_strip"]
