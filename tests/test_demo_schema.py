"""Typed demo requests (keyboard_fl.demo.schemas): bounds, the OpenAPI schema, and no typed text in errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from keyboard_fl.demo.app import create_app  # noqa: E402
from keyboard_fl.demo.schemas import (  # noqa: E402
    MAX_TEXT_CHARS,
    ApiError,
    CanaryCheckRequest,
    SuggestRequest,
    parse,
)

CANARY = "zebraquokka secretword"


def _parse_error(cls, payload) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(cls, json.dumps(payload).encode())
    return e.value


def test_parse_accepts_valid_requests_and_bounds_the_text():
    req = parse(SuggestRequest, json.dumps({"model": "central", "text": "x" * MAX_TEXT_CHARS}).encode())
    assert req.model == "central" and len(req.text) == MAX_TEXT_CHARS
    assert parse(CanaryCheckRequest, b'{"text": ""}').text == ""
    e = _parse_error(SuggestRequest, {"model": "central", "text": "x" * (MAX_TEXT_CHARS + 1)})
    assert e.status == 413 and f"is {MAX_TEXT_CHARS + 1} characters" in e.message
    assert _parse_error(SuggestRequest, {"model": "c" * 201, "text": ""}).status == 422
    assert "'text' must be a string, got int" in _parse_error(SuggestRequest, {"model": "c", "text": 5}).message
    assert (
        "'text' must be a string" in _parse_error(SuggestRequest, {"model": "c", "text": True}).message
    )  # strict: no coercion


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "central", "text": CANARY * 60},  # too long
        {"model": "central", "text": [CANARY]},  # wrong type
        {"model": [CANARY], "text": CANARY},  # bad model with the text beside it
        {"model": "central", "text": CANARY, "extra": CANARY},  # unknown field carrying the text
        [CANARY],  # not an object
        {"text": CANARY},  # missing model
    ],
)
def test_errors_describe_shape_never_content(payload):
    e = _parse_error(SuggestRequest, payload)
    assert 400 <= e.status < 500
    for secret in ("zebraquokka", "secretword"):
        assert secret not in e.message


@pytest.fixture(scope="module")
def client(tiny_runs):
    with TestClient(create_app(tiny_runs), raise_server_exceptions=False) as c:
        yield c


def test_openapi_schema_describes_suggest_with_its_bounds(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    body = spec["paths"]["/api/suggest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert body["properties"]["model"]["minLength"] == 1 and body["required"] == ["model", "text"]
    assert body["additionalProperties"] is False
    check = spec["paths"]["/api/canary-check"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert check["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert "/" not in spec["paths"] and "/api/models" in spec["paths"]
    assert client.get("/docs").status_code == 404  # the docs pages (they load a CDN) stay off


def test_http_error_bodies_carry_no_input_field(client):
    for body in (
        {"model": "central", "text": CANARY * 60},
        {"model": "central", "text": {"t": CANARY}},
        {"model": "central", "text": CANARY, "k": CANARY},
    ):
        r = client.post("/api/suggest", json=body)
        assert r.status_code in (413, 422), r.text
        assert set(r.json()) == {"error", "status"} and "input" not in r.text and "zebraquokka" not in r.text
    r = client.post("/api/canary-check", json={"text": [CANARY]})
    assert r.status_code == 422 and set(r.json()) == {"error", "status"} and "zebraquokka" not in r.text
