"""A raw sync-protocol client over a real WebSocket, for tests that check frames one by one.

It keeps the client-side view the way the official clients do (query results by queryId, the last
``endVersion``) and checks on every Transition what a client relies on: ``startVersion`` equals the previous
``endVersion`` and no version component, ``ts`` included, ever goes backwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

__all__ = ["ConnectionClosed", "RawClient", "ts_of", "ts_text"]

ZERO_TS = "AAAAAAAAAAA="


def ts_of(text: str) -> int:
    """A wire timestamp (base64 of a little-endian u64) as an int."""
    value: int = struct.unpack("<Q", base64.b64decode(text))[0]
    return value


def ts_text(value: int) -> str:
    return base64.b64encode(struct.pack("<Q", value)).decode("ascii")


class RawClient:
    def __init__(self, ws: Any, session_id: str | None = None) -> None:
        self.ws = ws
        self.session = session_id or str(uuid.uuid4())
        self.sent_query_set = 0
        self.version: dict[str, Any] = {"querySet": 0, "identity": 0, "ts": ZERO_TS}
        self.results: dict[int, Any] = {}
        self.failures: dict[int, dict[str, Any]] = {}
        self.next_query_id = 0
        self.next_request_id = 0
        self.transitions = 0
        self._chunks: list[dict[str, Any]] = []  # TransitionChunk parts of a Transition still arriving

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        port: int,
        *,
        path: str = "/api/1.48.0/sync",
        session_id: str | None = None,
        connect: bool = True,
        connection_count: int = 0,
        max_observed: int | None = None,
        **options: Any,
    ) -> AsyncIterator[RawClient]:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", **options) as ws:
            client = cls(ws, session_id)
            if connect:
                await client.connect(connection_count=connection_count, max_observed=max_observed)
            yield client

    # -- sending -----------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def connect(self, *, connection_count: int = 0, max_observed: int | None = None) -> None:
        message: dict[str, Any] = {
            "type": "Connect", "sessionId": self.session, "connectionCount": connection_count,
            "lastCloseReason": "InitialConnect" if connection_count == 0 else "closed with code 1006",
            "clientTs": int(time.time() * 1000),
        }
        if max_observed is not None:
            message["maxObservedTimestamp"] = ts_text(max_observed)
        await self.send(message)

    async def modify(
        self, adds: list[tuple[str, dict[str, Any]]] | None = None, removes: list[int] | None = None
    ) -> list[int]:
        """Send one ModifyQuerySet; returns the new queryIds in order."""
        mods: list[dict[str, Any]] = []
        ids: list[int] = []
        for path, args in adds or []:
            mods.append({"type": "Add", "queryId": self.next_query_id, "udfPath": path, "args": [args]})
            ids.append(self.next_query_id)
            self.next_query_id += 1
        mods.extend({"type": "Remove", "queryId": q} for q in removes or [])
        base = self.sent_query_set
        self.sent_query_set += 1
        await self.send({"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1, "modifications": mods})
        return ids

    async def subscribe(self, *queries: tuple[str, dict[str, Any]]) -> list[int]:
        """Add queries and wait for the Transition that answers them; returns their queryIds."""
        ids = await self.modify(list(queries))
        await self.until(lambda: all(q in self.results or q in self.failures for q in ids))
        return ids

    async def authenticate(self, token: str | None) -> None:
        """Authenticate (None: log out) and wait for the identity-bumping Transition that confirms it."""
        base = self.version["identity"]
        message: dict[str, Any] = {"type": "Authenticate", "baseVersion": base}
        message.update({"tokenType": "User", "value": token} if token else {"tokenType": "None"})
        await self.send(message)
        await self.until(lambda: self.version["identity"] > base)

    async def send_mutation(self, path: str, args: dict[str, Any], request_id: int | None = None) -> int:
        if request_id is None:
            request_id = self.next_request_id
        self.next_request_id = max(self.next_request_id, request_id + 1)
        await self.send({"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args]})
        return request_id

    async def mutation(
        self, path: str, args: dict[str, Any], request_id: int | None = None, timeout: float = 10.0
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send a Mutation; return its MutationResponse and, on success, the first Transition after it."""
        request_id = await self.send_mutation(path, args, request_id)
        deadline = time.monotonic() + timeout
        response: dict[str, Any] | None = None
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == "MutationResponse" and message["requestId"] == request_id:
                response = message
                if not message["success"]:
                    return response, None
            elif message["type"] == "Transition" and response is not None:
                return response, message

    # -- receiving ---------------------------------------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message other than Ping; Transitions are applied to the view (and checked) on the way."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] == "Ping":
                continue
            if message["type"] == "TransitionChunk":
                message = self.assemble(message)
                if message is None:
                    continue
            if message["type"] == "Transition":
                self.apply(message)
            return dict(message)

    def assemble(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Collect a TransitionChunk; the whole Transition once its last part arrived (checked as clients do)."""
        parts = self._chunks
        if parts:
            assert (chunk["transitionId"], chunk["totalParts"]) == (parts[0]["transitionId"], parts[0]["totalParts"])
        assert chunk["partNumber"] == len(parts), f"chunk {chunk['partNumber']} out of order"
        parts.append(chunk)
        if len(parts) < chunk["totalParts"]:
            return None
        self._chunks = []
        message: dict[str, Any] = json.loads("".join(part["chunk"] for part in parts))
        assert message["type"] == "Transition", message["type"]
        return message

    def apply(self, transition: dict[str, Any]) -> None:
        start, end = transition["startVersion"], transition["endVersion"]
        assert start == self.version, f"startVersion {start} != previous endVersion {self.version}"
        assert end["querySet"] >= start["querySet"] and end["identity"] >= start["identity"]
        assert ts_of(end["ts"]) >= ts_of(start["ts"]), "Transition ts went backwards"
        for mod in transition["modifications"]:
            query_id = mod["queryId"]
            if mod["type"] == "QueryUpdated":
                self.results[query_id] = mod["value"]
                self.failures.pop(query_id, None)
            elif mod["type"] == "QueryFailed":
                self.failures[query_id] = mod
                self.results.pop(query_id, None)
            elif mod["type"] == "QueryRemoved":
                self.results.pop(query_id, None)
                self.failures.pop(query_id, None)
        self.version = end
        self.transitions += 1

    async def transition(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next Transition (other messages before it are an error)."""
        message = await self.recv(timeout)
        assert message["type"] == "Transition", message
        return message

    async def until(self, condition: Any, timeout: float = 5.0) -> None:
        """Read messages until ``condition()`` holds for the view."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached; view: " + repr(self.results)[:500])
            await self.recv(remaining)

    async def silent(self, seconds: float = 0.3) -> None:
        """Assert that no message (Pings aside) arrives for ``seconds``."""
        try:
            message = await self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message, got {message}")

    async def closed(self, timeout: float = 5.0) -> tuple[list[dict[str, Any]], ConnectionClosed]:
        """Read until the server closes the socket; returns the messages read and the close."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                messages.append(await self.recv(max(0.01, deadline - time.monotonic())))
            except ConnectionClosed as closed:
                return messages, closed

    @property
    def ts(self) -> int:
        return ts_of(self.version["ts"])
