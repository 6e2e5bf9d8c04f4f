"""One log line per call, a failure's traceback exactly once, and redaction with a findable request id."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend import ActionCtx, AppError, MutationCtx, QueryCtx, action, mutation, query
from backend.calllog import JsonFormatter, TextFormatter
from backend.logs import capture_print
from backend.testing import TestBackend
from tests.support.sync_client import RawClient

SECRET = "boom-" + uuid.uuid4().hex


@query
async def fails(ctx: QueryCtx, n: int) -> int:
    print("about to fail", n)
    ctx.log.warn("warned", {"n": n})
    raise ValueError(SECRET)


@mutation
async def fails_writing(ctx: MutationCtx, n: int) -> int:
    ctx.log("mutating", n)
    raise KeyError(SECRET)


@action
async def fails_acting(ctx: ActionCtx) -> None:
    raise RuntimeError(SECRET)


@query
async def answers(ctx: QueryCtx, n: int) -> int:
    ctx.log("x" * 5000)
    if n < 0:
        raise AppError({"code": "negative", "n": n}, "n must not be negative")
    return n


FUNCTIONS = {"logs:fails": fails, "logs:fails_writing": fails_writing, "logs:fails_acting": fails_acting,
             "logs:answers": answers}


@pytest.fixture
def app(tb: TestBackend, caplog: pytest.LogCaptureFixture) -> Iterator[TestBackend]:
    assert tb.backend is not None
    for path, fn in FUNCTIONS.items():
        if path not in tb.backend.registry.functions:
            tb.backend.registry.add(path, fn.spec)
    caplog.set_level(logging.INFO, logger="backend.calls")
    yield tb
    tb.backend.runner.expose_errors = tb.backend.config.dev = False


@pytest.fixture(params=["production", "dev"])
def mode(request: pytest.FixtureRequest, app: TestBackend) -> str:
    assert app.backend is not None
    app.backend.runner.expose_errors = app.backend.config.dev = request.param == "dev"
    return str(request.param)


def calls(caplog: pytest.LogCaptureFixture, path: str) -> list[dict[str, Any]]:
    return [r.call for r in caplog.records if getattr(r, "call", {}).get("path") == path]  # type: ignore[attr-defined]


def tracebacks_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records that printed a traceback of an exception carrying SECRET."""
    # The engine's log filter renders (and bounds) a traceback into ``exc_text`` before handlers see it.
    return [r for r in caplog.records if (r.exc_info and SECRET in str(r.exc_info[1]))
            or (r.exc_text and "Traceback" in r.exc_text and SECRET in r.exc_text)]


def request_id_in(message: str) -> str:
    found = re.match(r"^\[Request ID: ([0-9a-f]{16})\] Server Error", message)
    assert found, message
    return found.group(1)


def check_redaction(mode: str, message: str) -> None:
    if mode == "dev":
        assert "Uncaught" in message and SECRET in message
    else:
        assert SECRET not in message


async def post(tb: TestBackend, route: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=tb.url) as client:
        return await client.post(route, json=body)


@pytest.mark.parametrize(("route", "path", "args", "error"), [
    ("/api/query", "logs:fails", {"n": 1}, "ValueError"),
    ("/api/mutation", "logs:fails_writing", {"n": 2}, "KeyError"),
    ("/api/action", "logs:fails_acting", {}, "RuntimeError"),
])
async def test_http_failure_is_logged_once_with_the_id_the_caller_gets(
    app: TestBackend, mode: str, caplog: pytest.LogCaptureFixture, route: str, path: str, args: Any, error: str
) -> None:
    capture_print()  # pytest swaps sys.stdout around each test, dropping the router the server installed
    response = await post(app, route, {"path": path, "args": args})
    assert response.status_code == 500
    message = response.json()["message"]
    check_redaction(mode, message)
    rid = request_id_in(message)
    [line] = calls(caplog, path)
    assert line["outcome"] == "failed" and line["code"] == error and line["requestId"] == rid
    assert line["source"] == "http" and line["durationMs"] >= 0
    [printed] = tracebacks_of(caplog)  # the traceback once: not again by the HTTP layer
    assert printed.getMessage().startswith(f"{route[5:]} {path} ")
    assert f"[Request ID: {rid}]" in printed.getMessage()
    if path == "logs:fails":
        assert line["logLines"] == ["[LOG] 'about to fail 1'", "[WARN] 'warned' {\"n\":1}"]


async def test_socket_failures_carry_the_logged_request_id(
    app: TestBackend, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture_print()
    async with RawClient.open(app.port) as client:
        [qid] = await client.subscribe(("logs:fails", {"n": 7}))
        failed = client.failures[qid]
        check_redaction(mode, failed["errorMessage"])
        assert failed["logLines"][0] == "[LOG] 'about to fail 7'"
        [line] = calls(caplog, "logs:fails")
        assert line["source"] == "ws" and line["requestId"] == request_id_in(failed["errorMessage"])
        response, _ = await client.mutation("logs:fails_writing", {"n": 3})
        assert response["success"] is False
        check_redaction(mode, response["result"])
        [line] = calls(caplog, "logs:fails_writing")
        assert line["requestId"] == request_id_in(response["result"])
    assert len(tracebacks_of(caplog)) == 2


async def test_ok_and_app_error_lines_are_bounded(app: TestBackend, caplog: pytest.LogCaptureFixture) -> None:
    ok = await post(app, "/api/query", {"path": "logs:answers", "args": {"n": 4}})
    assert ok.json()["value"] == 4.0
    assert len(ok.json()["logLines"][0]) > 4000  # the caller gets the whole line
    refused = await post(app, "/api/query", {"path": "logs:answers", "args": {"n": -1}})
    assert refused.json()["errorData"] == {"code": "negative", "n": -1.0}
    bad_args = await post(app, "/api/query", {"path": "logs:answers", "args": {"n": "x"}})
    assert bad_args.status_code == 400
    first, second, third = calls(caplog, "logs:answers")
    assert first["outcome"] == "ok" and "code" not in first
    assert len(first["logLines"][0]) < 1100 and first["logLines"][0].endswith("more chars)")
    assert (second["outcome"], second["code"], second["message"]) == ("error", "negative", "n must not be negative")
    assert (third["outcome"], third["code"]) == ("error", "BadArgs")
    assert not tracebacks_of(caplog)
    text = TextFormatter().format(next(r for r in caplog.records if getattr(r, "call", None) is second))
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} query logs:answers \d+\.\dms error negative: n must not be negative "
                    r"\(http\)\n    \[LOG\] 'x{100}", text)


async def test_json_lines_hold_the_same_fields(app: TestBackend, caplog: pytest.LogCaptureFixture) -> None:
    response = await post(app, "/api/query", {"path": "logs:fails", "args": {"n": 9}})
    rid = request_id_in(response.json()["message"])
    [record] = [r for r in caplog.records if getattr(r, "call", {}).get("requestId") == rid]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert body["level"] == "error" and body["logger"] == "backend.calls"
    assert (body["kind"], body["path"], body["outcome"], body["code"]) == ("query", "logs:fails", "failed", "ValueError")
    assert body["requestId"] == rid and SECRET in body["traceback"] and body["time"].endswith("+00:00")
