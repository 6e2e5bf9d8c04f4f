"""The litestar application: the Convex HTTP API, the sync WebSocket, health."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
