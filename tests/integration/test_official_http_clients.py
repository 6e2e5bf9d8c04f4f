"""The official HTTP clients, unmodified, against the real server: npm ``ConvexHttpClient`` (under Node) and
the PyPI ``convex.http_client.ConvexHttpClient``.

Each one signs in with a bearer token, creates a business and reads it back, sees an ``AppError`` arrive as
its own ``ConvexError`` with the error's data (and the failed mutation's write rolled back), and sees bad
arguments rejected with a message that names the offending field.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from convex import ConvexError
from convex.http_client import ConvexHttpClient

from backend.testing import TestBackend
from tests.integration.official_clients import js_client


def _check_business(doc: Any, business_id: str, name: str, timezone: str) -> None:
    assert isinstance(doc, dict), doc
    assert doc["_id"] == business_id
    assert doc["name"] == name
    assert doc["timezone"] == timezone
    assert isinstance(doc["_creationTime"], float)


@pytest.mark.node
async def test_npm_http_client_creates_and_reads_a_business(tb: TestBackend) -> None:
    name = f"Harbour Yoga {uuid.uuid4()}"
    async with js_client(tb.url) as js:
        await js.call("httpSetAuth", token=tb.token(f"owner-{uuid.uuid4()}"))
        business_id = await js.call("http", kind="mutation", path="businesses:create",
                                    args={"name": name, "timezone": "Europe/Lisbon"})
        assert isinstance(business_id, str)
        doc = await js.call("http", kind="query", path="businesses:get", args={"businessId": business_id})
    _check_business(doc, business_id, name, "Europe/Lisbon")


@pytest.mark.node
async def test_npm_http_client_gets_app_error_data_and_field_named_errors(tb: TestBackend) -> None:
    counter = f"http-js-{uuid.uuid4()}"
    async with js_client(tb.url) as js:
        failed = await js.result(await js.send("http", kind="mutation", path="counters:fail_after_write",
                                               args={"name": counter}))
        assert failed["ok"] is False
        assert failed["kind"] == "ConvexError"
        assert failed["data"] == {"code": "boom", "name": counter}
        assert "failed on purpose" in failed["message"]

        await js.call("httpSetAuth", token=tb.token("someone"))
        bad = await js.result(await js.send("http", kind="mutation", path="businesses:create",
                                            args={"name": 5, "timezone": "UTC"}))
        assert bad["ok"] is False and bad["kind"] == "Error"
        assert "BadArgs" in bad["message"] and "$.args.name" in bad["message"], bad

        bad_zone = await js.result(await js.send("http", kind="mutation", path="businesses:create",
                                                 args={"name": "Somewhere", "timezone": "Mars/Olympus"}))
        assert bad_zone["ok"] is False
        assert "BadArgs" in bad_zone["message"] and "$.args.timezone" in bad_zone["message"], bad_zone
    assert await tb.query("counters:get", {"name": counter}) == 0  # the write before the error rolled back


async def test_pypi_http_client_creates_and_reads_a_business(tb: TestBackend) -> None:
    name = f"Tideline Pilates {uuid.uuid4()}"
    client = ConvexHttpClient(tb.url)
    client.set_auth(tb.token(f"owner-{uuid.uuid4()}"))
    business_id = await asyncio.to_thread(
        client.mutation, "businesses:create", {"name": name, "timezone": "America/New_York"})
    assert isinstance(business_id, str)
    doc = await asyncio.to_thread(client.query, "businesses:get", {"businessId": business_id})
    _check_business(doc, business_id, name, "America/New_York")

    stranger = ConvexHttpClient(tb.url)
    stranger.set_auth(tb.token(f"stranger-{uuid.uuid4()}"))
    with pytest.raises(Exception, match="404 NotFound"):  # not a member: the business does not exist for them
        await asyncio.to_thread(stranger.query, "businesses:get", {"businessId": business_id})


async def test_pypi_http_client_gets_app_error_data_and_field_named_errors(tb: TestBackend) -> None:
    counter = f"http-py-{uuid.uuid4()}"
    client = ConvexHttpClient(tb.url)
    with pytest.raises(ConvexError) as caught:
        await asyncio.to_thread(client.mutation, "counters:fail_after_write", {"name": counter})
    assert caught.value.data == {"code": "boom", "name": counter}
    assert await tb.query("counters:get", {"name": counter}) == 0

    client.set_auth(tb.token("someone"))
    with pytest.raises(Exception, match=r"^400 BadArgs: \$\.args\.name: ") as bad:
        await asyncio.to_thread(client.mutation, "businesses:create", {"name": 5, "timezone": "UTC"})
    assert not isinstance(bad.value, ConvexError)
    with pytest.raises(Exception, match=r"^400 BadArgs: \$\.args\.timezone: "):
        await asyncio.to_thread(client.mutation, "businesses:create", {"name": "X", "timezone": "Mars/Olympus"})

    # Numbers survive the trip both ways (the legacy client rejects bare JSON integers in responses).
    assert await asyncio.to_thread(client.mutation, "counters:increment", {"name": counter, "by": 3}) == 3
    assert await asyncio.to_thread(client.query, "counters:get", {"name": counter}) == 3
