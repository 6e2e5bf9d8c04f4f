"""The npm ``ConvexClient`` (convex/browser 1.48.0, unmodified) over the sync protocol against the real server.

tests/js/driver.mjs runs the client in Node and reports what the application sees (onUpdate values and
errors, mutation results) and every frame on its WebSocket. The tests check the client's view first, and the
frames where the protocol itself is the point (Remove → QueryRemoved, the replay after a socket drop).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.integration.official_clients import ClientProcess, js_client

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TestBackend]:
    """A server of this module's own: the socket-drop tests close every socket on it."""
    async with TestBackend(run_scheduler=False) as harness:
        yield harness


def _name() -> str:
    return f"js-{uuid.uuid4()}"


async def _subscribe(client: ClientProcess, sub: str, path: str, args: dict[str, Any]) -> int:
    """Subscribe; return the index of the subscribe command's first event (for ``after=``)."""
    mark = len(client.events)
    await client.call("subscribe", sub=sub, path=path, args=args)
    return mark


async def _update(client: ClientProcess, sub: str, value: Any, *, after: int = 0) -> dict[str, Any]:
    return await client.expect(lambda e: e["event"] == "update" and e["sub"] == sub and e["value"] == value,
                               after=after)


async def _counter_rows(server: TestBackend, name: str) -> list[int]:
    rows = await server.sql('SELECT "value" FROM counters WHERE "name" = $1', name)
    return [int(row["value"]) for row in rows]


async def test_subscription_gets_initial_value_then_other_clients_writes(server: TestBackend) -> None:
    name = _name()
    async with js_client(server.url) as watcher, js_client(server.url) as writer:
        await _subscribe(watcher, "c", "counters:get", {"name": name})
        await _update(watcher, "c", 0)
        assert await writer.call("mutation", path="counters:increment", args={"name": name}) == 1
        await _update(watcher, "c", 1)
        assert await writer.call("mutation", path="counters:increment", args={"name": name, "by": 2}) == 3
        await _update(watcher, "c", 3)
        await server.mutation("counters:increment", {"name": name})  # a write from outside any socket
        await _update(watcher, "c", 4)
        assert watcher.updates("c") == [0, 1, 3, 4]
        # Every Transition chained from the previous one's endVersion, starting at zero.
        transitions = watcher.frames("in", "Transition")
        assert transitions[0]["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
        for before, after in itertools.pairwise(transitions):
            assert after["startVersion"] == before["endVersion"]


async def test_optimistic_update_shows_at_once_and_never_reverts(server: TestBackend) -> None:
    name = _name()
    await server.mutation("counters:increment", {"name": name, "by": 5})
    async with js_client(server.url) as client:
        mark = await _subscribe(client, "c", "counters:get", {"name": name})
        await _update(client, "c", 5, after=mark)
        tag = await client.send("mutation", path="counters:increment", args={"name": name},
                                optimistic={"kind": "incrementCounter", "query": "counters:get"})
        optimistic = await _update(client, "c", 6, after=mark)
        result = await client.result(tag)
        assert result["ok"] is True and result["value"] == 6  # the server's result
        # The optimistic value appeared before the server had answered at all.
        position = client.events.index(optimistic)
        responses = [i for i, e in enumerate(client.events)
                     if e["event"] == "frame" and e["dir"] == "in" and e["msg"]["type"] == "MutationResponse"]
        assert responses and position < responses[0]
        # Another write afterwards: the sequence only ever moves forward.
        await server.mutation("counters:increment", {"name": name})
        await _update(client, "c", 7, after=mark)
        values = client.updates("c", after=mark)
    assert values[0] == 5 and values[-1] == 7
    assert values == sorted(values), f"the value went backwards: {values}"
    assert set(values) == {5, 6, 7}
    assert await _counter_rows(server, name) == [7]


async def test_failed_mutation_rejects_with_data_and_drops_its_optimistic_value(server: TestBackend) -> None:
    name = _name()
    async with js_client(server.url) as client:
        mark = await _subscribe(client, "c", "counters:get", {"name": name})
        await _update(client, "c", 0, after=mark)
        failed = await client.result(await client.send(
            "mutation", path="counters:fail_after_write", args={"name": name},
            optimistic={"kind": "incrementCounter", "query": "counters:get"}))
        assert failed["ok"] is False and failed["kind"] == "ConvexError"
        assert failed["data"] == {"code": "boom", "name": name}
        # Shown at once, taken back when the mutation failed.
        assert client.updates("c", after=mark) == [0, 1, 0]
        # As after every mutation, a Transition follows the (failed) response.
        response = await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "in" and e["msg"]["type"] == "MutationResponse", after=mark)
        await client.expect(lambda e: e["event"] == "frame" and e["dir"] == "in" and e["msg"]["type"] == "Transition",
                            after=client.events.index(response))
    assert await _counter_rows(server, name) == []


