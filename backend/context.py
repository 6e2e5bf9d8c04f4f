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
    db: DatabaseReader
    auth: Auth
    log: LogCollector
    now: dt.datetime
    tenant: str | None = None
    member: dict[str, Any] | None = None


@dataclass
class MutationCtx:
    db: DatabaseWriter
    auth: Auth
    log: LogCollector
    now: dt.datetime
    scheduler: Any
    tenant: str | None = None
    member: dict[str, Any] | None = None


@dataclass
class ActionCtx:
    auth: Auth
    log: LogCollector
    now: dt.datetime
    scheduler: Any
    run_query: Callable[..., Awaitable[Any]]
    run_mutation: Callable[..., Awaitable[Any]]
    run_action: Callable[..., Awaitable[Any]]
