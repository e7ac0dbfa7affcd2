"""Terminal mode: line mode (stdin not a TTY), accepting words, and a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time

import pytest

from keyboard_fl.interactive import apply_suggestion, format_strip, match_case, run_interactive, run_lines


class FakeSuggester:
    """Completions of the partial word from a fixed list; fixed next words after a space."""

    WORDS = ["hello", "help", "helmet", "how", "are", "you"]

    def __init__(self):
        self.calls: list[str] = []

    def suggest(self, text, k=3):
        self.calls.append(text)
        if not text or text[-1].isspace():
            return ["how", "are", "you"][:k]
        part = text.split()[-1].lower()
        return [w for w in self.WORDS if w.startswith(part)][:k]


def test_line_mode_prints_one_strip_per_line():
    s = FakeSuggester()
    out = io.StringIO()
    run_interactive(s, stdin=io.StringIO("hel\nhow are \nzzz\n\n"), stdout=out)
    assert out.getvalue().splitlines() == ["hello | help | helmet", "how | are | you", "", "how | are | you"]
    assert s.calls == ["hel", "how are ", "zzz", ""]  # the newline is not part of the text; trailing spaces are


def test_line_mode_with_a_trained_model(tiny_runs):
    from keyboard_fl.loading import load_suggester

    s, _ = load_suggester(tiny_runs["central"])
    out = io.StringIO()
    assert run_lines(s, io.StringIO("see you \nsee yo\n🙂 שלום\n"), out) == 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    nxt = lines[0].split(" | ")
    assert 1 <= len(nxt) <= 3
    assert all(w.startswith("yo") for w in lines[1].split(" | "))


@pytest.mark.parametrize(
    "text, word, expected",
    [
        ("", "hi", "hi "),
        ("see ", "you", "see you "),
        ("see yo", "you", "see you "),
        ("See Yo", "you", "See You "),
        ("SEE YO", "you", "SEE YOU "),
        ("hi,", "how", "hi, how "),
        ("line\n", "next", "line\nnext "),
        ("don'", "don't", "don' don't "),  # "don'" is not a word (the apostrophe must be inner)
        ("don't", "don't", "don't "),
    ],
)
def test_apply_suggestion(text, word, expected):
    assert apply_suggestion(text, word) == expected


def test_match_case_and_format():
    assert match_case("", "x") == "x" and match_case("A", "and") == "And" and match_case("a", "and") == "and"
    assert format_strip(["a", "b"]) == "1 a │ 2 b" and format_strip([], numbered=False) == ""


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_strip_on_a_pseudo_terminal():
    import pty

    master, slave = pty.openpty()
    s = FakeSuggester()
    fin = os.fdopen(slave, "r", closefd=False)
    fout = os.fdopen(os.dup(slave), "w", encoding="utf-8")
    done = threading.Event()
    errors = []

    def target():
        try:
            run_interactive(s, stdin=fin, stdout=fout)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    received = bytearray()

    def pump(wait=0.3):
        import select

        end = time.time() + wait
        while time.time() < end:
            if select.select([master], [], [], 0.05)[0]:
                received.extend(os.read(master, 4096))

    deadline = time.time() + 10
    while b"> " not in received and time.time() < deadline:  # raw mode is on once the strip is drawn
        pump(0.05)
    for keys in ("hel", "2", "é", "\x7f", "\x1b[A", "\t", "\r", "\x03"):  # … Backspace, an arrow, Tab, Enter, Ctrl-C
        os.write(master, keys.encode())
        pump(0.15)
    assert done.wait(5), "Ctrl-C did not end the terminal mode"
    pump(0.1)
    t.join(1)
    fout.close()
    fin.close()
    os.close(slave)
    os.close(master)
    assert not errors
    screen = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", received.decode("utf-8", "replace"))
    assert "1 hello │ 2 help │ 3 helmet" in screen and "hello" in screen and "> hel" in screen
    # "hel" → 2 accepts "help" → "help " → é typed and deleted → Tab accepts "how" → Enter
    assert "help é" not in s.calls[-1]
    assert s.calls[:4] == ["", "h", "he", "hel"]
    assert "help " in s.calls and "help é" in s.calls and "help how " in s.calls
    assert s.calls[-1] == ""  # Enter started a new, empty message