async def test_a_slow_mutation_does_not_hold_up_the_sockets_other_updates(
    server: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "MUTATION_TIMEOUT_SECONDS", 10.0)  # longer than its 3 s on purpose
    watched, slow = _name(), _name()
    async with js_client(server.url) as client:
        await _subscribe(client, "w", "counters:get", {"name": watched})
        await _update(client, "w", 0)
        mark = len(client.events)
        tag = await client.send("mutation", path="counters:increment_slowly", args={"name": slow, "delayMs": 3000})
        await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "out" and e["msg"]["type"] == "Mutation", after=mark)
        await server.mutation("counters:increment", {"name": watched})  # someone else's write, meanwhile
        update = await _update(client, "w", 1, after=mark)
        assert client.matching(lambda e: e["event"] == "frame" and e["msg"]["type"] == "MutationResponse",
                               after=mark) == [], "the update waited for the slow mutation"
        assert (await client.result(tag))["value"] == 1
        assert update["ms"] < client.events[-1]["ms"]


async def test_query_failures_reach_the_error_callback(server: TestBackend) -> None:
    name = _name()
    async with js_client(server.url) as client:
        await _subscribe(client, "bad", "counters:get", {"name": 5})
        bad = await client.expect(lambda e: e["event"] == "queryError" and e["sub"] == "bad")
        assert bad["kind"] == "Error" and "[BadArgs] $.args.name" in bad["message"], bad

        # An AppError from the query arrives as ConvexError with its data; the query recovers reactively.
        await _subscribe(client, "lim", "counters:below", {"name": name, "limit": 1})
        await _update(client, "lim", 0)
        await server.mutation("counters:increment", {"name": name})
        failed = await client.expect(lambda e: e["event"] == "queryError" and e["sub"] == "lim")
        assert failed["kind"] == "ConvexError"
        assert failed["data"] == {"code": "limitReached", "value": 1}
        await server.mutation("counters:increment", {"name": name, "by": -1})
        await _update(client, "lim", 0, after=client.events.index(failed))
        failures = [m for t in client.frames("in", "Transition") for m in t["modifications"]
                    if m["type"] == "QueryFailed"]
        assert failures and all(isinstance(m["logLines"], list) for m in failures)
        assert all("errorData" not in m for m in failures if "BadArgs" in m["errorMessage"])


async def test_unsubscribe_sends_remove_and_server_answers_query_removed(server: TestBackend) -> None:
    name = _name()
    async with js_client(server.url) as client:
        await _subscribe(client, "c", "counters:get", {"name": name})
        await _update(client, "c", 0)
        added = [m for f in client.frames("out", "ModifyQuerySet") for m in f["modifications"] if m["type"] == "Add"]
        query_id = added[-1]["queryId"]

        mark = len(client.events)
        await client.call("unsubscribe", sub="c")
        removal = await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "out" and e["msg"]["type"] == "ModifyQuerySet", after=mark)
        assert removal["msg"]["modifications"] == [{"type": "Remove", "queryId": query_id}]
        await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "in" and e["msg"]["type"] == "Transition"
            and {"type": "QueryRemoved", "queryId": query_id} in e["msg"]["modifications"], after=mark)
        assert client.frames("in", "Transition")[-1]["endVersion"]["querySet"] == removal["msg"]["newVersion"]

        await server.mutation("counters:increment", {"name": name})
        # A fresh subscription to the same query is the sync point: it sees the write, the old one must not.
        await _subscribe(client, "again", "counters:get", {"name": name})
        await _update(client, "again", 1)
        assert client.updates("c", after=mark) == []
        stray = [m for t in client.frames("in", "Transition", after=mark) for m in t["modifications"]
                 if m.get("queryId") == query_id and m["type"] != "QueryRemoved"]
        assert stray == []


