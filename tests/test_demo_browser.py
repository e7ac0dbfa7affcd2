"""End to end: a real browser (Debian's chromium, driven by Playwright) types into the demo page.

The server is the real thing — uvicorn on 127.0.0.1, a free port, in a thread —
with access logs *on* and every logger at DEBUG, so the test can also show that
what was typed appears in no log line. Screenshots are saved to
``tests/artifacts/demo.png`` and ``tests/artifacts/canary.png`` (the canary view).

Needs ``pip install playwright`` and ``apt-get install chromium`` (never
``playwright install``: no network). Without them the test is skipped, unless
``KEYBOARD_FL_REQUIRE_BROWSER=1`` (CI), where it fails instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KEYBOARD_FL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
REQUIRED = os.environ.get("KEYBOARD_FL_REQUIRE_BROWSER") == "1"


def _need(ok: bool, why: str) -> None:
    if not ok:
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001
            self.lines.append(str(record.msg))


@contextlib.contextmanager
def _serving(runs, *, export: bool = False):
    """uvicorn serving the demo over ``runs`` on a free port: yields (base URL, log capture)."""
    uvicorn = pytest.importorskip("uvicorn")
    from keyboard_fl.demo.app import create_app

    capture = _Capture()
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "keyboard_fl")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(capture)

    app = create_app(runs, export=export)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, log_level="debug", access_log=True, lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", capture
    finally:
        srv.should_exit = True
        thread.join(10)
        logging.getLogger().removeHandler(capture)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


@pytest.fixture(scope="module")
def server(tiny_runs):
    with _serving(tiny_runs) as s:
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install playwright)")
    _need(
        Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None,
        f"no chromium at {CHROMIUM} (apt-get install chromium)",
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1040, "height": 860},
            device_scale_factor=1,
        )
        yield ctx
        ctx.close()


def _strip(page) -> list[str]:
    """Suggestions in rank order (the middle slot holds the most likely word); empty slots left out
    (the dictionary filter may leave fewer than three real words)."""
    by_rank = page.eval_on_selector_all(".suggestion", "els => els.map(e => [Number(e.dataset.rank), e.textContent])")
    return [w for _, w in sorted(by_rank) if w]


def _wait_fresh(page, previous_seq: int | None = None) -> int:
    """Wait until the strip shows the answer to the latest request; return that request's number."""
    page.wait_for_function(
        """(prev) => {
            const s = document.getElementById('strip');
            return s.dataset.seq && s.dataset.seq === s.dataset.pending && (prev === null || Number(s.dataset.seq) > prev);
        }""",
        arg=previous_seq,
        timeout=15_000,
    )
    return int(page.get_attribute("#strip", "data-seq"))


