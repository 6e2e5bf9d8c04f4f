"""The one error type the client raises, so callers catch a single class."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError"]


class ClientError(Exception):
    """A failed query, mutation or action, or a client that can no longer talk to its server.

    ``data`` carries the function's ``AppError`` data (the protocol's ``errorData``) and is None otherwise,
    so application code can branch on stable codes instead of parsing messages.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def __repr__(self) -> str:
        return f"ClientError({self.message!r}, data={self.data!r})"
