"""Fuzz the demo API: requests generated from its OpenAPI schema (schemathesis) and raw malformed HTTP.

The app runs under a real uvicorn server in a thread, serving a tiny trained
run. Every endpoint of ``/openapi.json`` gets at least :data:`PER_ENDPOINT`
generated requests: schemathesis cases in positive and negative mode (bodies
that break the schema), then hypothesis-built requests with arbitrary bytes,
content types, content encodings, headers and query strings; and raw byte
streams go straight to the socket (broken request lines, headers, chunking).
Must hold: no 5xx, no request takes more than :data:`TIMEOUT_S` (a hang),
and no typed text reaches any log record or the process's stdout/stderr.

Set ``KEYBOARD_FL_FUZZ_REPORT=path.json`` to write the counts and the captured
log (benchmarks/results/demo_fuzz.json is such a report).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import resource
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
import httpx  # noqa: E402
import requests  # noqa: E402
import schemathesis  # noqa: E402
import uvicorn  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from keyboard_fl.demo.app import create_app  # noqa: E402

PER_ENDPOINT = 1000  # generated requests per endpoint, all kinds together
SCHEMA_CASES = 700  # of which schemathesis cases (positive and negative), the rest raw
RAW_SOCKET_CASES = 150  # byte streams sent to the socket as they are, per POST endpoint
TIMEOUT_S = 60.0  # a request not answered within this is a hang (generous: a busy CI machine compiles slowly)
CANARY = "zebraquokka"  # planted in raw request texts: it must never reach a log
CLIENT_LOGGERS = ("urllib3", "httpx", "httpcore", "hypothesis", "schemathesis", "requests")


class _Capture(logging.Handler):
    """Every log record of the server side, formatted, whatever its level."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        if not record.name.startswith(CLIENT_LOGGERS):
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def server(tiny_runs):
    """(base URL, log capture): the demo over the tiny DP-FedAvg run, on a free loopback port."""
    app = create_app({"dp-fedavg": tiny_runs["dp-fedavg"]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "starlette", "keyboard_fl"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    config = uvicorn.Config(  # keep-alive longer than any pause between generated requests (no close/reuse race)
        app, host="127.0.0.1", port=port, log_config=None, access_log=True, log_level="debug", timeout_keep_alive=300
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "demo server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", capture
    srv.should_exit = True
    thread.join(10)
    root.removeHandler(capture)
    root.setLevel(old_level)


class _Tally:
    """What was sent and what came back, per endpoint."""

    def __init__(self):
        self.sent = collections.Counter()
        self.status = collections.defaultdict(collections.Counter)
        self.texts: set[str] = set()  # the typed texts sent (to look for in the logs)
        self.slowest = 0.0
        self.server_errors: list[str] = []

    def record(self, endpoint: str, status: int, seconds: float, text=None) -> None:
        self.sent[endpoint] += 1
        self.status[endpoint][status] += 1
        self.slowest = max(self.slowest, seconds)
        if isinstance(text, str) and len(text.strip()) >= 8:
            self.texts.add(text)
        if status >= 500:
            self.server_errors.append(f"{endpoint} → {status}")


def _server_strings() -> set[str]:
    """Strings the server can log without being sent them: the package's string constants, function, class
    and module names. Hypothesis seeds generated text with the constants of the code under test (so a "typed"
    text such as ``"/api/suggest"`` or ``"load_resources"`` is in the log because the server wrote it, not the
    user); the planted ``CANARY`` texts are the unambiguous check."""
    import ast

    import keyboard_fl

    root = Path(keyboard_fl.__file__).parent
    out: set[str] = set()
    for py in [*root.rglob("*.py"), *Path(__file__).parent.glob("*.py")]:  # Hypothesis mines the tests too
        if py.is_relative_to(root):
            out.add(".".join(("keyboard_fl", *py.relative_to(root).with_suffix("").parts)))
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value.strip())
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
    return out


def _drive(strategy, n: int, send) -> None:
    """Call ``send`` on ``n`` examples of ``strategy`` (fixed seed: CI sees the same requests each run)."""
    deterministic = settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    deterministic(given(strategy)(lambda x: send(x)))()


_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)
_HEADER_NAME = st.sampled_from(
    ["Accept", "Accept-Encoding", "Accept-Charset", "Cookie", "Origin", "X-Forwarded-For"]
) | st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=24).map(
    lambda h: "X-" + h
)  # not framing headers (Content-Length, Transfer-Encoding): _raw_stream breaks those
_CONTENT_TYPE = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "text/plain",
            "multipart/form-data; boundary=xyz",
            "application/x-www-form-urlencoded",
            "",
        ]
    )
    | _HEADER_VALUE
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_TYPED = st.builds(lambda a, b: f"{a} {CANARY} {b}", st.text(max_size=40), st.text(max_size=40))


