"""Raw sync-protocol sockets for load generators: Connect, ModifyQuerySet, Mutation, read Transitions.

Built on the ``websockets`` library with no Convex client in between, so the load generator costs little
CPU and measures the server, not a client library. Compression is off on both the engine's and the
baselines' sockets.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

_encode = msgspec.json.encode
_decode = msgspec.json.decode


async def open_socket(url: str, attempts: int = 1, pause: float = 0.1) -> ClientConnection:
    """A WebSocket to ``url``; retried ``attempts`` times (a server that is restarting refuses for a while)."""
    for attempt in range(attempts):
        try:
            return await connect(url, compression=None, max_size=None, ping_interval=None,
                                 open_timeout=60, close_timeout=2, max_queue=None)
        except (OSError, TimeoutError):
            if attempt + 1 >= attempts:
                raise
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def decode_ts(text: str) -> int:
    value: int = struct.unpack("<Q", base64.b64decode(text))[0]
    return value


def encode_ts(ts: int) -> str:
    return base64.b64encode(struct.pack("<Q", ts)).decode("ascii")


class SyncClient:
    """One sync-protocol session over one socket; reconnects keep the session id, as official clients do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session_id = str(uuid.uuid4())
        self.ws: ClientConnection | None = None
        self.connections = 0
        self.max_ts = 0
        self.next_request = 0
        self.query_set = 0

    async def connect(self, attempts: int = 1, last_close: str = "InitialConnect") -> None:
        self.ws = await open_socket(self.url, attempts)
        hello: dict[str, Any] = {"type": "Connect", "sessionId": self.session_id,
                                 "connectionCount": self.connections, "lastCloseReason": last_close,
                                 "clientTs": time.time() * 1000}
        if self.max_ts:
            hello["maxObservedTimestamp"] = encode_ts(self.max_ts)
        await self.ws.send(_encode(hello).decode())
        self.connections += 1
        self.query_set = 0

    async def subscribe(self, queries: list[tuple[str, dict[str, Any]]]) -> None:
        """Add ``queries`` (ids 0..n-1) in one ModifyQuerySet."""
        assert self.ws is not None
        mods = [{"type": "Add", "queryId": i, "udfPath": path, "args": [args]}
                for i, (path, args) in enumerate(queries)]
        base, self.query_set = self.query_set, self.query_set + 1
        await self.ws.send(_encode({"type": "ModifyQuerySet", "baseVersion": base,
                                    "newVersion": self.query_set, "modifications": mods}).decode())

    async def send_mutation(self, path: str, args: dict[str, Any]) -> int:
        assert self.ws is not None
        request_id = self.next_request
        self.next_request += 1
        await self.ws.send(_encode({"type": "Mutation", "requestId": request_id, "udfPath": path,
                                    "args": [args]}).decode())
        return request_id

    async def recv(self) -> dict[str, Any]:
        assert self.ws is not None
        message: dict[str, Any] = _decode(await self.ws.recv())
        ts = message.get("endVersion", {}).get("ts") if message.get("type") == "Transition" else None
        if ts:
            self.max_ts = max(self.max_ts, decode_ts(ts))
        return message

    async def mutate(self, path: str, args: dict[str, Any], on_other: Callable[[dict[str, Any]], None] | None = None
                     ) -> dict[str, Any]:
        """Send a mutation and read until its MutationResponse (Transitions on the way go to ``on_other``)."""
        request_id = await self.send_mutation(path, args)
        while True:
            message = await self.recv()
            if message.get("type") == "MutationResponse" and message.get("requestId") == request_id:
                return message
            if on_other is not None:
                on_other(message)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def updated_values(message: dict[str, Any]) -> list[tuple[int, Any]]:
    """``(queryId, value)`` of every QueryUpdated in a Transition (empty for anything else)."""
    if message.get("type") != "Transition":
        return []
    return [(m["queryId"], m.get("value")) for m in message.get("modifications", ())
            if m.get("type") == "QueryUpdated"]


def transition_frame(value: Any, query_id: int = 0) -> bytes:
    """A Transition carrying one QueryUpdated, shaped like the engine's: the baselines push the same bytes."""
    version = {"querySet": 1, "identity": 0, "ts": encode_ts(int(time.time() * 1e9))}
    return _encode({"type": "Transition", "startVersion": version, "endVersion": version, "modifications": [
        {"type": "QueryUpdated", "value": value, "logLines": [], "journal": None, "queryId": query_id}]})
