"""The Python client against the real server (real sockets, real PostgreSQL), plus one scripted socket peer
for the exact reconnect handshake."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from backend.client import AsyncClient, Client, ClientError, OptimisticStore
from backend.client._connection import Backoff
from backend.testing import TestBackend, free_port


def fresh(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4()}"


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def bump(store: OptimisticStore, args: dict[str, Any]) -> None:
    current = store.get_query("counters:get", {"name": args["name"]})
    if current is not None:
        store.set_query("counters:get", {"name": args["name"]}, current + args.get("by", 1))


# -- basics --------------------------------------------------------------------------------------------------


async def test_query_mutation_and_action(tb: TestBackend) -> None:
    name = fresh()
    async with AsyncClient(tb.url) as client:
        assert client.connected
        assert await client.query("counters:get", {"name": name}) == 0
        assert await client.mutation("counters:increment", {"name": name, "by": 2}) == 2
        assert await client.query("counters:get", {"name": name}) == 2
        assert await client.action("counters:add_later", {"name": name}) == 3
        assert await client.query("counters.js:get", {"name": name}) == 3
    with pytest.raises(ClientError, match="closed"):
        await client.query("counters:get", {"name": name})


async def test_app_error_data_and_server_errors(tb: TestBackend) -> None:
    name = fresh()
    async with AsyncClient(tb.url) as client:
        with pytest.raises(ClientError) as failed:
            await client.mutation("counters:fail_after_write", {"name": name})
        assert failed.value.message == "failed on purpose"
        assert failed.value.data == {"code": "boom", "name": name}
        assert await client.query("counters:get", {"name": name}) == 0  # nothing of the write survived
        with pytest.raises(ClientError) as missing:
            await client.query("counters:nope", {})
        assert missing.value.data is None
        with pytest.raises(ClientError) as bad_args:
            await client.mutation("counters:increment", {"name": 5})
        assert "BadArgs" in bad_args.value.message


async def test_subscribe_sees_another_clients_mutation(tb: TestBackend) -> None:
    name = fresh()
    async with AsyncClient(tb.url) as watcher, AsyncClient(tb.url) as writer:
        async with watcher.subscribe("counters:get", {"name": name}) as values:
            assert await asyncio.wait_for(values.__anext__(), 5) == 0
            await writer.mutation("counters:increment", {"name": name})
            assert await asyncio.wait_for(values.__anext__(), 5) == 1
            await writer.mutation("counters:increment", {"name": name, "by": 5})
            assert await asyncio.wait_for(values.__anext__(), 5) == 6
        assert not values.active
        assert [v async for v in values] == []


async def test_shared_query_survives_one_unsubscribe(tb: TestBackend) -> None:
    name = fresh()
    async with AsyncClient(tb.url) as client:
        first = client.subscribe("counters:get", {"name": name})
        assert await asyncio.wait_for(first.first(), 5) == 0
        second = client.subscribe("counters:get", {"name": name})
        assert await asyncio.wait_for(second.first(), 5) == 0  # the current value, at once
        seen: list[int] = []
        second.on_update(seen.append)
        first.unsubscribe()
        await client.mutation("counters:increment", {"name": name})
        await until(lambda: seen == [0, 1])
        second.unsubscribe()


# -- optimistic updates --------------------------------------------------------------------------------------


async def test_optimistic_update_is_shown_at_once_and_never_reverted(tb: TestBackend) -> None:
    name = fresh()
    async with AsyncClient(tb.url) as client:
        sub = client.subscribe("counters:get", {"name": name})
        assert await asyncio.wait_for(sub.first(), 5) == 0
        applied: set[int] = set()
        seen: list[tuple[int, int]] = []  # (value, optimistic updates applied so far)
        sub.on_update(lambda value: seen.append((value, len(applied))))

        def counted(i: int) -> Callable[[OptimisticStore, dict[str, Any]], None]:
            def update(store: OptimisticStore, args: dict[str, Any]) -> None:
                applied.add(i)
                bump(store, args)

            return update

        task = asyncio.create_task(client.mutation("counters:increment", {"name": name}, counted(0)))
        await asyncio.sleep(0)  # the mutation has started; no server round trip has happened
        assert sub.value == 1 and seen[-1] == (1, 1)
        assert await asyncio.wait_for(task, 5) == 1
        # Five at once: every server result in between is one that lacks some of them.
        results = await asyncio.gather(
            *(client.mutation("counters:increment", {"name": name}, counted(i)) for i in range(1, 6)))
        assert sorted(results) == [2, 3, 4, 5, 6]
        await until(lambda: sub.value == 6)
        assert all(value >= count for value, count in seen), seen
        assert seen[-1][0] == 6
        assert await client.query("counters:get", {"name": name}) == 6


async def test_optimistic_update_survives_results_of_other_queries(tb: TestBackend) -> None:
    mine, theirs = fresh(), fresh()
    async with AsyncClient(tb.url) as client, AsyncClient(tb.url) as other:
        sub = client.subscribe("counters:get", {"name": mine})
        busy = client.subscribe("counters:get", {"name": theirs})
        assert await asyncio.wait_for(sub.first(), 5) == 0
        assert await asyncio.wait_for(busy.first(), 5) == 0
        started = 0
        seen: list[tuple[int, int]] = []  # (value, optimistic updates applied so far)
        sub.on_update(lambda value: seen.append((value, started)))

        async def hammer() -> None:
            for _ in range(15):
                await other.mutation("counters:increment", {"name": theirs})

        others = asyncio.create_task(hammer())
        for _ in range(5):
            started += 1  # no await before the update is applied, so every record sees the right count
            await client.mutation("counters:increment", {"name": mine}, bump)
            assert sub.value == started
        await others
        await until(lambda: busy.value == 15)
        # Results for the other query arrived while ours were pending; ours never fell back meanwhile.
        # (A value may briefly count a mutation twice: the server may send its effect before its answer.)
        assert all(value >= count for value, count in seen), seen
        assert seen[-1][0] == 5


async def test_failed_mutation_drops_its_optimistic_update(tb: TestBackend) -> None:
    name = fresh()

    def set_to_seven(store: OptimisticStore, args: dict[str, Any]) -> None:
        store.set_query("counters:get", {"name": args["name"]}, 7)

    async with AsyncClient(tb.url) as client:
        sub = client.subscribe("counters:get", {"name": name})
        assert await asyncio.wait_for(sub.first(), 5) == 0
        seen: list[int] = []
        sub.on_update(seen.append)
        with pytest.raises(ClientError) as failed:
            await client.mutation("counters:fail_after_write", {"name": name}, set_to_seven)
        assert failed.value.data == {"code": "boom", "name": name}
        assert seen == [0, 7, 0]

        def broken(store: OptimisticStore, args: dict[str, Any]) -> None:
            raise RuntimeError("bad update")

        with pytest.raises(RuntimeError):
            await client.mutation("counters:increment", {"name": name}, broken)
        assert await client.query("counters:get", {"name": name}) == 0  # an update that raises sends nothing


# -- reconnects ----------------------------------------------------------------------------------------------


async def test_server_drop_reconnects_resubscribes_and_runs_mutation_once(tb: TestBackend) -> None:
    name = fresh()
    assert tb.backend is not None
    async with AsyncClient(tb.url) as client, AsyncClient(tb.url) as other:
        sub = client.subscribe("counters:get", {"name": name})
        assert await asyncio.wait_for(sub.first(), 5) == 0
        task = asyncio.create_task(client.mutation("counters:increment", {"name": name}))
        await asyncio.sleep(0)
        assert tb.backend.drop_connections() >= 2
        assert await asyncio.wait_for(task, 10) == 1
        await other.mutation("counters:increment", {"name": name, "by": 10})
        await until(lambda: sub.value == 11)
        assert await tb.query("counters:get", {"name": name}) == 11
        assert client.session_id in {session.session_id for session in tb.backend.sessions}


class Relay:
    """A TCP relay between client and server that can swallow the server's replies and cut every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.muted: set[int] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> Relay:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, downstream: bool) -> None:
            try:
                while data := await source.read(65536):
                    if not (downstream and id(writer) in self.muted):
                        sink.write(data)
                        await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def mute_replies(self) -> None:
        self.muted |= {id(client) for client, _ in self.links}

    def cut(self) -> None:
        for client, upstream in self.links:
            client.transport.abort()
            upstream.transport.abort()
        self.links.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_committed_mutation_whose_reply_was_lost_is_not_run_twice(tb: TestBackend) -> None:
    name = fresh()
    relay = await Relay(tb.port).start()
    try:
        async with AsyncClient(f"http://127.0.0.1:{relay.port}") as client:
            sub = client.subscribe("counters:get", {"name": name})
            assert await asyncio.wait_for(sub.first(), 5) == 0
            relay.mute_replies()
            task = asyncio.create_task(client.mutation("counters:increment", {"name": name, "by": 3}, bump))
            await until(lambda: _eq(tb, name, 3))
            await asyncio.sleep(0.1)
            assert not task.done() and sub.value == 3  # committed; the answer never arrived
            relay.cut()
            assert await asyncio.wait_for(task, 10) == 3  # the replay got the first result back
            await until(lambda: client.connected)
            assert await tb.query("counters:get", {"name": name}) == 3
            assert await client.query("counters:get", {"name": name}) == 3
    finally:
        await relay.stop()