def _encoded_body(payload: dict, codec: str) -> bytes:
    errors = "surrogatepass" if codec.startswith("utf") else "replace"  # lone surrogates pass as they are
    return json.dumps(payload, ensure_ascii=False).encode(codec, errors=errors)


_BODY = st.one_of(
    st.binary(max_size=400),  # arbitrary bytes: mostly invalid UTF-8 / JSON
    _JSON.map(lambda v: json.dumps(v).encode()),  # any JSON value
    st.builds(  # near-valid requests in other encodings (UTF-16, Latin-1, lone surrogates)
        _encoded_body,
        st.fixed_dictionaries({"model": st.sampled_from(["dp-fedavg", "nope", ""]), "text": _TYPED}),
        st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "utf-8"]),
    ),
    st.integers(1, 20_000).map(lambda d: b"[" * d + b"]" * d),  # deep nesting
    st.integers(8_000, 20_000).map(lambda n: b'{"model": "dp-fedavg", "text": "' + b"a" * n + b'"}'),  # too big
)


@st.composite
def _raw_request(draw) -> tuple[dict, dict, bytes]:
    headers = draw(st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=4))
    headers["Content-Type"] = draw(_CONTENT_TYPE)
    if draw(st.booleans()):
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "br", "deflate", "identity", "x-zip"]))
    query = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3))
    return headers, query, draw(_BODY)


@st.composite
def _raw_stream(draw, method: str, path: str) -> bytes:
    """A request whose framing is broken: bad header lines, non-ASCII names, bad chunks, truncation."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    junk = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=60),
                st.sampled_from(
                    [
                        b"Transfer-Encoding: chunked\r\n",
                        b"Content-Length: -1\r\n",
                        b"Content-Length: abc\r\n",
                        b"Content-Length: 3\r\nContent-Length: 5\r\n",
                        b"Content-Type: application/json\r\n",
                        b"X-\xff\xfe: \x00\x01\r\n",
                        b"no colon here\r\n",
                        b"\r\n",
                        b"zz\r\nnot-hex\r\n0\r\n\r\n",
                    ]
                ),
            ),
            max_size=6,
        )
    )
    return head + b"".join(junk)


def _send_raw_stream(url: str, data: bytes) -> int:
    """Send ``data``, close our side, read the answer: its status (0 if the server just closed)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    first = reply.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else 0


def _request_or_closed(client: httpx.Client, op, headers: dict, query: dict, body: bytes) -> int:
    """The status, or 0 when the server's HTTP parser closed the connection instead of answering
    (tried twice, the second time on a fresh connection; an app error would be a 500, not a close)."""
    for attempt in range(2):
        try:
            return client.request(op.method.upper(), op.path, headers=headers, params=query, content=body).status_code
        except httpx.RemoteProtocolError:
            if attempt:
                return 0
    return 0


def _text_of(body) -> str | None:
    return body.get("text") if isinstance(body, dict) else None


