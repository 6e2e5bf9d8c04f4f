"""One sync socket at a time, reopened with bounded exponential backoff and jitter.

The connection knows nothing of queries or requests. When a socket opens it asks its owner for the first
frames (Connect, auth, the whole query set, replays) and queues them ahead of anything else, so nothing
sent meanwhile can overtake them; every received frame goes to the owner in order, on one task. Frames
queued for a socket that closed are dropped: the owner rebuilds its state on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ._errors import ClientError

__all__ = ["Backoff", "Connection", "Frame", "sync_url"]

log = logging.getLogger("backend.client")

Frame = tuple[dict[str, Any], Callable[[], None] | None]  # a message, and what to do once it is written

# Close reasons that mean "the server is overloaded": start backing off at seconds, not milliseconds.
_OVERLOADED = ("SubscriptionsWorkerFullError", "TooManyConcurrentRequests", "CommitterFullError",
               "AwsTooManyRequestsException", "ExecuteFullError", "SystemTimeoutError", "ExpiredInQueue",
               "TooManyWritesInTimePeriod", "Overloaded")


def sync_url(url: str) -> str:
    """``http://host[/prefix]`` → ``ws://host[/prefix]/api/sync`` (https → wss)."""
    scheme, sep, rest = url.partition("://")
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if not sep or scheme.lower() not in schemes or not rest.strip("/"):
        raise ClientError(f"invalid deployment URL {url!r}: expected http(s)://host[:port]")
    return f"{schemes[scheme.lower()]}://{rest.rstrip('/')}/api/sync"


class Backoff:
    """Delays of ``initial * 2**retries`` capped at ``maximum``, each scaled by a random factor in [0.5, 1.5)."""

    def __init__(self, initial: float = 0.1, maximum: float = 10.0, slow_initial: float = 3.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.slow_initial = slow_initial
        self.retries = 0

    def next_delay(self, reason: str) -> float:
        start = self.slow_initial if reason.startswith(_OVERLOADED) else self.initial
        base = min(self.maximum, start * 2.0 ** min(self.retries, 30))
        self.retries += 1
        return min(self.maximum, base * (0.5 + random.random()))

    def reset(self) -> None:
        self.retries = 0


class Connection:
    """Callbacks: ``on_open(connection_count, last_close_reason) -> frames``, ``on_message(dict)``,
    ``on_close(reason)``. All run on the connection's task; none may block."""

    def __init__(
        self,
        url: str,
        on_open: Callable[[int, str | None], list[Frame]],
        on_message: Callable[[dict[str, Any]], None],
        on_close: Callable[[str], None],
        *,
        idle_timeout: float = 30.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.backoff = Backoff()
        self.idle_timeout = idle_timeout
        self.open_timeout = open_timeout
        self._on_open = on_open
        self._on_message = on_message
        self._on_close = on_close
        self._task: asyncio.Task[None] | None = None
        self._socket: ClientConnection | None = None
        self._outbox: asyncio.Queue[Frame] | None = None
        self._client_reason: str | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self.connection_count = 0
        self.last_close_reason: str | None = "InitialConnect"

    @property
    def is_open(self) -> bool:
        return self._outbox is not None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sync-client")

    def send(self, message: dict[str, Any], on_sent: Callable[[], None] | None = None) -> bool:
        """Queue a frame on the open socket; False when there is none (the next open must carry it)."""
        if self._outbox is None:
            return False
        self._outbox.put_nowait((message, on_sent))
        return True

    def reconnect(self, reason: str) -> None:
        """Drop the current socket for a client-side reason; the loop opens a new one."""
        if self._socket is not None and self._client_reason is None:
            self._client_reason = reason
            self._spawn_close(self._socket, reason)

    def stop_soon(self) -> None:
        """Stop for good without waiting (safe from inside ``on_message``)."""
        self._stopping = True
        self._wake.set()
        if self._socket is not None:
            self._spawn_close(self._socket, "")

    async def stop(self) -> None:
        self.stop_soon()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            if not task.done():
                task.cancel()

    # -- the loop ----------------------------------------------------------------------------------------

    def _spawn_close(self, socket: ClientConnection, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(socket.close(1000, reason[:120]))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                socket = await connect(self.url, open_timeout=self.open_timeout, max_size=64 * 1024 * 1024,
                                       close_timeout=2)
            except Exception as error:  # refused, DNS, handshake, timeout: all mean "try again later"
                reason = f"{type(error).__name__}: {error}"
                log.debug("sync connect to %s failed: %s", self.url, reason)
                await self._pause(self.backoff.next_delay(reason))
                continue
            reason = await self._serve(socket)
            self.last_close_reason = reason
            if not self._stopping:
                await self._pause(self.backoff.next_delay(reason))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _serve(self, socket: ClientConnection) -> str:
        self._socket, self._client_reason = socket, None
        outbox: asyncio.Queue[Frame] = asyncio.Queue()
        for frame in self._on_open(self.connection_count, self.last_close_reason):
            outbox.put_nowait(frame)
        self.connection_count += 1
        self._outbox = outbox
        writer = asyncio.get_running_loop().create_task(self._writer(socket, outbox))
        reason = "closed with code 1006"
        try:
            while not self._stopping and self._client_reason is None:
                raw = await asyncio.wait_for(socket.recv(), timeout=self.idle_timeout)
                try:
                    message = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    self.reconnect("ProtocolError: a frame that is not JSON")
                    continue
                if not isinstance(message, dict):
                    continue
                try:
                    self._on_message(message)
                except Exception:
                    log.exception("sync client failed to handle a %s message", message.get("type"))
                    self.reconnect("InternalClientError")
        except TimeoutError:
            reason = "InactiveServer"
        except ConnectionClosed as closed:
            close = closed.rcvd
            if close is not None:
                reason = close.reason or f"closed with code {close.code}"
        finally:
            self._outbox = None
            self._socket = None
            writer.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(socket.close(), timeout=2)
        reason = self._client_reason or reason
        self._on_close(reason)
        return reason

    async def _writer(self, socket: ClientConnection, outbox: asyncio.Queue[Frame]) -> None:
        try:
            while True:
                message, on_sent = await outbox.get()
                await socket.send(msgspec.json.encode(message).decode())
                if on_sent is not None:
                    on_sent()
        except ConnectionClosed:
            return
        except Exception:
            log.exception("sync client writer failed")
            self.reconnect("FailedToSendMessage")