async def _eq(tb: TestBackend, name: str, value: int) -> bool:
    return bool(await tb.query("counters:get", {"name": name}) == value)


async def test_action_in_flight_fails_when_the_socket_drops(tb: TestBackend) -> None:
    name = fresh()
    assert tb.backend is not None
    async with AsyncClient(tb.url) as client:
        task = asyncio.create_task(client.action("counters:add_later", {"name": name, "delayMs": 5000}))
        await until(lambda: _eq(tb, name, 1))
        tb.backend.drop_connections()
        with pytest.raises(ClientError, match="Connection lost while action was in flight"):
            await asyncio.wait_for(task, 5)
        assert await client.query("counters:get", {"name": name}) == 1  # never resent


def test_backoff_grows_with_jitter_stays_bounded_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=10.0)
    delays = [backoff.next_delay("closed with code 1006") for _ in range(12)]
    assert 0.05 <= delays[0] < 0.15 and 0.1 <= delays[1] < 0.3
    assert all(0.05 <= delay <= 10.0 for delay in delays)
    assert min(delays[-4:]) >= 5.0  # at the cap, jitter only shortens
    backoff.reset()
    assert backoff.next_delay("InternalServerError: x") < 0.15
    assert backoff.next_delay("TooManyConcurrentRequests: slow down") >= 3.0  # overload starts at seconds


