"""What a function receives as ``ctx``: the database, the caller's identity, its tenant, logs, scheduler."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .db import DatabaseReader, DatabaseWriter
from .logs import LogCollector

__all__ = ["ActionCtx", "Auth", "MutationCtx", "QueryCtx"]


class Auth:
    """``ctx.auth.get_user_identity()`` returns the verified identity, or None for anonymous callers."""

    def __init__(self, identity: Any | None) -> None:
        self._identity = identity

    def get_user_identity(self) -> Any | None:
        return self._identity

    @property
    def subject(self) -> str | None:
        return None if self._identity is None else str(self._identity.subject)


@dataclass
class QueryCtx:
    """A query's ``ctx``: ``db`` reads (recorded for invalidation), ``auth``, ``log``, ``now`` (the call's clock),
    and for a tenant-scoped function ``tenant`` (the business id) and ``member`` (the caller's membership).

    ``ctx.log("text", value)`` (or ``.debug/.info/.warn/.error``) and ``print`` add lines the caller sees in
    ``logLines`` and the server prints under the call's line (see ``backend.logs``).
    """

    db: DatabaseReader
    auth: Auth
    log: LogCollector
    now: dt.datetime
    tenant: str | None = None
    member: dict[str, Any] | None = None


@dataclass
class MutationCtx:
    """A mutation's ``ctx``: as ``QueryCtx``, with ``db`` that also writes and ``scheduler``."""

    db: DatabaseWriter
    auth: Auth
    log: LogCollector
    now: dt.datetime
    scheduler: Any
    tenant: str | None = None
    member: dict[str, Any] | None = None


@dataclass
class ActionCtx:
    """An action's ``ctx``: ``auth``, ``log``, ``now``, ``scheduler`` and ``run_query/run_mutation/run_action``
    (no ``db``: an action runs outside any transaction)."""

    auth: Auth
    log: LogCollector
    now: dt.datetime
    scheduler: Any
    run_query: Callable[..., Awaitable[Any]]
    run_mutation: Callable[..., Awaitable[Any]]
    run_action: Callable[..., Awaitable[Any]]