def _fuzz(url: str, tally: _Tally) -> None:
    """Run every kind of generated request against every endpoint of the schema."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    session = requests.Session()
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for op in operations:
            endpoint = f"{op.method.upper()} {op.path}"

            def send_case(case, endpoint=endpoint):
                t = time.perf_counter()
                r = case.call(base_url=url, session=session, timeout=TIMEOUT_S)
                tally.record(endpoint, r.status_code, time.perf_counter() - t, _text_of(case.body))

            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
            cases = st.one_of([op.as_strategy(generation_mode=m) for m in modes])
            _drive(cases, SCHEMA_CASES, send_case)

            def send_raw(req, op=op, endpoint=endpoint):
                headers, query, body = req
                t = time.perf_counter()
                tally.record(endpoint, _request_or_closed(client, op, headers, query, body), time.perf_counter() - t)

            _drive(_raw_request(), PER_ENDPOINT - tally.sent[endpoint], send_raw)
            if op.method.upper() == "POST":

                def send_stream(data, endpoint=endpoint):
                    t = time.perf_counter()
                    tally.record(endpoint, _send_raw_stream(url, data), time.perf_counter() - t)

                _drive(_raw_stream(op.method.upper(), op.path), RAW_SOCKET_CASES, send_stream)


def test_fuzzed_api_never_fails_hangs_or_logs_typed_text(server, capfd):
    url, capture = server
    tally = _Tally()
    t0, cpu0 = time.monotonic(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    _fuzz(url, tally)
    elapsed = time.monotonic() - t0
    out, err = capfd.readouterr()
    log_text = "\n".join(capture.lines) + "\n" + out + "\n" + err

    report = os.environ.get("KEYBOARD_FL_FUZZ_REPORT")
    if report:
        summary = {
            "benchmark": "demo_fuzz",
            "command": "KEYBOARD_FL_FUZZ_REPORT=... pytest tests/test_demo_fuzz.py",
            "schemathesis": schemathesis.__version__ if hasattr(schemathesis, "__version__") else None,
            "requests_per_endpoint": dict(tally.sent),
            "status_per_endpoint": {e: dict(sorted(c.items())) for e, c in tally.status.items()},
            "server_errors": len(tally.server_errors),
            "slowest_request_s": round(tally.slowest, 3),
            "typed_texts_sent": len(tally.texts),
            "typed_texts_in_log": sum(t in log_text for t in tally.texts),
            "log_lines": len(capture.lines),
            "log_sample": capture.lines[:20],
            "elapsed_s": round(elapsed, 1),
            "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0, 1),  # client + server
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        Path(report).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    assert len(tally.sent) == 4, f"endpoints fuzzed: {sorted(tally.sent)}"
    for endpoint, n in tally.sent.items():
        assert n >= PER_ENDPOINT, f"{endpoint}: only {n} generated requests"
    assert not tally.server_errors, f"{len(tally.server_errors)} server errors: {tally.server_errors[:5]}"
    assert tally.slowest < TIMEOUT_S
    # Positive cases reached the model (200) and bad ones were refused with 4xx.
    suggest = tally.status["POST /api/suggest"]
    assert (
        suggest[200] >= SCHEMA_CASES // 10
        and sum(n for s, n in suggest.items() if 400 <= s < 500) >= SCHEMA_CASES // 10
    )
    assert len(tally.texts) >= SCHEMA_CASES // 10
    # The log captured something (uvicorn's debug lines), and none of it is typed text.
    assert capture.lines
    assert CANARY not in log_text
    own = _server_strings()  # Hypothesis also draws the code's own constants: those are logged without being typed
    # A single identifier-like word ("undefined", "__dict__") is also what library messages are made of, so only
    # texts that are not one such word count here; the canary (planted inside texts) catches single-word echoes.
    leaked = [t for t in tally.texts if t in log_text and t.strip() not in own and not t.strip().isidentifier()]
    assert not leaked, f"{len(leaked)} typed texts found in the log: {leaked[:3]}"
