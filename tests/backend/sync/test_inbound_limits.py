"""Inbound memory is bounded: a frame that stalls halfway is closed after the read deadline, frames being
received across all sockets share one budget (a socket that would pass it is closed with a reason clients back
off on), a frame over the size cap is refused from its header, and what they held is released."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from backend import knobs
from backend.sync.inbound import INBOUND
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


def frame_header(length: int) -> bytes:
    """A masked text frame header declaring ``length`` bytes, with an all-zero mask (payload sent as is)."""
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return head + b"\0\0\0\0"


async def partial_frame(port: int, declared: int, sent: int) -> Any:
    """A connected socket that has sent the first ``sent`` bytes of a ``declared``-byte frame, then stalls."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/api/sync", ping_interval=None, max_size=None)
    await ws.send(json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0}))
    ws.transport.write(frame_header(declared) + b"x" * sent)
    return ws


async def close_of(ws: Any, timeout: float = 10.0) -> ConnectionClosed:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed


async def settled(expected: int, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while INBOUND.used != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert INBOUND.used == expected, (INBOUND.used, expected)


async def test_a_frame_that_stalls_midway_is_closed_after_the_read_deadline(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "FRAME_READ_TIMEOUT_SECONDS", 0.5)
    before = INBOUND.used
    ws = await partial_frame(tb.port, 1_000_000, 300_000)
    await asyncio.sleep(0.2)
    assert INBOUND.used >= before + 300_000  # held while it arrives
    closed = await close_of(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert "BACKEND_FRAME_READ_TIMEOUT_SECONDS" in closed.rcvd.reason
    await settled(before)


async def test_frames_being_received_share_one_budget(tb: TestBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "MAX_INBOUND_BYTES", 2_500_000)
    before = INBOUND.used
    name = f"inbound-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as healthy:
        (query_id,) = await healthy.subscribe(("counters:get", {"name": name}))
        first = await partial_frame(tb.port, 3_000_000, 1_000_000)
        second = await partial_frame(tb.port, 3_000_000, 1_000_000)
        await asyncio.sleep(0.2)
        third = await partial_frame(tb.port, 3_000_000, 1_000_000)
        closed = await close_of(third)
        assert closed.rcvd is not None and closed.rcvd.code == 1013
        assert closed.rcvd.reason.startswith("TooManyConcurrentRequests")
        # Small messages still flow while the budget is full of large frames.
        response, _ = await healthy.mutation("counters:increment", {"name": name})
        assert response["success"] and healthy.results[query_id] == 1
        # A large request is refused while the budget is full, and admitted once the stalled frames are gone.
        async with RawClient.open(tb.port) as big:
            await big.send_mutation("counters:increment", {"name": name, "pad": "x" * 1_000_000})
            messages, closed_big = await big.closed()
            assert closed_big.rcvd is not None and closed_big.rcvd.code == 1013, messages
        for ws in (first, second):
            ws.transport.abort()  # the stalled clients go away without a close handshake
        await settled(before)
        async with RawClient.open(tb.port) as big:
            await big.send_mutation("counters:increment", {"name": name, "pad": "x" * 1_000_000})
            response = await big.recv()
            assert response["type"] == "MutationResponse" and "pad" in response["result"]  # refused by validation
    await settled(before)


async def test_a_frame_over_the_size_cap_is_refused_from_its_header(tb: TestBackend) -> None:
    before = INBOUND.used
    ws = await partial_frame(tb.port, knobs.MAX_MESSAGE_BYTES + 1, 1000)
    closed = await close_of(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1009
    await settled(before)
