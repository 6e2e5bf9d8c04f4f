"""Bounds on what clients send, enforced at the socket edge before anything shared (the hub) sees it.

- Argument values are checked for depth (``values.check_depth``, whose walk stops at the limit), so a value
  nested thousands of levels deep is refused with an error naming the limit instead of raising
  ``RecursionError`` somewhere deeper in the engine.
- ``INBOUND`` counts the bytes of client frames the process holds: frames still being received (the socket
  protocol's buffer) and requests decoded but not yet finished (queued and running mutations and actions).
  A socket that would take it past ``knobs.MAX_INBOUND_BYTES`` is closed with a reason the official clients
  back off on, so many large or stalled frames cannot exhaust memory.
- ``BoundedWebSocketProtocol`` is uvicorn's WebSocket protocol with that accounting and a read deadline: a
  frame (or fragmented message) must arrive whole within ``knobs.FRAME_READ_TIMEOUT_SECONDS`` of its first
  byte, so a client that stalls mid-frame cannot hold its buffer forever. It also lets a session write
  several frames in one system call (``FRAME_WRITER``). The frame size cap itself
  (``ws_max_size``) is checked by the protocol from the frame header, before the payload is buffered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from .. import knobs, values
from ..errors import InvalidArgs

__all__ = ["FRAME_WRITER", "INBOUND", "BoundedWebSocketProtocol", "InboundBudget", "check_depth", "websocket_protocol"]

log = logging.getLogger("backend.sync")


def check_depth(value: Any, where: str = "$.args") -> None:
    """Raise ``InvalidArgs`` naming the limit when ``value`` is nested deeper than ``MAX_VALUE_DEPTH`` (the
    walk is ``values.check_depth``, the one nesting rule of every boundary)."""
    try:
        values.check_depth(value, path=where)
    except values.ValueError_:
        raise InvalidArgs(
            f"{where}: nested deeper than {knobs.MAX_VALUE_DEPTH} levels (BACKEND_MAX_VALUE_DEPTH)") from None


#: Frames and requests up to this size are always admitted (and counted): a full budget must not stop the
#: small messages every client sends, only the large ones that fill it.
SMALL_FRAME_BYTES = 64 * 1024


class InboundBudget:
    """Bytes of client frames held by this process (see the module docstring)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    def take(self, size: int, holding: int = 0) -> bool:
        """Reserve ``size`` more bytes for something that then holds ``holding + size``; False (nothing
        reserved) when it is larger than ``SMALL_FRAME_BYTES`` and would pass ``MAX_INBOUND_BYTES``."""
        if holding + size > SMALL_FRAME_BYTES and self.used + size > knobs.MAX_INBOUND_BYTES:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


INBOUND = InboundBudget()

_BUSY_REASON = "TooManyConcurrentRequests: the server is receiving too much data; retry later"

#: The ASGI scope extension through which a session writes frames past the ASGI ``send`` (see
#: ``BoundedWebSocketProtocol.write_text_frames``); absent under other servers, which then get ``send``.
FRAME_WRITER = "backend.frame_writer"

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as _Base
    from websockets.protocol import State
except ImportError:  # pragma: no cover - an uvicorn without the sans-I/O protocol: its default is used
    _Base = None  # type: ignore[assignment,misc]


if _Base is not None:

    class BoundedWebSocketProtocol(_Base):  # type: ignore[misc,valid-type]
        """uvicorn's sans-I/O WebSocket protocol with the inbound budget and a read deadline per frame."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._held = 0  # bytes of a frame or message in progress, reserved in INBOUND
            self._deadline: asyncio.TimerHandle | None = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.close_sent or self.disconnected:
                self._hold(0)
                return
            self._hold(self._pending())

        def _pending(self) -> int:
            """Bytes of the frame in progress (the parser's buffer) and of a fragmented message's parts."""
            buffer = getattr(getattr(self.conn, "reader", None), "buffer", b"")
            return len(buffer) + sum(len(part) for part in self.frames)

        def _hold(self, pending: int) -> None:
            if pending > self._held:
                if not INBOUND.take(pending - self._held, self._held):
                    self._refuse(1013, _BUSY_REASON)
                    return
            else:
                INBOUND.give(self._held - pending)
            self._held = pending
            if pending and self._deadline is None and self.handshake_complete:
                self._deadline = self.loop.call_later(knobs.FRAME_READ_TIMEOUT_SECONDS, self._read_timed_out)
            elif not pending and self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timed_out(self) -> None:
            self._deadline = None
            if not self._held or self.close_sent or self.disconnected:
                return
            if self.read_paused:  # we, not the client, are behind: give it the time again
                self._deadline = self.loop.call_later(knobs.FRAME_READ_TIMEOUT_SECONDS, self._read_timed_out)
                return
            self._refuse(1008, f"a frame took longer than {knobs.FRAME_READ_TIMEOUT_SECONDS:g} s to arrive "
                               "(BACKEND_FRAME_READ_TIMEOUT_SECONDS)")

        def _refuse(self, code: int, reason: str) -> None:
            """Close now and release what the frame in progress held."""
            INBOUND.give(self._held)
            self._held = 0
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.frames = []
            if self.close_sent or self.transport.is_closing():
                return
            self.conn.fail(code, reason[:120])
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()

        def send_receive_event_to_app(self) -> None:
            # uvicorn pauses reading after every message and resumes when the app takes it: two epoll_ctl
            # system calls per message even while the session is already waiting for the next one. A small
            # message that finds the queue empty (the session keeps up) leaves reading on; one more while
            # it is still unread, or a large one, pauses as before. So at most one small message waits in
            # the queue beyond what uvicorn itself allows.
            if not self.read_paused and self.queue.empty() and sum(map(len, self.frames)) <= SMALL_FRAME_BYTES:
                self.read_paused = True  # tells uvicorn it need not pause
                try:
                    super().send_receive_event_to_app()
                finally:
                    self.read_paused = False
            else:
                super().send_receive_event_to_app()

        async def run_asgi(self) -> None:
            self.scope["extensions"][FRAME_WRITER] = {"write": self.write_text_frames}  # type: ignore[index]
            await super().run_asgi()

        def write_text_frames(self, frames: Sequence[bytes]) -> bool:
            """Write ``frames`` (UTF-8 text, each its own WebSocket frame) in one ``transport.write``, when the
            socket takes data now; False, with nothing written, when the ASGI ``send`` would have to wait
            (paused by flow control) or could not send at all (closing, closed). The ASGI path re-encodes
            each frame and writes it on its own: a mutation's response and its Transition are two writes
            there, one here."""
            if (self.close_sent or self.disconnected or not self.handshake_complete
                    or self.initial_response is not None or not self.writable.is_set()
                    or self.transport.is_closing() or self.conn.state is not State.OPEN):
                return False
            for frame in frames:
                self.conn.send_text(frame)
            self.transport.write(b"".join(self.conn.data_to_send()))
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            INBOUND.give(self._held)
            self._held = 0
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

else:  # pragma: no cover
    BoundedWebSocketProtocol = None  # type: ignore[assignment,misc]


def websocket_protocol() -> Any:
    """uvicorn's ``ws`` setting: the bounded protocol, or uvicorn's default where it cannot be had."""
    return BoundedWebSocketProtocol if BoundedWebSocketProtocol is not None else "auto"