async def test_connect_to_nothing_fails_within_its_timeout() -> None:
    client = AsyncClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ClientError, match="could not connect"):
        await client.connect(timeout=0.5)
    with pytest.raises(ClientError, match="closed"):
        await client.query("counters:get", {"name": "x"})
    with pytest.raises(ClientError, match="invalid deployment URL"):
        AsyncClient("127.0.0.1:3210")


# -- auth and fatal errors -----------------------------------------------------------------------------------


async def test_auth_set_and_cleared_over_the_socket(tb: TestBackend) -> None:
    async with AsyncClient(tb.url, token=tb.token("ann")) as client:
        sub = client.subscribe("counters:whoami")
        assert await asyncio.wait_for(sub.first(), 5) == "ann"
        await client.set_auth(tb.token("bob"))
        await until(lambda: sub.value == "bob")
        await client.clear_auth()
        await until(lambda: sub.value is None)
        with pytest.raises(ClientError, match="authentication failed"):
            await client.set_auth("not-a-token")
        assert await client.query("counters:whoami") is None  # carries on without auth
    with pytest.raises(ClientError, match="authentication failed"):
        async with AsyncClient(tb.url, token="not-a-token"):
            pass


async def test_fatal_error_fails_everything_and_stops(tb: TestBackend) -> None:
    name = fresh()
    client = AsyncClient(tb.url)
    await client.connect()
    sub = client.subscribe("counters:get", {"name": name})
    assert await asyncio.wait_for(sub.first(), 5) == 0
    # A message that breaks the protocol (a stale query-set version): the server answers FatalError.
    client._conn.send({"type": "ModifyQuerySet", "baseVersion": 99, "newVersion": 100, "modifications": []})
    with pytest.raises(ClientError, match="fatal error from the server: BaseVersionMismatch"):
        await asyncio.wait_for(sub.first(), 5)
    with pytest.raises(ClientError, match="fatal"):
        await client.mutation("counters:increment", {"name": name})
    await client.close()


# -- the exact reconnect handshake ---------------------------------------------------------------------------


def ts(value: int) -> str:
    return base64.b64encode(struct.pack("<Q", value)).decode()


def version(query_set: int, identity: int, at: int) -> dict[str, Any]:
    return {"querySet": query_set, "identity": identity, "ts": ts(at)}


