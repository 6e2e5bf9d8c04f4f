"""Bad input on the sync socket: each is answered on that socket alone (FatalError and a close, or a failed
query), limits hold, and a second, healthy socket keeps receiving its updates throughout."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient, ts_text


class Healthy:
    """A well-behaved socket subscribed to its own counter."""

    def __init__(self, tb: TestBackend, client: RawClient, name: str, query_id: int) -> None:
        self.tb, self.client, self.name, self.query_id = tb, client, name, query_id

    async def still_updates(self) -> None:
        before = self.client.results[self.query_id]
        await self.tb.mutation("counters:increment", {"name": self.name})
        await self.client.until(lambda: self.client.results[self.query_id] == before + 1)


@pytest.fixture
async def healthy(tb: TestBackend) -> AsyncIterator[Healthy]:
    name = f"healthy-{uuid.uuid4().hex[:10]}"
    async with RawClient.open(tb.port) as client:
        (query_id,) = await client.subscribe(("counters:get", {"name": name}))
        yield Healthy(tb, client, name, query_id)


async def fatal(client: RawClient) -> str:
    """The socket answers FatalError and then closes."""
    messages, closed = await client.closed()
    fatals = [m for m in messages if m["type"] == "FatalError"]
    assert len(fatals) == 1, messages
    assert closed.rcvd is not None
    error: str = fatals[0]["error"]
    return error


def hub_instances(tb: TestBackend, marker: str) -> int:
    hub = tb.backend.hub  # type: ignore[union-attr]
    return sum(1 for key in hub.instances if marker.encode() in key[1])


async def test_malformed_json_is_fatal(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port) as client:
        await client.ws.send('{"type": "ModifyQuerySet", "baseVersion": 0,')
        assert "not JSON" in await fatal(client)
    await healthy.still_updates()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "Subscribe", "queryId": 0},
        {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [{"type": "Replace"}]},
        {"type": "Mutation", "requestId": "zero", "udfPath": "counters:increment", "args": [{}]},
        ["Connect"],
    ],
    ids=["unknown-type", "unknown-modification", "wrong-field-type", "not-an-object"],
)
async def test_unknown_or_ill_typed_messages_are_fatal(tb: TestBackend, healthy: Healthy, message: Any) -> None:
    async with RawClient.open(tb.port) as client:
        await client.send(message)
        assert "invalid message" in await fatal(client)
    await healthy.still_updates()


async def test_anything_before_connect_is_fatal(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port, connect=False) as client:
        await client.modify([("counters:get", {"name": healthy.name})])
        assert "Connect" in await fatal(client)
    await healthy.still_updates()


async def test_duplicate_query_id_is_fatal(tb: TestBackend, healthy: Healthy) -> None:
    marker = f"dup-{uuid.uuid4().hex[:10]}"
    async with RawClient.open(tb.port) as client:
        await client.subscribe(("counters:get", {"name": marker}))
        await client.send({"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": marker + "x"}]}]})
        assert "already in the query set" in await fatal(client)
    async with RawClient.open(tb.port) as client:  # twice within one message
        add = {"type": "Add", "queryId": 5, "udfPath": "counters:get", "args": [{"name": marker}]}
        await client.send({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [add, add]})
        assert "already in the query set" in await fatal(client)
    await healthy.still_updates()
    assert hub_instances(tb, marker) == 0, "a closed socket left its subscriptions in the hub"


async def test_removing_an_unknown_query_is_fatal(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port) as client:
        (q,) = await client.subscribe(("counters:get", {"name": healthy.name}))
        await client.modify(removes=[q])
        await client.until(lambda: q not in client.results)
        await client.modify(removes=[q])  # already removed
        assert "not in the query set" in await fatal(client)
    async with RawClient.open(tb.port) as client:
        await client.modify(removes=[41])
        assert "not in the query set" in await fatal(client)
    await healthy.still_updates()


async def test_a_failing_query_fails_alone_and_recovers(tb: TestBackend, healthy: Healthy) -> None:
    name = f"fails-{uuid.uuid4().hex[:10]}"
    async with RawClient.open(tb.port) as client:
        below, plain, missing = await client.subscribe(
            ("counters:below", {"name": name, "limit": 2}),
            ("counters:get", {"name": name}),
            ("counters:nope", {}),
        )
        assert client.results[below] == 0 and client.results[plain] == 0
        assert client.failures[missing]["errorMessage"].startswith("[FunctionNotFound]")
        assert "errorData" not in client.failures[missing]
        for expected in (1, 2):
            _, transition = await client.mutation("counters:increment", {"name": name})
            assert transition is not None and client.results[plain] == expected
        # Both changed queries arrive in one Transition: one failed, one updated; the unknown one is not re-sent.
        assert {m["queryId"]: m["type"] for m in transition["modifications"]} == {
            below: "QueryFailed", plain: "QueryUpdated"}
        failure = client.failures[below]
        assert failure["errorData"] == {"code": "limitReached", "value": 2.0}
        await healthy.still_updates()
        # The failed query is still subscribed to what it read: going back below the limit revives it.
        await client.mutation("counters:increment", {"name": name, "by": -1})
        assert client.results[below] == 1 and below not in client.failures


async def test_bad_arguments_fail_the_query_not_the_socket(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port) as client:
        bad, good = await client.subscribe(("counters:get", {"name": 5}), ("counters:get", {"name": healthy.name}))
        assert client.failures[bad]["errorMessage"].startswith("[BadArgs]")
        await healthy.still_updates()
        await client.until(lambda: client.results[good] == healthy.client.results[healthy.query_id])
        response, _ = await client.mutation("counters:increment", {"name": 7})
        assert response["success"] is False and response["result"].startswith("[BadArgs]")
        await client.send({"type": "Mutation", "requestId": 9, "udfPath": "counters:increment", "args": []})
        message = await client.recv()
        while message["type"] == "Transition":  # every mutation's response, failed ones too, is followed by one
            message = await client.recv()
        assert message["type"] == "MutationResponse" and message["success"] is False


async def test_an_oversized_frame_is_fatal(tb: TestBackend, healthy: Healthy, monkeypatch: Any) -> None:
    monkeypatch.setattr(knobs, "MAX_MESSAGE_BYTES", 64 * 1024)
    async with RawClient.open(tb.port) as client:
        await client.send({"type": "Mutation", "requestId": 0, "udfPath": "counters:increment",
                           "args": [{"name": "x" * 100_000}]})
        assert "larger than" in await fatal(client)
    await healthy.still_updates()


async def test_a_frame_beyond_the_socket_limit_closes_the_socket(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port, max_size=None) as client:
        # Uncompressed, the frame's header alone is refused: the close can come before the send is done.
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send("x" * (33 * 1024 * 1024))
        _, closed = await client.closed(timeout=10)
        assert closed.rcvd is not None and closed.rcvd.code == 1009
    await healthy.still_updates()


async def test_the_query_set_is_bounded(tb: TestBackend, healthy: Healthy, monkeypatch: Any) -> None:
    monkeypatch.setattr(knobs, "MAX_QUERIES_PER_SESSION", 25)
    marker = f"flood-{uuid.uuid4().hex[:10]}"
    async with RawClient.open(tb.port) as client:
        await client.subscribe(*[("counters:get", {"name": f"{marker}-{i}"}) for i in range(10)])
        await client.subscribe(*[("counters:get", {"name": f"{marker}-{i}"}) for i in range(10, 20)])
        await client.modify(removes=list(range(5)))  # 15 left: another 10 fit
        await client.modify([("counters:get", {"name": f"{marker}-{i}"}) for i in range(20, 30)])
        await client.modify([("counters:get", {"name": f"{marker}-{i}"}) for i in range(30, 31)])
        assert "more than 25 queries" in await fatal(client)
        assert len(client.results) <= 25
    await healthy.still_updates()
    assert hub_instances(tb, marker) == 0


async def test_a_flood_of_requests_is_cut_off(tb: TestBackend, healthy: Healthy, monkeypatch: Any) -> None:
    monkeypatch.setattr(knobs, "MAX_INFLIGHT_REQUESTS", 4)
    async with RawClient.open(tb.port) as client:
        for request_id in range(64):
            await client.send({"type": "Mutation", "requestId": request_id, "udfPath": "counters:increment",
                               "args": [{"name": f"{healthy.name}-flood"}]})
        _, closed = await client.closed(timeout=10)
        assert closed.rcvd is not None and closed.rcvd.reason.startswith("TooManyConcurrentRequests")
    await healthy.still_updates()


@pytest.mark.parametrize("value", ["not base64!", ts_text(5)[:8], ts_text(2**63)])
async def test_a_bad_max_observed_timestamp_is_fatal(tb: TestBackend, healthy: Healthy, value: str) -> None:
    async with RawClient.open(tb.port, connect=False) as client:
        await client.send({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 1,
                           "lastCloseReason": None, "clientTs": 0, "maxObservedTimestamp": value})
        assert "maxObservedTimestamp" in await fatal(client)
    await healthy.still_updates()
    assert tb.backend.hub.clock.last < 2**63  # type: ignore[union-attr]


async def test_a_second_connect_is_fatal(tb: TestBackend, healthy: Healthy) -> None:
    async with RawClient.open(tb.port) as client:
        await client.connect()
        assert "Connect sent twice" in await fatal(client)
    await healthy.still_updates()

