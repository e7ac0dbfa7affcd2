"""The demo's pure ASGI pieces: security headers, JSON errors and the ``POST /api/suggest`` fast path.

Written against the bare ASGI interface rather than as FastAPI middleware because
``@app.middleware("http")`` and the router cost a task, a stream and ~0.25 ms of the
event loop per request, which showed in a profile under load (issue 20).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect

from keyboard_fl.demo.schemas import MAX_BODY_BYTES, ApiError

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Everything the page needs comes from this server: no CDN, no network.
    # 'wasm-unsafe-eval' lets the page compile onnxruntime-web's WebAssembly (and nothing else: no eval).
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers={"Cache-Control": "no-store"})


async def read_asgi_body(scope, receive) -> bytes:
    """The request body on the bare ASGI interface (:class:`SuggestFastPath`); a client that hangs up
    raises ``ClientDisconnect`` as Starlette's ``Request.stream`` does."""
    declared = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None:
        try:
            if int(declared) > MAX_BODY_BYTES:
                raise ApiError(413, f"request body is {int(declared)} bytes; the limit is {MAX_BODY_BYTES}")
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
        if not message.get("more_body", False):
            return body


class SecurityHeaders:
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` to every response that lacks them
    (``@app.middleware("http")`` costs a task and a stream per request: it showed under load)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        return await self.app(scope, receive, send_with_headers)


SUGGEST_PATH = "/api/suggest"


class SuggestFastPath:
    """Pure ASGI middleware answering ``POST /api/suggest`` itself, past FastAPI's routing, dependency
    resolution and exception middleware (together ~0.25 ms of the event loop's CPU per request, as much
    as the batched model call: profiled under load). Same handler, same responses — bodies, status
    codes, headers (:data:`SECURITY_HEADERS` too) — as the route, which stays for the OpenAPI schema
    and answers every other method and path."""

    def __init__(self, app, handle: Callable[[bytes], Awaitable[Response]]):
        self.app, self.handle = app, handle  # handle(body) -> the route's response, or raises ApiError

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != SUGGEST_PATH:
            return await self.app(scope, receive, send)
        try:
            response = await self.handle(await read_asgi_body(scope, receive))
        except ApiError as e:
            response = error_response(e.status, e.message)
        except ClientDisconnect:
            return None
        except ValidationError as e:  # as the app's handler does: a bug here, and its report would quote the input
            log.error("internal validation error in %s (%d errors)", e.title, e.error_count())
            response = error_response(500, "internal error")
        for k, v in SECURITY_HEADERS_RAW:
            if all(k != h for h, _ in response.raw_headers):
                response.raw_headers.append((k, v))
        return await response(scope, receive, send)


SECURITY_HEADERS_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]


__all__ = ["SECURITY_HEADERS", "SUGGEST_PATH", "SecurityHeaders", "SuggestFastPath", "error_response", "read_asgi_body"]
