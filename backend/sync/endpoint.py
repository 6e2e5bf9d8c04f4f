"""WebSocket routes: ``/api/sync`` and ``/api/{client_version}/sync`` (the npm client puts its version there).

Litestar routes the socket and accepts it; the session then sends and receives through the server's own ASGI
``send``/``receive``, without litestar's per-message wrappers (``_Socket``): a commit's Transitions go out to
many sockets at once, and an idle socket waits in fewer frames. Under the server's own WebSocket protocol the
session writes frames past ``send`` altogether, several in one system call (``inbound.FRAME_WRITER``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import WebSocket, websocket
from litestar.types import Receive, Send

from .inbound import FRAME_WRITER
from .session import SyncSession, Transport

__all__ = ["sync_routes"]


class _Socket(WebSocket[Any, Any, Any]):
    """Litestar's WebSocket with the server's ``receive`` and ``send`` as they are: the wrappers only track a
    connection state for litestar's own helpers, which the session does not use past ``accept``."""

    __slots__ = ()

    def receive_wrapper(self, receive: Receive) -> Receive:
        return receive

    def send_wrapper(self, send: Send) -> Send:
        return send


class _AsgiTransport(Transport):
    __slots__ = ("_receive", "_send", "_write_frames")

    def __init__(self, receive: Receive, send: Send, write_frames: Callable[[Sequence[bytes]], bool] | None) -> None:
        self._receive = receive
        self._send = send
        self._write_frames = write_frames  # the server's protocol writes frames itself (inbound.FRAME_WRITER)

    def write_now(self, frames: Sequence[bytes]) -> bool:
        return self._write_frames is not None and self._write_frames(frames)

    async def receive(self) -> str | None:
        message = await self._receive()
        if message["type"] != "websocket.receive":
            return None  # websocket.disconnect
        text: str | None = message.get("text")  # type: ignore[assignment]
        return text or ""  # a binary frame is no protocol message

    async def send(self, frame: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": None, "text": frame.decode("utf-8")})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


@websocket(["/api/sync", "/api/{client_version:str}/sync"], websocket_class=_Socket)
async def sync_socket(socket: _Socket) -> None:
    await socket.accept()
    version = socket.path_params.get("client_version")
    writer: dict[str, Any] | None = (socket.scope.get("extensions") or {}).get(FRAME_WRITER)  # type: ignore[assignment]
    transport = _AsgiTransport(socket.receive, socket.send, writer["write"] if writer else None)
    await SyncSession(socket.app.state.backend, transport,
                      chunked_transitions=accepts_transition_chunks(version)).run()


def accepts_transition_chunks(client_version: str | None) -> bool:
    """Whether the client joins ``TransitionChunk`` frames: the npm client does from 1.28 on (it names its
    version in the path); the Rust client (``/api/sync``, no version) does not, and gets a large Transition
    as consecutive Transitions instead."""
    if not client_version:
        return False
    try:
        major, minor = (int(part) for part in client_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (1, 28)


def sync_routes() -> list[Any]:
    return [sync_socket]
