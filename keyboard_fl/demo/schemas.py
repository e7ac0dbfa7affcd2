"""Typed requests of the demo API: pydantic models with bounds, and errors that never echo typed text.

The models are the API's contract: they validate each request (strict types,
no unknown fields, ``text`` ≤ :data:`MAX_TEXT_CHARS` characters) and their JSON
schemas are published in ``/openapi.json`` for clients and fuzzers.
Pydantic's own error reports carry the offending ``input`` (the typed text);
:func:`parse` turns them into one message about the request's *shape* —
field, type, length — never its content (DESIGN.md §3).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BODY_BYTES = 8192  # 1,000 characters of JSON-escaped text (≤ 6 bytes each) fit; more is refused
MAX_TEXT_CHARS = 1000  # the text before the cursor; a keyboard needs far less context than this
MAX_MODEL_CHARS = 200  # run names are directory names

M = TypeVar("M", bound="BaseModel")


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a message that names no typed text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


_TEXT = Field(
    max_length=MAX_TEXT_CHARS,
    description=f"the text typed so far (may be empty; at most {MAX_TEXT_CHARS} characters); never logged or stored",
)


class SuggestRequest(BaseModel):
    """``POST /api/suggest``: the strip for one model and the text before the cursor."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS, description="a model name from GET /api/models")
    text: str = _TEXT


class CanaryCheckRequest(BaseModel):
    """``POST /api/canary-check``: the canary prefix (or more) typed into every model."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = _TEXT


def request_body_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an endpoint that reads ``cls`` as JSON (FastAPI ``openapi_extra``)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": cls.model_json_schema()}}}}


def suggest_body_schema(models: list[str]) -> dict[str, Any]:
    """:func:`request_body_schema` of :class:`SuggestRequest`, ``model`` listing the names served (for clients
    and fuzzers; an unknown name is still parsed and answered 404)."""
    spec = request_body_schema(SuggestRequest)
    spec["requestBody"]["content"]["application/json"]["schema"]["properties"]["model"]["enum"] = list(models)
    return spec


def parse(cls: type[M], body: bytes) -> M:
    """The request in ``body`` as a ``cls``; :class:`ApiError` (4xx) describing its shape otherwise."""
    fields = tuple(cls.model_fields)
    shape = "{" + ", ".join(f'"{f}": "<{"name" if f == "model" else "typed text"}>"' for f in fields) + "}"
    if not body.strip():
        raise ApiError(400, f"empty body: send JSON {shape}")
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise ApiError(400, f"request body is not valid JSON: send {shape}") from None
    try:
        return cls.model_validate(payload)
    except ValidationError as e:
        raise _shape_error(e.errors(include_input=True, include_url=False), fields) from None


def _shape_error(errors: list[dict[str, Any]], fields: tuple[str, ...]) -> ApiError:
    """One ApiError for pydantic's errors: the first of unknown fields, then ``model``, then ``text``."""
    extra = [str(e["loc"][0])[:40] for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        expected = " and ".join(repr(f) for f in fields)
        return ApiError(422, f"unknown field(s): {', '.join(map(repr, extra[:5]))}; expected {expected}")
    first = min(errors, key=lambda e: fields.index(e["loc"][0]) if e["loc"] and e["loc"][0] in fields else -1)
    kind, loc, value = first["type"], first["loc"], first.get("input")
    if not loc:
        return ApiError(422, f"request body must be a JSON object, got {type(value).__name__}")
    if loc[0] == "model":
        return ApiError(422, "'model' must be a non-empty string (see GET /api/models)")
    if kind == "missing":
        return ApiError(422, f"'{loc[0]}' is required (a string, may be empty)")
    if kind == "string_too_long":
        return ApiError(
            413,
            f"'{loc[0]}' is {len(value)} characters; the limit is {MAX_TEXT_CHARS} "
            "(send the text before the cursor, trimmed)",
        )
    if kind == "string_unicode":  # JSON can carry a lone surrogate ("\\ud800"); Python strings cannot encode it
        return ApiError(400, f"'{loc[0]}' is not valid Unicode (it contains a lone surrogate)")
    if kind == "string_type":
        return ApiError(422, f"'{loc[0]}' must be a string, got {type(value).__name__}")
    return ApiError(422, f"'{loc[0]}' is invalid ({kind})")


__all__ = [
    "ApiError",
    "CanaryCheckRequest",
    "MAX_BODY_BYTES",
    "MAX_TEXT_CHARS",
    "SuggestRequest",
    "parse",
    "request_body_schema",
    "suggest_body_schema",
]
