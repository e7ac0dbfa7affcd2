"""The suggestion-strip demo: a FastAPI app serving a phone-keyboard page.

``GET /``             the page (static HTML/CSS/JS, no external resources); by default it
                      computes suggestions on the device (onnxruntime-web, WASM)
``GET /export/{model}/{file}`` a run's export for the page: the ONNX step model,
                      ``tokenizer.json``, ``words.txt`` and ``manifest.json``
``GET /api/models``   the loaded models: mode, privacy (ε, δ) and quality
``POST /api/suggest`` ``{"model": name, "text": str}`` →
                      ``{"suggestions": [3 words], "ms": latency, ...}``
``GET /api/canaries`` the canary prefix and, per model, the synthetic secrets
                      planted in its training (simulation; see :mod:`.canary`)
``POST /api/canary-check`` ``{"text": prefix}`` → per model: the strip, its
                      greedy completion and whether that is a planted secret

Privacy (DESIGN.md §3): typed text is used to compute one answer and then
dropped. Nothing here logs, stores or echoes it — errors describe the request's
*shape* (sizes, types), never its content — and responses are ``no-store``.
Requests are bounded (body ≤ 8 KB, text ≤ 1,000 characters) so a client cannot
make the server do unbounded work; their pydantic models (:mod:`.schemas`) are
published at ``GET /openapi.json``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import unicodedata
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyboard_fl import __version__
from keyboard_fl.demo.asgi import (
    SUGGEST_PATH,
    SecurityHeaders,
    SuggestFastPath,
    error_response,
    read_asgi_body,
)
from keyboard_fl.demo.batching import BatchConfig, MicroBatcher
from keyboard_fl.demo.canary import canary_format, check, run_canaries
from keyboard_fl.demo.incremental import IncrementalSuggester
from keyboard_fl.demo.loading import LoadedRun, ensure_exports, load_run, load_runs
from keyboard_fl.demo.schemas import (
    MAX_BODY_BYTES,
    MAX_TEXT_CHARS,
    ApiError,
    CanaryCheckRequest,
    SuggestRequest,
    parse,
    request_body_schema,
    suggest_body_schema,
)
from keyboard_fl.package_data import package_dir
from keyboard_fl.runs import DP_FEDAVG, RunNotFound, discover_runs

log = logging.getLogger(__name__)

STATIC = package_dir("keyboard_fl.demo", "static")  # package data: ships in the wheel
NUM_SUGGESTIONS = 3
DEFAULT_RUNS_ROOT = Path("runs/main")


def clean_text(text: str) -> str:
    """Drop characters a model cannot read: control/format characters become spaces or vanish.

    Newlines and tabs become spaces (word boundaries); other C0/C1 controls are
    removed. Lone surrogates (invalid Unicode that JSON can still carry) raise.
    """
    if text.isascii() and text.isprintable():  # the usual case: ASCII's only non-printables are controls (Cc)
        return text
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ApiError(400, "'text' is not valid Unicode (it contains a lone surrogate)")
        if cat == "Cc":
            out.append(" " if ch in "\n\r\t\v\f\x1c\x1d\x1e\x1f\x85" else "")
        else:
            out.append(ch)
    return "".join(out)


def split_for_client(suggester, text: str) -> tuple[str, str]:
    """(``"completion"`` | ``"next"``, partial word) as the suggester sees ``text``."""
    _, prefix = suggester.split_context(text)
    return ("completion" if prefix else "next"), prefix


async def _read_body(request: Request) -> bytes:
    """The request body, refused (413) past :data:`MAX_BODY_BYTES` before it is all read."""
    return await read_asgi_body(request.scope, request.receive)


class _Model:
    """A loaded run, a lock (a Suggester keeps caches and is not made for concurrent calls) and a
    micro-batcher: concurrent suggestion requests share one batched model call (:mod:`.batching`)."""

    def __init__(self, run: LoadedRun, batch: BatchConfig = BatchConfig()):
        self.run = run
        self.info = run.info
        from keyboard_fl.suggest import Suggester

        # Same answers, reusing the context's state; an ONNX suggester caches its own state.
        self.suggester = IncrementalSuggester(run.suggester) if isinstance(run.suggester, Suggester) else run.suggester
        self.lock = threading.Lock()
        self.canaries = _planted(run)
        self.export = run.path / "export"  # served to the page when complete (see ondevice_files)
        self.batcher = MicroBatcher(self.suggest_batch, batch, name=run.name)

    def suggest_batch(self, texts: list[str]) -> list[tuple[list[str], str, float]]:
        """(words, kind, model ms) per text: one batched call when the back-end has ``suggest_many``
        (a lone request reuses the incremental suggester's context state instead)."""
        many = getattr(self.run.suggester, "suggest_many", None)
        with self.lock:
            t = time.perf_counter()
            if many is not None and len(texts) > 1:
                words = many(texts, NUM_SUGGESTIONS)
            else:  # one request, or the ONNX back-end: one at a time, reusing the per-context cache
                words = [self.suggester.suggest(x, NUM_SUGGESTIONS) for x in texts]
            ms = round((time.perf_counter() - t) * 1e3, 3)
        return [(w, split_for_client(self.suggester, x)[0], ms) for w, x in zip(words, texts, strict=True)]


def ondevice_files(model: _Model) -> dict | None:
    """URLs of a model's export for the in-page keyboard, or None when the export is missing or incomplete."""
    from keyboard_fl.export.onnx_export import FLOAT_NAME, INT8_NAME, MANIFEST_NAME

    d, name = model.export, model.info["name"]
    need = (MANIFEST_NAME, FLOAT_NAME, TOKENIZER_JSON, WORDS_TXT)
    if not all((d / f).is_file() for f in need):
        return None

    def url(f: str) -> str:
        return f"/export/{name}/{f}"

    int8 = (d / INT8_NAME).is_file()
    return {
        "manifest": url(MANIFEST_NAME),
        "tokenizer": url(TOKENIZER_JSON),
        "words": url(WORDS_TXT),
        "model": url(INT8_NAME if int8 else FLOAT_NAME),
        "model_float": url(FLOAT_NAME),
        "precision": "int8" if int8 else "float32",
    }


TOKENIZER_JSON, WORDS_TXT = "tokenizer.json", "words.txt"
ORT_DIR = STATIC / "vendor" / "onnxruntime-web"
ORT_MEDIA = {  # the runtime files the page loads (application/wasm: the browser compiles while it downloads)
    "ort.wasm.min.mjs": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
EXPORT_FILES = {  # the only files of an export the page may fetch, with their media types
    "manifest.json": "application/json",
    "model.onnx": "application/octet-stream",
    "model.int8.onnx": "application/octet-stream",
    TOKENIZER_JSON: "application/json",
    WORDS_TXT: "text/plain; charset=utf-8",
}


def _planted(run: LoadedRun) -> dict:
    """The run's planted canaries (:func:`.canary.run_canaries`); a run whose config cannot say has none."""
    try:
        return run_canaries(run.path, run.metrics)
    except Exception as e:  # noqa: BLE001 - the keyboard still works; the canary view says "unknown"
        log.warning("canaries of model %s unavailable: %s", run.name, type(e).__name__)
        return {"trained_with_canaries": None, "prefix": None, "words": None, "canaries": [], "audited": False}


def _load_all(runs: Mapping[str, Path | LoadedRun], batch: BatchConfig) -> dict[str, _Model]:
    return {n: _Model(r if isinstance(r, LoadedRun) else load_run(Path(r), n), batch) for n, r in runs.items()}


def _install_handlers(app: FastAPI) -> None:
    """Security headers on every response; errors as small JSON bodies that never quote the input."""

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(ValidationError)
    async def server_validation_error(_request: Request, exc: ValidationError):
        # A pydantic error outside request parsing is a bug here; its report would quote the input.
        log.error("internal validation error in %s (%d errors)", exc.title, exc.error_count())
        return error_response(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        # Report where the problem is, never the input values.
        where = "; ".join(
            ".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in exc.errors()
        )
        return error_response(422, f"invalid request: {where}")


def _add_file_routes(app: FastAPI, models: dict) -> None:
    """The page, its static files, the vendored runtime and each model's on-device export."""

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/vendor/onnxruntime-web/{file}", include_in_schema=False)
    def ort_file(file: str, request: Request):
        """The vendored runtime (scripts/fetch_ort.sh): cached by the browser, the WASM sent gzipped when accepted."""
        path = ORT_DIR / file
        if file not in ORT_MEDIA or not path.is_file():
            raise ApiError(404, "onnxruntime-web is not installed here: run scripts/fetch_ort.sh (setup.sh does)")
        headers = {"Cache-Control": "public, max-age=604800", "Vary": "Accept-Encoding"}
        gz = path.with_name(file + ".gz")
        if gz.is_file() and "gzip" in request.headers.get("accept-encoding", ""):
            return FileResponse(gz, media_type=ORT_MEDIA[file], headers=headers | {"Content-Encoding": "gzip"})
        return FileResponse(path, media_type=ORT_MEDIA[file], headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/export/{name}/{file}", include_in_schema=False)
    def export_file(name: str, file: str):
        model = models.get(name)
        if model is None or file not in EXPORT_FILES or ondevice_files(model) is None:
            raise ApiError(404, "no such export file (see GET /api/models: each model's 'ondevice')")
        return FileResponse(model.export / file, media_type=EXPORT_FILES[file])


def create_app(
    runs: Mapping[str, Path | LoadedRun],
    *,
    warmup: bool = True,
    export: bool = False,
    warm_batches: bool = False,
    batch: BatchConfig = BatchConfig(),
) -> FastAPI:
    """The demo app over ``runs`` (name → run directory, or an already loaded run).

    Each model is loaded once, here; with ``warmup`` every model answers a few
    requests before the app starts so the first key press is not a compile
    (with ``warm_batches`` also every batched shape: a server under load needs them).
    With ``export`` a run without a complete export is exported first, so the
    page can run it on the device.
    """
    if not runs:
        raise RunNotFound("no trained runs to serve: train some with `keyboard-fl main` (writes runs/main/)")
    if export:
        ensure_exports(runs)
    models = _load_all(runs, batch)
    for m in models.values() if warmup else ():
        for probe in ("", "a", "a "):
            m.suggester.suggest(probe, NUM_SUGGESTIONS)
        if warm_batches and hasattr(m.run.suggester, "warm_batches"):
            m.run.suggester.warm_batches()

    # The OpenAPI schema is served (clients, fuzzers); the interactive docs pages load a CDN, so stay off.
    app = FastAPI(
        title="keyboard_fl demo", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json"
    )
    app.state.models = models

    _install_handlers(app)
    _add_file_routes(app, models)

    @app.get("/api/models")
    def list_models():
        return {
            "models": [m.info | {"ondevice": ondevice_files(m)} for m in models.values()],
            "default": _default_model(models),
            "limits": {"max_text_chars": MAX_TEXT_CHARS, "max_body_bytes": MAX_BODY_BYTES},
        }

    @app.post(SUGGEST_PATH, openapi_extra=suggest_body_schema(list(models)))
    async def suggest(request: Request):
        """The suggestion strip (3 words) of one model for the text before the cursor."""
        return await _suggest(models, await _read_body(request))  # served by SuggestFastPath in front

    app.add_middleware(
        SuggestFastPath, handle=lambda body: _suggest(models, body)
    )  # outermost of ours: adds the security headers itself

    @app.get("/api/canaries")
    def list_canaries():
        """Simulation: the synthetic secrets planted in each model's training, shown on purpose."""
        per_model = [m.info | m.canaries for m in models.values()]
        return {**canary_format(per_model), "models": per_model, "note": CANARY_NOTE}

    @app.post("/api/canary-check", openapi_extra=request_body_schema(CanaryCheckRequest))
    async def canary_check(request: Request):
        """Type the text into every model: its strip, greedy completion and whether that is a planted secret."""
        text = clean_text(parse(CanaryCheckRequest, await _read_body(request)).text)
        from starlette.concurrency import run_in_threadpool

        fmt = canary_format([m.canaries for m in models.values()])
        rows = [await run_in_threadpool(_check_one, m, text, fmt) for m in models.values()]
        return {"words": fmt["words"], "models": rows}

    return app


CANARY_NOTE = (
    "simulation: the secrets are synthetic (random spelled digits) planted in simulated users' training "
    "messages by --canaries, drawn again from each run's config; no real user's text is involved"
)


def _check_one(model: _Model, text: str, fmt: dict) -> dict:
    """One model's row of the canary check; a failure is reported by type only (never the text)."""
    head = {**model.info, "trained_with_canaries": model.canaries["trained_with_canaries"]}
    try:
        with model.lock:
            return head | check(model.suggester, text, fmt, model.canaries)
    except Exception as e:  # noqa: BLE001 - never let the message (it may quote the text) reach a log
        log.error("canary check failed in model %s: %s", model.info["name"], type(e).__name__)
        return head | {"error": "the model failed on this input"}


async def _suggest(models: Mapping[str, _Model], body: bytes) -> JSONResponse:
    """``POST /api/suggest`` from its body: parse, pick the model, answer (or raise :class:`ApiError`)."""
    req = parse(SuggestRequest, body)
    model = models.get(req.model)
    if model is None:
        raise ApiError(404, f"unknown model {req.model[:64]!r}; available: {', '.join(models)}")
    return await _answer(model, clean_text(req.text))


async def _answer(model: _Model, text: str) -> JSONResponse:
    """The strip for ``text``, computed in a batch with the requests that arrive with it."""
    try:
        words, kind, ms = await model.batcher(text)
    except Exception as e:  # noqa: BLE001 - never let the message (it may quote the text) reach a log
        log.error("suggestion failed in model %s: %s", model.info["name"], type(e).__name__)
        return error_response(500, "the model failed on this input")
    return JSONResponse({"model": model.info["name"], "suggestions": words, "kind": kind, "ms": ms})


def _default_model(models: Mapping[str, _Model]) -> str:
    for m in models.values():
        if m.info["mode"] == DP_FEDAVG:
            return m.info["name"]
    return next(iter(models))


def _check_port(host: str, port: int) -> None:
    """Fail fast, with one clear line, when the address is taken (before loading any model)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise OSError(
                f"cannot listen on {host}:{port}: {e.strerror} (another demo running? pick another --port)"
            ) from None


# How the demo is served (serve() and benchmarks/load_demo.py). Access-log lines carry no bodies, but
# they are off anyway: a keyboard demo has no reason to keep who asked when. Proxy headers are off: the
# demo reads no client address or scheme, and uvicorn's X-Forwarded-* check parsed an IP address per
# request (it showed in a profile under load).
UVICORN_OPTIONS = {"access_log": False, "log_level": "warning", "server_header": False, "proxy_headers": False}
WORKER_ENV = "KEYBOARD_FL_DEMO_WORKER"  # serve(workers > 1) tells its worker processes what to load


def serve(
    runs_root: Path = DEFAULT_RUNS_ROOT,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    access_log: bool = False,
    backend: str = "jax",
    warm_batches: bool = True,
    workers: int = 1,
) -> None:
    """Discover the finished runs under ``runs_root`` and serve the demo until interrupted.

    ``workers`` > 1 serves from that many processes (uvicorn's worker pool on one listening socket),
    each loading every model: more cores for the Python work, smaller batches each.
    """
    import uvicorn

    _check_port(host, port)
    runs = discover_runs(runs_root)
    if not runs:
        raise RunNotFound(
            f"no finished runs under {runs_root} (a run is a directory with metrics.json and model/); "
            "train them with `keyboard-fl main`, or pass another directory"
        )
    options = UVICORN_OPTIONS | {"access_log": access_log}
    if workers > 1:
        ensure_exports(runs)  # once, before the workers start
        os.environ[WORKER_ENV] = json.dumps(
            {"runs": {n: str(p) for n, p in runs.items()}, "backend": backend, "warm_batches": warm_batches}
        )
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, host=host, port=port, **options)
        return
    loaded = load_runs(runs, backend=backend)  # one broken run does not take the others down
    if not loaded:
        raise RunNotFound(f"none of the runs under {runs_root} could be loaded ({', '.join(map(str, runs.values()))})")
    app = create_app(loaded, export=True, warm_batches=warm_batches)
    uvicorn.run(app, host=host, port=port, **options)


def worker_app() -> FastAPI:
    """The app of one worker process of ``serve(workers=n)``: the runs its parent named in :data:`WORKER_ENV`."""
    spec = json.loads(os.environ[WORKER_ENV])
    loaded = load_runs(spec["runs"], backend=spec["backend"])
    if not loaded:
        raise RunNotFound(f"none of the runs could be loaded ({', '.join(spec['runs'].values())})")
    return create_app(loaded, warm_batches=spec["warm_batches"])


__all__ = ["create_app", "serve", "worker_app", "clean_text", "MAX_BODY_BYTES", "MAX_TEXT_CHARS", "UVICORN_OPTIONS"]