def test_type_accept_switch_model_screenshot(server, browser):
    base, capture = server
    page = browser.new_page()
    console_errors, foreign = [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.on(
        "request",
        lambda r: foreign.append(r.url) if not (r.url.startswith(base) or r.url.startswith("data:")) else None,
    )

    page.goto(base + "/?mode=server")
    page.wait_for_selector(".model-card >> nth=2")
    cards = page.eval_on_selector_all(".model-card", "els => els.map(e => [e.dataset.model, e.innerText])")
    assert [c[0] for c in cards] == ["central", "fedavg", "dp-fedavg"]
    texts = dict(cards)
    assert "not private" in texts["central"] and "not private" in texts["fedavg"]
    assert "ε=" in texts["dp-fedavg"] and "top-1" in texts["dp-fedavg"] and "KSR" in texts["dp-fedavg"]
    assert page.is_checked("input[name=model][value=dp-fedavg]")  # the private model by default
    assert "ε=" in page.inner_text("#model-badge")

    # Type a partial word key by key; the strip follows every key press.
    box = page.locator("#message")
    box.click()
    seq = _wait_fresh(page)
    page.keyboard.type("how are yo", delay=15)
    seq = _wait_fresh(page, seq)
    words = _strip(page)
    assert words and all(w.startswith("yo") for w in words), words
    assert page.inner_text("#kind") == "completing"
    assert "ms" in page.inner_text("#latency-server")

    # Tap the middle (most likely) suggestion: it replaces the partial word and adds a space.
    page.click(".suggestion.best")
    assert box.input_value() == f"how are {words[0]} "
    seq = _wait_fresh(page, seq)
    nxt = _strip(page)
    assert nxt and page.inner_text("#kind") == "next word"

    # Keyboard shortcuts: Tab takes the middle word, Alt+3 the right-hand one.
    page.keyboard.press("Tab")
    assert box.input_value() == f"how are {words[0]} {nxt[0]} "
    seq = _wait_fresh(page, seq)
    right = page.inner_text(".suggestion[data-slot='2']")
    if right:
        before = box.input_value()
        page.keyboard.press("Alt+3")
        assert box.input_value() == before + right + " "
        seq = _wait_fresh(page, seq)

    # Switch model: the next request goes to the central model and the badge says "not private".
    with page.expect_request(
        lambda r: r.url.endswith("/api/suggest") and json.loads(r.post_data)["model"] == "central"
    ):
        page.click(".model-card[data-model=central]")
    seq = _wait_fresh(page, seq)
    assert page.inner_text("#model-badge").endswith("not private")
    assert page.get_attribute("body", "data-model") == "central"

    # Enter sends the message (into the page only) and clears the box.
    box.focus()
    page.keyboard.press("Enter")
    assert box.input_value() == ""
    assert page.locator(".bubble.me").count() == 1
    seq = _wait_fresh(page, seq)

    # Back to the private model for the picture, with a completion on the strip.
    page.click(".model-card[data-model=dp-fedavg]")
    seq = _wait_fresh(page, seq)
    box.click()
    page.keyboard.type("see you to", delay=15)
    _wait_fresh(page, seq)
    assert all(w.startswith("to") for w in _strip(page))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000

    assert not console_errors, console_errors
    assert not foreign, f"the page reached beyond the demo server: {foreign}"
    page.close()

    # The typed text appears in no log line (access logs were on, every logger at DEBUG).
    logs = "\n".join(capture.lines)
    assert "/api/suggest" in logs  # access logging really was on …
    for typed in ("how are yo", "are yo", "see you to", "you to"):
        assert typed not in logs  # … yet nothing typed was logged


def test_a_late_answer_to_an_old_key_press_is_dropped(server, browser):
    """The answer for "see you t" arrives after the one for "see you to": the strip keeps the latest."""
    base, _ = server
    page = browser.new_page()
    # Delay only the answer for the older text, in the page's own fetch.
    page.add_init_script(
        """
        const realFetch = window.fetch;
        window.fetch = async (url, opts) => {
            const r = await realFetch(url, opts);
            if (opts && opts.body && JSON.parse(opts.body).text === "see you t") {
                await new Promise((ok) => setTimeout(ok, 600));
            }
            return r;
        };
        """
    )
    page.goto(base + "/?mode=server")
    page.wait_for_selector(".model-card >> nth=2")
    page.click("#message")
    seq = _wait_fresh(page)
    page.keyboard.type("see you t")
    page.keyboard.type("o")
    _wait_fresh(page, seq)
    page.wait_for_timeout(900)  # the late answer has come back by now, and must have been ignored
    expected = page.request.post(base + "/api/suggest", data={"model": "dp-fedavg", "text": "see you to"}).json()[
        "suggestions"
    ]
    assert _strip(page) == expected
    assert all(w.startswith("to") for w in expected)

    # The on-screen keys type into the message box too.
    page.fill("#message", "")
    for k in ("h", "i", "space"):
        page.click(f".key[data-k='{k}']")
    assert page.input_value("#message") == "hi "
    page.click(".key[data-k='⌫']")
    assert page.input_value("#message") == "hi"
    page.close()


def test_canary_view_shows_each_model_with_a_leak_badge(canary_run, tiny_runs, browser):
    """Canary check tab: the prefix is filled in; Check shows one row per model with its completion and a badge."""
    with _serving({"central": canary_run, "dp-fedavg": tiny_runs["dp-fedavg"]}) as (base, capture):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(base + "/?mode=server")
        page.wait_for_selector(".model-card >> nth=1")
        assert page.is_hidden("#view-canary")
        page.click("#tab-canary")
        assert page.is_visible("#view-canary") and page.is_hidden("#view-keyboard")
        page.wait_for_function("document.getElementById('canary-prefix').value !== ''")
        assert page.input_value("#canary-prefix") == "my pin is"
        page.click("#canary-run")
        page.wait_for_selector("#canary-results[data-state=done]", timeout=60_000)
        rows = page.eval_on_selector_all(
            ".canary-row",
            "els => els.map(e => [e.dataset.model, e.dataset.leaks, e.querySelector('.leak-badge').textContent,"
            " e.querySelector('.canary-completion').textContent.trim(), e.innerText])",
        )
        expected = page.request.post(base + "/api/canary-check", data={"text": "my pin is"}).json()["models"]
        assert [r[0] for r in rows] == [m["name"] for m in expected] == ["central", "dp-fedavg"]
        for (_name, leaks, badge, words, text), want in zip(rows, expected):
            assert leaks == str(want["leaks"]).lower()
            assert badge.startswith("LEAKS") if want["leaks"] else badge.startswith("does not leak")
            # the page shows the API's completion; at most the secret's 4 words (the dictionary
            # filter can leave an empty strip, which stops the greedy completion early)
            assert words.split() == want["completion"] and 1 <= len(want["completion"]) <= 4
            assert want["privacy"] in text
        central, private = (r[4] for r in rows)
        assert "typed 400×" in central and "exposure" in central  # planted secrets, audited
        assert "trained without canaries" in private and "ε=" in private
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "canary.png"), full_page=True)
        assert (ARTIFACTS / "canary.png").stat().st_size > 10_000

        # The keyboard view still works after the canary check.
        page.click("#tab-keyboard")
        page.click("#message")
        seq = _wait_fresh(page)
        page.keyboard.type("see yo", delay=15)
        _wait_fresh(page, seq)
        assert all(w.startswith("yo") for w in _strip(page))
        assert not errors, errors
        page.close()
        logs = "\n".join(capture.lines)
        assert "/api/canary-check" in logs and "my pin is" not in logs and "see yo" not in logs