async def test_reconnect_handshake_frame_by_frame() -> None:
    sockets: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def accept(socket: ServerConnection) -> None:
        await sockets.put(socket)
        await socket.wait_closed()

    async def recv(socket: ServerConnection) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(socket.recv(), 5)))

    async def send(socket: ServerConnection, message: dict[str, Any]) -> None:
        await socket.send(json.dumps(message))

    async with serve(accept, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = AsyncClient(f"http://127.0.0.1:{port}/", token="tok")
        connecting = asyncio.create_task(client.connect())
        first = await asyncio.wait_for(sockets.get(), 5)
        assert first.request.path == "/api/sync"
        hello = await recv(first)
        assert hello["type"] == "Connect" and hello["connectionCount"] == 0
        assert hello["lastCloseReason"] == "InitialConnect" and "maxObservedTimestamp" not in hello
        assert await recv(first) == {"type": "Authenticate", "tokenType": "User", "value": "tok", "baseVersion": 0}
        assert await recv(first) == {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}
        await send(first, {"type": "Transition", "startVersion": version(0, 0, 0), "endVersion": version(1, 1, 5),
                           "modifications": []})
        await asyncio.wait_for(connecting, 5)

        sub = client.subscribe("m:q", {"a": 1})
        assert await recv(first) == {"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "m:q", "args": [{"a": 1.0}]}]}
        await send(first, {"type": "Transition", "startVersion": version(1, 1, 5), "endVersion": version(2, 1, 6),
                           "modifications": [{"type": "QueryUpdated", "queryId": 0, "value": 7.0, "logLines": [],
                                              "journal": "j1"}]})
        assert await asyncio.wait_for(sub.first(), 5) == 7
        pending = asyncio.create_task(client.mutation("m:inc", {"by": 1}))
        assert await recv(first) == {"type": "Mutation", "requestId": 0, "udfPath": "m:inc", "args": [{"by": 1.0}]}
        # A Transition that does not continue the client's version: it must reconnect.
        await send(first, {"type": "Transition", "startVersion": version(9, 9, 9), "endVersion": version(10, 9, 9),
                           "modifications": []})

        second = await asyncio.wait_for(sockets.get(), 5)
        hello = await recv(second)
        assert hello["sessionId"] == client.session_id and hello["connectionCount"] == 1
        assert hello["lastCloseReason"] == "StartVersionMismatch" and hello["maxObservedTimestamp"] == ts(6)
        assert await recv(second) == {"type": "Authenticate", "tokenType": "User", "value": "tok", "baseVersion": 0}
        assert await recv(second) == {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "m:q", "args": [{"a": 1.0}], "journal": "j1"}]}
        assert await recv(second) == {"type": "Mutation", "requestId": 0, "udfPath": "m:inc", "args": [{"by": 1.0}]}
        await send(second, {"type": "MutationResponse", "requestId": 0, "success": True, "result": 8.0,
                            "ts": ts(10), "logLines": []})
        await asyncio.sleep(0.05)
        assert not pending.done()  # answered, but not yet reflected by a Transition
        await send(second, {"type": "Transition", "startVersion": version(0, 0, 0), "endVersion": version(1, 1, 10),
                            "modifications": [{"type": "QueryUpdated", "queryId": 0, "value": 8.0, "logLines": [],
                                               "journal": None}]})
        assert await asyncio.wait_for(pending, 5) == 8
        assert sub.value == 8
        await client.close()


# -- the synchronous wrapper ---------------------------------------------------------------------------------


async def test_sync_wrapper(tb: TestBackend) -> None:
    name = fresh()

    def scenario() -> tuple[list[int], Any, Any]:
        seen: list[int] = []
        with Client(tb.url, token=tb.token("sam")) as client:
            handle = client.subscribe("counters:get", {"name": name}, seen.append)
            assert client.mutation("counters:increment", {"name": name, "by": 4}) == 4
            assert client.query("counters:get", {"name": name}) == 4
            assert client.action("counters:add_later", {"name": name}) == 5
            who = client.query("counters:whoami")
            for _ in range(500):
                if seen and seen[-1] == 5:
                    break
                time.sleep(0.01)
            try:
                client.mutation("counters:fail_after_write", {"name": name})
            except ClientError as error:
                data = error.data
            handle.unsubscribe()
        with pytest.raises(ClientError):
            client.query("counters:get", {"name": name})
        return seen, who, data

    seen, who, data = await asyncio.to_thread(scenario)
    assert who == "sam"
    assert data == {"code": "boom", "name": name}
    assert seen[-1] == 5 and seen == sorted(seen)
