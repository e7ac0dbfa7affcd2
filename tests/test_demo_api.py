"""The demo's HTTP API: contract, bounds, odd input (never a 500) and privacy of typed text."""

from __future__ import annotations

import json
import logging
import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from keyboard_fl.demo.app import MAX_BODY_BYTES, MAX_TEXT_CHARS, STATIC, clean_text, create_app  # noqa: E402
from keyboard_fl.runs import discover_runs, model_info, privacy_label  # noqa: E402

CANARY = "zebraquokka secretword"  # would never come out of a tiny model by chance


@pytest.fixture(scope="module")
def app(tiny_runs):
    return create_app(tiny_runs)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def post(client, body, **kw):
    return client.post("/api/suggest", json=body, **kw)


# ------------------------------------------------------------------ contract
def test_models_lists_each_run_with_privacy_and_quality(client, tiny_runs):
    r = client.get("/api/models")
    assert r.status_code == 200
    data = r.json()
    by_name = {m["name"]: m for m in data["models"]}
    assert list(by_name) == ["central", "fedavg", "dp-fedavg"]
    assert data["default"] == "dp-fedavg"
    dp = by_name["dp-fedavg"]
    metrics = json.loads((tiny_runs["dp-fedavg"] / "metrics.json").read_text())
    assert dp["private"] and dp["epsilon"] == pytest.approx(metrics["epsilon"]) and dp["delta"] == metrics["delta"]
    assert dp["privacy"].startswith("ε=") and "δ=" in dp["privacy"]
    for name in ("central", "fedavg"):
        assert by_name[name]["privacy"] == "not private" and by_name[name]["epsilon"] is None
    for m in by_name.values():
        for key in ("top1", "top3", "ksr"):
            assert 0.0 <= m[key] <= 1.0


def test_next_word_and_completion(client):
    r = post(client, {"model": "central", "text": "how are "})
    assert r.status_code == 200
    data = r.json()
    assert data["kind"] == "next" and data["model"] == "central"
    assert 1 <= len(data["suggestions"]) <= 3 and all(isinstance(w, str) and w for w in data["suggestions"])
    assert isinstance(data["ms"], (int, float)) and data["ms"] >= 0
    r = post(client, {"model": "fedavg", "text": "see yo"})
    data = r.json()
    assert r.status_code == 200 and data["kind"] == "completion"
    assert data["suggestions"] and all(w.startswith("yo") for w in data["suggestions"])


def test_same_text_same_answer(client):
    a = post(client, {"model": "dp-fedavg", "text": "i will "}).json()["suggestions"]
    b = post(client, {"model": "dp-fedavg", "text": "i will "}).json()["suggestions"]
    assert a == b


