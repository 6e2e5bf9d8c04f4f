"""Which client a request or socket comes from, for the pool's per-caller share (``db._pool.PEER``)."""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send

from ..db._pool import PEER

__all__ = ["WithPeer"]


class WithPeer:
    """Sets ``PEER`` to the client's address for the task serving an HTTP request or a WebSocket; tasks the
    socket's session starts (its mutations and actions) inherit it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = PEER.set(str(client[0]) if client else "unknown")
        try:
            await self.app(scope, receive, send)
        finally:
            PEER.reset(token)
