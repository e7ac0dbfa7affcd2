"""The demo learns from what is typed in this browser, and only here (issue 22).

Real components, as ``test_demo_ondevice.py``: uvicorn serving the demo with the
tiny runs' exports, Debian's chromium driven by Playwright, onnxruntime-web in
the page. A made-up name is sent twice; then its prefix brings it to the strip
(the personal cache, ``ondevice/personal.js``), while no request after the page
loaded carries it (every request is recorded, its URL and body); the toggle
shows the global model alone without it, a reload keeps it (localStorage), and
the visible reset removes it.
"""

from __future__ import annotations

from test_demo_browser import _strip, _wait_fresh, browser  # noqa: F401 - fixture
from test_demo_ondevice import device_server  # noqa: F401 - fixture

NAME = "zorblatt"  # a name no model was trained on and no public word list holds
KEY = "keyboard_fl.personal.v1"


def _type(page, text, seq):
    page.keyboard.type(text, delay=10)
    return _wait_fresh(page, seq)


def test_a_name_typed_twice_is_suggested_never_sent_and_reset_removes_it(device_server, browser):  # noqa: F811
    base, capture = device_server
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append((r.method, r.url, r.post_data or "")))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.wait_for_selector(".model-card >> nth=2")
    page.evaluate(f"localStorage.removeItem('{KEY}')")
    page.reload()
    page.wait_for_selector(".model-card >> nth=2")
    assert page.is_checked("#personal-on") and page.is_disabled("#personal-reset")
    page.click("#message")
    seq = _wait_fresh(page)
    loaded = len(requests)

    seq = _type(page, "hi zo", seq)
    assert NAME not in _strip(page), "the name is suggested before it was ever typed"
    page.fill("#message", "")
    for message in (f"I met {NAME} at the park", f"{NAME} says hi"):
        page.keyboard.type(message, delay=10)
        page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('personal-count').textContent.startsWith('8 words')")
    seq = _wait_fresh(page, seq)
    seq = _type(page, "see you and zo", seq)
    assert NAME in _strip(page), f"not suggested after its prefix: {_strip(page)}"

    # Nothing left the page: no request at all since the model loaded, none carrying the name.
    assert requests[loaded:] == [], f"requests while typing: {requests[loaded:]}"
    assert not any(NAME in url or NAME in body for _, url, body in requests)
    assert not any(NAME in line for line in capture.lines)
    assert NAME in page.evaluate(f"localStorage.getItem('{KEY}')")

    # The toggle compares: the global model alone does not know the name.
    page.click("#personal-on")
    seq = _wait_fresh(page, seq)
    assert NAME not in _strip(page)
    page.click("#personal-on")
    seq = _wait_fresh(page, seq)
    assert NAME in _strip(page)

    # The state survives a reload (this browser's localStorage) ...
    page.reload()
    page.wait_for_selector(".model-card >> nth=2")
    page.click("#message")
    seq = _wait_fresh(page)
    seq = _type(page, "see you and zo", seq)
    assert NAME in _strip(page)
    # ... and the visible reset removes it.
    assert page.is_visible("#personal-reset")
    page.click("#personal-reset")
    seq = _wait_fresh(page, seq)
    assert NAME not in _strip(page)
    assert page.evaluate(f"localStorage.getItem('{KEY}')") is None
    assert page.inner_text("#personal-count").startswith("0 words")
    assert not any(NAME in url or NAME in body for _, url, body in requests)
    assert not errors, errors
    page.close()
