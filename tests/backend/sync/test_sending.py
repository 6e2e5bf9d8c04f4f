"""Writing frames without a task per frame: a send that completes at once is done where the frame was made; one
that has to wait is finished, in order, by a task; quiet sockets get Pings from the shared timer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from backend import knobs
from backend.sync.sending import finish, step
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


async def test_a_send_that_does_not_wait_is_done_by_the_first_step() -> None:
    written: list[str] = []

    async def send() -> None:
        written.append("frame")

    done, waiting = step(send())
    assert (done, waiting, written) == (True, None, ["frame"])


async def test_a_send_that_waits_is_finished_by_a_task_with_what_it_waited_for() -> None:
    loop = asyncio.get_running_loop()
    writable = loop.create_future()
    written: list[Any] = []

    async def send() -> None:
        written.append("started")
        written.append(await writable)
        await asyncio.sleep(0)  # a second suspension, a bare yield this time
        written.append("written")

    coroutine = send()
    done, waiting = step(coroutine)
    assert not done and waiting is writable and written == ["started"]
    task = loop.create_task(_await(finish(coroutine, waiting)))
    await asyncio.sleep(0.01)
    assert not task.done(), "the task must wait for the same future the send waits for"
    writable.set_result("writable")
    await asyncio.wait_for(task, 1)
    assert written == ["started", "writable", "written"]


async def test_cancelling_the_task_reaches_the_waiting_send() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def send() -> None:
        try:
            await loop.create_future()  # never writable
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coroutine = send()
    done, waiting = step(coroutine)
    assert not done
    task = loop.create_task(_await(finish(coroutine, waiting)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def _await(awaitable: Any) -> None:
    await awaitable


async def test_a_quiet_socket_gets_pings_and_a_busy_one_gets_none_in_between(
    tb: TestBackend, monkeypatch: Any
) -> None:
    monkeypatch.setattr(knobs, "PING_INTERVAL_SECONDS", 1.0)
    name = f"ping-{uuid.uuid4().hex[:10]}"
    async with RawClient.open(tb.port) as client:
        await client.subscribe(("counters:get", {"name": name}))
        # The shared timer may still be armed for the default interval (a quarter of it): wait for the first Ping.
        first = await _next_ping(client, timeout=knobs.PING_INTERVAL_SECONDS + 15.0 / 4 + 2)
        second = await _next_ping(client, timeout=4)
        assert 0.5 <= second - first <= 2.5, f"Pings {second - first:.2f} s apart for a 1 s interval"
        # Frames sent meanwhile count as activity: while updates flow faster than the interval, no Ping.
        frames: list[str] = []
        for _ in range(6):
            await tb.mutation("counters:increment", {"name": name})
            frames.append(json.loads(await asyncio.wait_for(client.ws.recv(), 2))["type"])
            await asyncio.sleep(0.1)
        assert "Ping" not in frames, frames


async def _next_ping(client: RawClient, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(client.ws.recv(), max(0.01, deadline - time.monotonic())))
        if message["type"] == "Ping":
            return time.monotonic()
