"""One socket's bad request touches only that socket: the hub never drops or reorders others' work, and a
flood of bad requests cannot flood the log.

The attacker sends query arguments nested deeper than the engine accepts every 10 ms while a victim on
another socket subscribes, mutates, authenticates and logs out. With the depth limit lifted (so the bad
arguments reach the hub itself), the hub must still contain the failure to the attacker's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_add(depth: int) -> str:
    """A ModifyQuerySet whose one Add has arguments ``depth`` levels deep (built as text: json.dumps recurses)."""
    args = '{"name":' + '{"a":' * depth + '"x"' + "}" * depth + "}"
    return ('{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":0,'
            '"udfPath":"counters:get","args":[' + args + "]}]}")


class _Bytes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bytes = 0
        self.records = 0
        self.longest = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.bytes += len(text)
        self.records += 1
        self.longest = max(self.longest, len(text))


@contextlib.contextmanager
def log_volume() -> Iterator[_Bytes]:
    handler = _Bytes()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def _attack(port: int, depth: int, stop: asyncio.Event, sent: list[int]) -> None:
    """A new socket every 10 ms, each sending Connect and one deep Add."""
    frame = deep_add(depth)
    while not stop.is_set():
        with contextlib.suppress(OSError, ConnectionClosed, TimeoutError):
            async with websockets.connect(f"ws://127.0.0.1:{port}/api/sync") as ws:
                await ws.send(json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0}))
                await ws.send(frame)
                sent[0] += 1
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def attacker(port: int, depth: int) -> AsyncIterator[list[int]]:
    stop = asyncio.Event()
    sent = [0]
    tasks = [asyncio.create_task(_attack(port, depth, stop, sent)) for _ in range(2)]
    try:
        while sent[0] < 3:
            await asyncio.sleep(0.01)
        yield sent
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def victim_round(tb: TestBackend, rounds: int) -> None:
    """Subscribe, mutate (every response and its Transition arrive, with the data), log in and out."""
    name = f"victim-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        (counter, who) = await client.subscribe(("counters:get", {"name": name}), ("counters:whoami", {}))
        assert client.results[who] is None
        for expected in range(1, rounds + 1):
            response, transition = await client.mutation("counters:increment", {"name": name})
            assert response["success"] is True and response["result"] == expected
            assert transition is not None
            assert client.results[counter] == expected
            if expected % 3 == 0:
                await client.authenticate(tb.token(f"user-{expected}"))
                assert client.results[who] == f"user-{expected}"
                await client.authenticate(None)
                assert client.results[who] is None
    tb.backend.hub.check_invariants()  # type: ignore[union-attr]


@pytest.mark.parametrize("depth", [500, 100])
async def test_bad_requests_in_the_hub_do_not_touch_other_sockets(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    # Lift the edge's depth limit: the arguments reach the hub, whose decoding recurses (depth 500) or
    # refuses them (depth 100, when the hub checks too); either way only the attacker's socket may notice.
    monkeypatch.setattr(knobs, "MAX_VALUE_DEPTH", 100_000, raising=False)
    with log_volume() as volume:
        async with attacker(tb.port, depth) as sent:
            await asyncio.wait_for(victim_round(tb, 12), timeout=60)
            while sent[0] < 20:  # the attack went on throughout
                await asyncio.wait_for(victim_round(tb, 1), timeout=60)
    assert volume.longest < 20_000, volume.longest
    assert volume.bytes < 200_000, (volume.bytes, volume.records)


async def test_deep_arguments_are_refused_at_the_socket_edge(tb: TestBackend) -> None:
    with log_volume() as volume:
        async with attacker(tb.port, 500) as sent:
            await asyncio.wait_for(victim_round(tb, 6), timeout=60)
            while sent[0] < 20:
                await asyncio.wait_for(victim_round(tb, 1), timeout=60)
    assert volume.bytes < 50_000, (volume.bytes, volume.records)
    async with RawClient.open(tb.port) as client:
        await client.ws.send(deep_add(knobs.MAX_VALUE_DEPTH + 1))  # type: ignore[attr-defined]
        client.sent_query_set, client.next_query_id = 1, 1
        await client.until(lambda: 0 in client.failures)
        message = client.failures[0]["errorMessage"]
        assert "nested deeper than" in message and "BACKEND_MAX_VALUE_DEPTH" in message, message
        (ok,) = await client.subscribe(("counters:get", {"name": "edge-" + uuid.uuid4().hex[:6]}))
        assert client.results[ok] == 0


async def test_a_frame_too_deep_to_decode_is_fatal_for_that_socket_only(tb: TestBackend) -> None:
    async with RawClient.open(tb.port) as client:
        await client.ws.send(deep_add(100_000))
        messages, _closed = await client.closed()
        errors = [m["error"] for m in messages if m["type"] == "FatalError"]
        assert errors and "nested deeper than" in errors[0], messages
    await victim_round(tb, 1)


async def test_deep_mutation_and_action_arguments_fail_that_request(tb: TestBackend) -> None:
    depth = knobs.MAX_VALUE_DEPTH + 5  # type: ignore[attr-defined]
    async with RawClient.open(tb.port) as client:
        await client.send({"type": "Mutation", "requestId": 0, "udfPath": "counters:increment",
                           "args": [{"name": nested(depth)}]})
        response = await client.recv()
        assert response["type"] == "MutationResponse" and response["success"] is False
        assert "nested deeper than" in response["result"]
        await client.send({"type": "Action", "requestId": 1, "udfPath": "counters:add_later",
                           "args": [{"name": nested(depth)}]})
        while (response := await client.recv())["type"] != "ActionResponse":
            pass
        assert response["success"] is False and "nested deeper than" in response["result"]


class BrokenSocket:
    """A socket whose every write raises inside the hub (as a bug in encoding or sending would)."""

    def __init__(self) -> None:
        self.failed = 0

    def enqueue(self, frame: bytes, *, transition: bool) -> bool:
        raise RuntimeError("this socket cannot be written")

    def enqueue_batch(self, frames: Sequence[bytes]) -> bool:
        raise RuntimeError("this socket cannot be written")

    def overloaded(self) -> None:
        raise AssertionError("a broken socket is failed, not treated as slow")

    def fail(self) -> None:
        self.failed += 1


async def test_a_failure_sending_to_one_socket_closes_only_that_socket(tb: TestBackend) -> None:
    hub = tb.backend.hub  # type: ignore[union-attr]
    name = f"broken-{uuid.uuid4().hex[:8]}"
    broken = BrokenSocket()
    sub = hub.connect(broken)
    hub.modify(sub, 1, [(0, hub.prepare("counters:get", {"name": name}))])
    # In the same pass: another socket's subscription and mutation.
    await victim_round(tb, 3)
    assert broken.failed == 1 and sub.closed and sub not in hub.subscribers
    hub.check_invariants()
