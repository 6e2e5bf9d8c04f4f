"""WebSocket routes: ``/api/sync`` and ``/api/{client_version}/sync`` (the npm client puts its version there).

Litestar routes the socket and accepts it; the session then sends and receives through the server's own ASGI
``send``/``receive`` (``_Socket`` keeps them), without litestar's per-message wrappers: a commit's Transitions
go out to many sockets at once, and an idle socket waits in fewer frames.
"""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket
from litestar.connection.base import empty_receive, empty_send
from litestar.types import Receive, Scope, Send

from .session import SyncSession, Transport

__all__ = ["sync_routes"]


class _Socket(WebSocket[Any, Any, Any]):
    """Litestar's WebSocket, also holding the server's unwrapped ``receive`` and ``send``."""

    __slots__ = ("asgi_receive", "asgi_send")

    def __init__(self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send) -> None:
        super().__init__(scope, receive, send)
        self.asgi_receive = receive
        self.asgi_send = send


class _AsgiTransport(Transport):
    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

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
    await SyncSession(socket.app.state.backend, _AsgiTransport(socket.asgi_receive, socket.asgi_send)).run()


def sync_routes() -> list[Any]:
    return [sync_socket]
