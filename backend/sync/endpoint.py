"""WebSocket routes: ``/api/sync`` and ``/api/{client_version}/sync`` (the npm client puts its version there)."""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from .session import SyncSession, Transport

__all__ = ["sync_routes"]


class _LitestarTransport(Transport):
    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self.socket = socket

    async def receive(self) -> str | None:
        try:
            data = await self.socket.receive_data(mode="text")
        except WebSocketDisconnect:
            return None
        return data if isinstance(data, str) else data.decode("utf-8", "replace")

    async def send(self, frame: bytes) -> None:
        await self.socket.send_data(frame.decode("utf-8"), mode="text")

    async def close(self, code: int, reason: str) -> None:
        await self.socket.close(code=code, reason=reason)


async def _serve(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    session = SyncSession(socket.app.state.backend, _LitestarTransport(socket))
    await session.run()


@websocket("/api/sync")
async def sync_plain(socket: WebSocket[Any, Any, Any]) -> None:
    await _serve(socket)


@websocket("/api/{client_version:str}/sync")
async def sync_versioned(socket: WebSocket[Any, Any, Any], client_version: str) -> None:
    await _serve(socket)


def sync_routes() -> list[Any]:
    return [sync_plain, sync_versioned]
