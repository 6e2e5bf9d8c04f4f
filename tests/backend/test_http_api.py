"""The HTTP API: envelopes, value encoding, errors with codes and paths, exactly-nothing-left-behind."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from backend.testing import TestBackend


async def post(tb: TestBackend, route: str, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=tb.url) as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await client.post(route, content=content, headers=headers)


async def test_mutation_then_query_round_trip(tb: TestBackend) -> None:
    name = f"c-{uuid.uuid4()}"
    first = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": name}, "format": "convex_encoded_json"})
    assert first.status_code == 200
    assert first.json() == {"status": "success", "value": 1.0, "logLines": []}
    # args as a one-element array, as the JS client sends them
    second = await post(tb, "/api/mutation", {"path": "counters:increment", "args": [{"name": name, "by": 4}]})
    assert second.json()["value"] == 5.0
    read = await post(tb, "/api/query", {"path": "counters:get", "args": {"name": name}})
    assert read.json()["value"] == 5.0
    assert b"5.0" in read.content  # numbers travel as floats (the Python HTTP client rejects JSON integers)


async def test_unknown_function_is_404_with_code(tb: TestBackend) -> None:
    response = await post(tb, "/api/query", {"path": "nope:nothing", "args": {}})
    assert response.status_code == 404
    assert response.json()["code"] == "FunctionNotFound"


async def test_internal_function_is_unreachable(tb: TestBackend) -> None:
    response = await post(tb, "/api/mutation", {"path": "counters:reset", "args": {"name": "x"}})
    assert response.status_code == 404
    assert response.json()["code"] == "FunctionNotFound"
    run = await post(tb, "/api/run/counters/reset", {"args": {"name": "x"}})
    assert run.status_code == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": 5}, "$.args.name: expected `str`, got `int`"),
        ({}, "$.args.name: missing required field"),
        ({"name": "a", "extra": 1}, "$.args.extra: unknown field"),
        ({"name": "a", "by": 1.5}, "$.args.by: expected `int`, got `float`"),
    ],
)
async def test_bad_args_name_the_field_and_rule(tb: TestBackend, args: Any, message: str) -> None:
    response = await post(tb, "/api/mutation", {"path": "counters:increment", "args": args})
    assert response.status_code == 400
    assert response.json() == {"code": "BadArgs", "message": message}


async def test_bad_timezone_and_bad_id(tb: TestBackend) -> None:
    token = tb.token("alice")
    response = await post(tb, "/api/mutation", {"path": "businesses:create", "args": {"name": "Y", "timezone": "Mars/Base"}}, token)
    assert response.status_code == 400
    assert response.json()["message"] == "$.args.timezone: not an IANA time zone"
    response = await post(tb, "/api/query", {"path": "businesses:get", "args": {"businessId": "not-an-id"}}, token)
    assert response.status_code == 400
    assert response.json()["message"].startswith("$.args.businessId: not a valid id")


async def test_malformed_json_and_envelope(tb: TestBackend) -> None:
    response = await post(tb, "/api/query", b'{"path": ')
    assert response.status_code == 400
    assert response.json()["code"] == "BadRequest"
    response = await post(tb, "/api/query", {"args": {}})
    assert response.status_code == 400


async def test_app_error_reaches_client_with_data_and_leaves_nothing(tb: TestBackend) -> None:
    name = f"fail-{uuid.uuid4()}"
    response = await post(tb, "/api/mutation", {"path": "counters:fail_after_write", "args": {"name": name}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error"
    assert body["errorMessage"] == "failed on purpose"
    assert body["errorData"] == {"code": "boom", "name": name}
    rows = await tb.sql("SELECT count(*) AS n FROM counters WHERE name = $1", name)
    assert rows[0]["n"] == 0


async def test_health(tb: TestBackend) -> None:
    async with httpx.AsyncClient(base_url=tb.url) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_double_slash_from_trailing_slash_address(tb: TestBackend) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{tb.url}//api/query", json={"path": "counters:get", "args": {"name": "zz"}})
    assert response.status_code == 200
    assert response.json()["value"] == 0.0
