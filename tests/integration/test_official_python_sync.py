"""The PyPI ``convex.ConvexClient`` (0.8.1, the Rust sync client, unmodified) against the real server.

The client runs in a child process (official_python_driver.py): its blocking calls hold the GIL while they
wait, which would freeze a server running in this process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from convex.http_client import ConvexHttpClient

from backend.testing import TestBackend
from tests.integration.official_clients import ClientProcess, python_client


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TestBackend]:
    """A server of this module's own: one test closes every socket on it."""
    async with TestBackend(run_scheduler=False) as harness:
        yield harness


def _name() -> str:
    return f"py-{uuid.uuid4()}"


async def _update(client: ClientProcess, sub: str, value: object, *, after: int = 0) -> None:
    await client.expect(lambda e: e["event"] == "update" and e["sub"] == sub and e["value"] == value, after=after)


async def test_query_and_mutation_results(server: TestBackend) -> None:
    name = _name()
    async with python_client(server.url) as client:
        assert await client.call("query", path="counters:get", args={"name": name}) == 0
        assert await client.call("mutation", path="counters:increment", args={"name": name, "by": 4}) == 4
        assert await client.call("mutation", path="counters:increment", args={"name": name}) == 5
        assert await client.call("query", path="counters:get", args={"name": name}) == 5
        listed = await client.call("query", path="counters:list_all", args={})
        assert {"name": name, "value": 5} in [{"name": r["name"], "value": r["value"]} for r in listed]
    assert await server.query("counters:get", {"name": name}) == 5


async def test_subscription_sees_other_clients_writes(server: TestBackend) -> None:
    name = _name()
    other = ConvexHttpClient(server.url)
    async with python_client(server.url) as client:
        await client.call("subscribe", sub="c", path="counters:get", args={"name": name})
        await _update(client, "c", 0)
        await asyncio.to_thread(other.mutation, "counters:increment", {"name": name})
        await _update(client, "c", 1)
        await server.mutation("counters:increment", {"name": name, "by": 2})
        await _update(client, "c", 3)
        assert client.updates("c") == [0, 1, 3]
        await client.call("unsubscribe", sub="c")


async def test_app_errors_surface_as_convex_error_with_data(server: TestBackend) -> None:
    name = _name()
    async with python_client(server.url) as client:
        failed = await client.result(await client.send("mutation", path="counters:fail_after_write",
                                                       args={"name": name}))
        assert failed["ok"] is False and failed["kind"] == "ConvexError"
        assert failed["data"] == {"code": "boom", "name": name}

        await server.mutation("counters:increment", {"name": name, "by": 2})
        limited = await client.result(await client.send("query", path="counters:below",
                                                        args={"name": name, "limit": 2}))
        assert limited["ok"] is False and limited["kind"] == "ConvexError"
        assert limited["data"] == {"code": "limitReached", "value": 2}

        # A subscription reports the failure and carries on once the query succeeds again.
        await client.call("subscribe", sub="b", path="counters:below", args={"name": name, "limit": 2})
        error = await client.expect(lambda e: e["event"] == "queryError" and e["sub"] == "b")
        assert error["kind"] == "ConvexError" and error["data"] == {"code": "limitReached", "value": 2}
        await server.mutation("counters:increment", {"name": name, "by": -1})
        await _update(client, "b", 1)

        bad = await client.result(await client.send("mutation", path="counters:increment", args={"name": 5}))
        assert bad["ok"] is False and bad["kind"] != "ConvexError"
        assert "[BadArgs] $.args.name" in bad["message"], bad
    assert await server.query("counters:get", {"name": name}) == 1  # the failed mutation's write rolled back


async def test_authenticated_calls_over_the_socket(server: TestBackend) -> None:
    name = f"Quayside Barre {uuid.uuid4()}"
    async with python_client(server.url) as client:
        await client.call("setAuth", token=server.token(f"owner-{uuid.uuid4()}", name="Ann"))
        business_id = await client.call("mutation", path="businesses:create", args={"name": name, "timezone": "UTC"})
        doc = await client.call("query", path="businesses:get", args={"businessId": business_id})
        assert doc["_id"] == business_id and doc["name"] == name
        await client.call("setAuth", token=server.token(f"stranger-{uuid.uuid4()}"))
        hidden = await client.result(await client.send("query", path="businesses:get",
                                                       args={"businessId": business_id}))
        assert hidden["ok"] is False and "NotFound" in hidden["message"]


async def test_subscription_survives_a_server_side_socket_drop(server: TestBackend) -> None:
    name = _name()
    async with python_client(server.url) as client:
        await client.call("subscribe", sub="c", path="counters:get", args={"name": name})
        await _update(client, "c", 0)
        assert server.backend is not None and server.backend.drop_connections() >= 1
        # The client reconnects on its own, on a new session, and re-adds its query: whether the write below
        # lands before or after that, the subscription must deliver it.
        await server.mutation("counters:increment", {"name": name})
        await _update(client, "c", 1)
        assert await client.call("mutation", path="counters:increment", args={"name": name}) == 2
        await _update(client, "c", 2)