async def _await_reconnect(client: ClientProcess, *, after: int) -> dict[str, Any]:
    """The client's first Connect after ``after``: on a new socket, same session, ``connectionCount`` 1."""
    connect = await client.expect(
        lambda e: e["event"] == "frame" and e["dir"] == "out" and e["msg"]["type"] == "Connect", after=after)
    first = client.frames("out", "Connect")[0]
    assert connect["msg"]["sessionId"] == first["sessionId"]
    assert connect["msg"]["connectionCount"] == 1
    assert connect["msg"]["lastCloseReason"].startswith("InternalServerError")
    return connect


async def test_mutation_in_flight_at_a_socket_drop_runs_exactly_once(
    server: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "MUTATION_TIMEOUT_SECONDS", 10.0)  # longer than its 1.5 s on purpose
    name = _name()
    async with js_client(server.url) as client:
        await _subscribe(client, "c", "counters:get", {"name": name})
        await _update(client, "c", 0)
        mark = len(client.events)
        tag = await client.send("mutation", path="counters:increment_slowly", args={"name": name, "delayMs": 1500})
        sent = await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "out" and e["msg"]["type"] == "Mutation", after=mark)
        await asyncio.sleep(0.2)  # the server is now inside the mutation's 1.5 s sleep
        assert server.backend is not None and server.backend.drop_connections() >= 1
        await client.expect(lambda e: e["event"] == "closed" and e["socket"] == sent["socket"], after=mark)
        connect = await _await_reconnect(client, after=mark)

        result = await client.result(tag)
        assert result["ok"] is True and result["value"] == 1
        await _update(client, "c", 1, after=mark)
        # The client replayed the same request on the new socket.
        replays = [e for e in client.events[client.events.index(connect):]
                   if e["event"] == "frame" and e["dir"] == "out" and e["msg"]["type"] == "Mutation"]
        assert [r["msg"]["requestId"] for r in replays] == [sent["msg"]["requestId"]]
        values = client.updates("c", after=mark)  # the resubscription's 0 (unless it came late), then 1
        assert values[-1] == 1 and values == sorted(values) and set(values) <= {0, 1}, values
        # The resubscription's first Transition starts from zero and carries the query again.
        first = client.frames("in", "Transition", after=client.events.index(connect))[0]
        assert first["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    assert await _counter_rows(server, name) == [1]


async def test_mutation_whose_response_was_lost_is_not_run_again(server: TestBackend) -> None:
    """The server committed and answered, but the answer never reached the client: its replay must be
    answered from the stored result (the session's requestId), not run a second time."""
    name = _name()
    async with js_client(server.url) as client:
        await _subscribe(client, "c", "counters:get", {"name": name})
        await _update(client, "c", 0)
        mark = len(client.events)
        await client.call("blackhole")  # from now until the socket closes, incoming frames are lost
        tag = await client.send("mutation", path="counters:increment", args={"name": name, "by": 10})
        lost = await client.expect(
            lambda e: e["event"] == "frame" and e["dir"] == "in" and e["msg"]["type"] == "Transition"
            and any(m.get("value") == 10 for m in e["msg"]["modifications"]), after=mark)
        assert lost["dropped"] is True
        assert (await client.expect(
            lambda e: e["event"] == "frame" and e["msg"]["type"] == "MutationResponse", after=mark))["dropped"]
        assert client.updates("c", after=mark) == []  # the client saw nothing of it
        assert await _counter_rows(server, name) == [10]

        assert server.backend is not None and server.backend.drop_connections() >= 1
        connect = await _await_reconnect(client, after=mark)
        result = await client.result(tag)
        assert result["ok"] is True and result["value"] == 10  # the first run's result
        await _update(client, "c", 10, after=mark)
        replays = client.frames("out", "Mutation", after=client.events.index(connect))
        assert len(replays) == 1
    assert await _counter_rows(server, name) == [10]