def test_page_and_assets_are_local(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/app.js", "/static/style.css"} <= set(assets)
    for a in assets:
        assert client.get(a).status_code == 200
    for f in STATIC.rglob("*"):
        if f.is_file() and "vendor" not in f.relative_to(STATIC).parts:
            body = f.read_text(encoding="utf-8")
            assert not re.search(r"https?://|//cdn|@import", body), f"{f.name} refers to the network"
    # The vendored runtime (scripts/fetch_ort.sh) is loaded from this server; its only URL is a help link in a message.
    for f in (STATIC / "vendor").rglob("*.mjs"):
        urls = re.findall(r"https?://[^\s\"')]+", f.read_text(encoding="utf-8"))
        assert set(urls) <= {"https://web.dev/cross-origin-isolation-guide/"}, (f.name, urls)


# ------------------------------------------------------------------ odd text: never a 500
ODD_TEXTS = [
    "",
    " ",
    "\n\n\t",
    "🙂",
    "see you 🙂 ",
    "👩‍👩‍👧‍👦 family",
    "שלום עולם ",
    "مرحبا بك",
    "\u202eevil\u202c text",  # right-to-left override
    "\u200f\u200e\u200b\ufeff",  # direction marks, zero-width space, BOM
    "ctrl \x00\x01\x07\x1b[31m red \x7f",
    "cafe\u0301 ",  # combining accent
    "Ｆｕｌｌｗｉｄｔｈ ",
    "ǅemal İstanbul ß",
    "x" * 30,  # longer than the completion search accepts
    "a " * 500,
    "word" * 250,
    "!!!???...,,,",
    "hi,",
    "'quoted' \"text\" <b>html</b> & ",
    "\udbff\udfff".encode("utf-16", "surrogatepass").decode("utf-16"),  # U+10FFFF
]


@pytest.mark.parametrize("text", ODD_TEXTS, ids=range(len(ODD_TEXTS)))
@pytest.mark.parametrize("model", ["central", "dp-fedavg"])
def test_odd_text_gets_an_answer(client, model, text):
    assert len(text) <= MAX_TEXT_CHARS
    r = post(client, {"model": model, "text": text})
    assert r.status_code == 200, r.text
    words = r.json()["suggestions"]
    assert isinstance(words, list) and len(words) <= 3 and all(isinstance(w, str) and w for w in words)


def test_incremental_suggester_gives_the_same_answers(tiny_runs):
    from keyboard_fl.demo.incremental import IncrementalSuggester
    from keyboard_fl.loading import load_suggester

    base, _ = load_suggester(tiny_runs["fedavg"])
    fast = IncrementalSuggester(base)
    msg = "Hey, are you coming to the party tonight? 🙂 see you there"
    texts = [msg[:i] for i in range(len(msg) + 1)] + ["", "x" * 40, "שלום "]
    for t in texts:
        assert fast.suggest_scored(t) == base.suggest_scored(t), t
    assert fast.hits > fast.misses  # most key presses stay inside a word


def test_clean_text_keeps_words_drops_controls():
    assert clean_text("a\x00b\tc\nd") == "ab c d"
    assert clean_text("שלום 🙂") == "שלום 🙂"


# ------------------------------------------------------------------ bad requests: clear 4xx
def _err(r, status, *needles):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    for n in needles:
        assert n in msg, msg
    return msg


def test_unknown_model_is_404(client):
    _err(post(client, {"model": "gpt", "text": "hi"}), 404, "unknown model", "central")


@pytest.mark.parametrize(
    "content, status, needle",
    [
        (b"", 400, "empty body"),
        (b"   ", 400, "empty body"),
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "central", "text": "hi"', 400, "not valid JSON"),
        (b"\xff\xfe\x00", 400, "not UTF-8"),
        (b"[1, 2]", 422, "JSON object"),
        (b'"text"', 422, "JSON object"),
        (b"null", 422, "JSON object"),
        (b'{"text": "hi"}', 422, "'model'"),
        (b'{"model": 3, "text": "hi"}', 422, "'model'"),
        (b'{"model": "", "text": "hi"}', 422, "'model'"),
        (b'{"model": "central"}', 422, "'text' is required"),
        (b'{"model": "central", "text": 5}', 422, "'text' must be a string"),
        (b'{"model": "central", "text": ["a"]}', 422, "'text' must be a string"),
        (b'{"model": "central", "text": "hi", "k": 100}', 422, "unknown field"),
        (b'{"model": "central", "text": "\\ud800 lone"}', 400, "lone surrogate"),
        (b"[" * 5000, 400, "not valid JSON"),
    ],
)
def test_malformed_requests(client, content, status, needle):
    r = client.post("/api/suggest", content=content, headers={"Content-Type": "application/json"})
    _err(r, status, needle)


def test_text_too_long_is_413(client):
    _err(post(client, {"model": "central", "text": "a" * (MAX_TEXT_CHARS + 1)}), 413, str(MAX_TEXT_CHARS), "characters")


def test_body_too_large_is_413(client):
    body = json.dumps({"model": "central", "text": "b" * (MAX_BODY_BYTES + 10)}).encode()
    _err(client.post("/api/suggest", content=body, headers={"Content-Type": "application/json"}), 413, "bytes")


def test_chunked_body_too_large_is_413(client):
    def chunks():
        yield b'{"model": "central", "text": "'
        for _ in range(20):
            yield b"c" * 1024
        yield b'"}'

    _err(client.post("/api/suggest", content=chunks(), headers={"Content-Type": "application/json"}), 413, "limit")


def test_max_text_of_wide_characters_fits_the_body_limit(client):
    text = "🙂" * MAX_TEXT_CHARS if len("🙂") == 1 else "é" * MAX_TEXT_CHARS
    assert post(client, {"model": "central", "text": text}).status_code == 200
    body = json.dumps({"model": "central", "text": "é" * MAX_TEXT_CHARS}, ensure_ascii=True).encode()
    assert client.post("/api/suggest", content=body, headers={"Content-Type": "application/json"}).status_code == 200


def test_wrong_method_and_path(client):
    _err(client.get("/api/suggest"), 405, "Method Not Allowed")
    _err(client.get("/api/nothing"), 404, "Not Found")


def test_responses_are_not_cached(client):
    r = post(client, {"model": "central", "text": "hi "})
    assert r.headers["cache-control"] == "no-store"
    assert post(client, {"model": "nope", "text": "hi"}).headers["cache-control"] == "no-store"


# ------------------------------------------------------------------ privacy of typed text
def test_typed_text_is_never_logged_or_echoed(client, app, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "fastapi", "keyboard_fl"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    bodies = []
    for model in ("central", "fedavg", "dp-fedavg", "unknown"):
        for text in (CANARY, CANARY + " ", CANARY[:7]):
            bodies.append(post(client, {"model": model, "text": text}).text)
    bodies.append(post(client, {"model": "central", "text": CANARY * 100}).text)  # too long
    bodies.append(
        client.post("/api/suggest", content=('{"model": "central", "text": "' + CANARY).encode()).text
    )  # malformed
    bodies.append(
        client.post("/api/suggest", content=json.dumps({"model": "central", "text": CANARY, "extra": 1})).text
    )

    # A model that fails with the text in its exception message: still not logged.
    def boom(text, k=3):
        raise ValueError(f"cannot handle {text!r}")

    m = app.state.models["central"]
    monkeypatch.setattr(m.suggester, "suggest", boom)
    r = post(client, {"model": "central", "text": CANARY})
    assert r.status_code == 500 and r.json()["error"] == "the model failed on this input"
    bodies.append(r.text)
    assert "ValueError" in caplog.text  # the failure itself is logged …
    out, errs = capfd.readouterr()
    for secret in (CANARY, "zebraquokka", "secretword"):
        assert secret not in caplog.text  # … but never what was typed
        assert secret not in out and secret not in errs
        for b in bodies:
            assert secret not in b


# ------------------------------------------------------------------ registry
def test_discover_runs_orders_modes_and_skips_unfinished(tiny_runs, tmp_path):
    root = tiny_runs["central"].parent
    found = discover_runs(root)
    assert list(found)[:3] == ["central", "fedavg", "dp-fedavg"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert discover_runs(tmp_path) == {}
    assert discover_runs(tmp_path / "missing") == {}
    assert discover_runs(tiny_runs["fedavg"]) == {"fedavg": tiny_runs["fedavg"]}


def test_privacy_label_and_info_handle_missing_values():
    assert privacy_label({"mode": "central"}) == "not private"
    assert privacy_label({"mode": "dp-fedavg", "epsilon": "inf"}) == "ε=∞"
    assert privacy_label({"mode": "dp-fedavg", "epsilon": 2.345, "delta": 1e-6}) == "ε=2.35, δ=1e-06"
    info = model_info("x", {"mode": "fedavg", "top1": None, "ksr": float("nan")})
    assert info["top1"] is None and info["ksr"] is None and info["privacy"] == "not private"


def test_create_app_without_runs_fails_clearly():
    with pytest.raises(FileNotFoundError, match="no trained runs"):
        create_app({})


def test_demo_command_fails_clearly(tmp_path):
    import socket

    from keyboard_fl.demo import demo_command
    from keyboard_fl.demo.app import serve

    with pytest.raises(FileNotFoundError, match="no finished runs under"):
        demo_command(tmp_path, "127.0.0.1", 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="Address already in use|cannot listen"):
            serve(tmp_path, "127.0.0.1", s.getsockname()[1])


def test_serve_skips_a_broken_run(tiny_runs, tmp_path, monkeypatch):
    import shutil

    import uvicorn

    from keyboard_fl.demo.app import serve

    good = tmp_path / "central"
    shutil.copytree(tiny_runs["central"], good)
    bad = tmp_path / "fedavg"
    shutil.copytree(tiny_runs["fedavg"], bad)
    (bad / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    serve(tmp_path, "127.0.0.1", 0, warm_batches=False)  # the batch shapes' compiles are not under test here
    assert list(served["app"].state.models) == ["central"]
    assert served["host"] == "127.0.0.1" and served["access_log"] is False


def test_fast_path_answers_exactly_as_the_route(app, client, monkeypatch):
    """POST /api/suggest is served by SuggestFastPath (demo/asgi.py) in front of FastAPI: same status, headers, body."""
    from keyboard_fl.demo import asgi as asgi_module

    bodies = [
        b'{"model": "central", "text": "how are "}',
        b'{"model": "fedavg", "text": "see yo"}',
        b'{"model": "gpt", "text": "hi"}',
        b"{not json",
        b"",
        b'{"model": "central", "text": 5}',
        json.dumps({"model": "central", "text": "a" * (MAX_TEXT_CHARS + 1)}).encode(),
        json.dumps({"model": "central", "text": "b" * (MAX_BODY_BYTES + 10)}).encode(),
    ]

    def answers():
        out = []
        for body in bodies:
            r = client.post("/api/suggest", content=body, headers={"Content-Type": "application/json"})
            data = r.json()
            data.pop("ms", None)  # the model's time differs between calls
            out.append((r.status_code, [(k, v) for k, v in r.headers.items() if k != "content-length"], data))
        return out

    fast = answers()
    monkeypatch.setattr(asgi_module.SuggestFastPath, "__call__", lambda self, *a: self.app(*a))  # the route only
    assert answers() == fast
    assert {s for s, _, _ in fast} == {200, 404, 400, 422, 413}


def test_serve_with_workers_hands_the_runs_to_each_worker(tiny_runs, tmp_path, monkeypatch):
    import shutil

    import uvicorn

    from keyboard_fl.demo import app as app_module

    shutil.copytree(tiny_runs["central"], tmp_path / "central")
    served, exported = {}, []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setattr(app_module, "ensure_exports", lambda runs: exported.append(list(runs)))
    monkeypatch.delenv(app_module.WORKER_ENV, raising=False)
    app_module.serve(tmp_path, "127.0.0.1", 0, warm_batches=False, workers=2)
    assert served["app"] == "keyboard_fl.demo.app:worker_app" and served["factory"] and served["workers"] == 2
    assert served["proxy_headers"] is False and served["access_log"] is False and exported == [["central"]]
    worker = app_module.worker_app()  # what each worker process builds, from the environment serve() set
    assert list(worker.state.models) == ["central"]
    monkeypatch.delenv(app_module.WORKER_ENV)
