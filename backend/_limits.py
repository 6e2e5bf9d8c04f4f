"""Time limits on function calls.

A query or one mutation attempt that runs past its limit is cancelled where it waits (asyncpg then cancels
the statement in flight on the server), fails with ``FunctionTimeout``, and its transaction is rolled back,
so a slow or stuck function gives its pool connection back within the limit. PostgreSQL's own
``statement_timeout`` on pool connections (``knobs.STATEMENT_TIMEOUT_SECONDS``) is the second line.

Only code that awaits can be stopped: a function spinning without awaiting blocks its whole node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from . import knobs
from .errors import FunctionTimeout
from .postgres import Connection

__all__ = ["check_after_timeout", "limit_for", "run_limited", "timed_out"]

T = TypeVar("T")

_KNOBS = {
    "query": "BACKEND_QUERY_TIMEOUT_SECONDS",
    "mutation": "BACKEND_MUTATION_TIMEOUT_SECONDS",
    "action": "BACKEND_ACTION_TIMEOUT_SECONDS",
}


def limit_for(kind: str) -> float:
    """The current limit in seconds for a query, mutation or action (read at each call, so tests may vary it)."""
    if kind == "query":
        return knobs.QUERY_TIMEOUT_SECONDS
    if kind == "mutation":
        return knobs.MUTATION_TIMEOUT_SECONDS
    return knobs.ACTION_TIMEOUT_SECONDS


async def run_limited(call: Awaitable[T], kind: str, path: str) -> T:
    """Await ``call``, failing with ``FunctionTimeout`` once it has run longer than ``kind``'s limit.

    A ``TimeoutError`` the function raises itself passes through unchanged.
    """
    seconds = limit_for(kind)
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await call
    except TimeoutError:
        if not scope.expired():
            raise
    raise timed_out(kind, path, seconds)


def timed_out(kind: str, path: str, seconds: float | None = None) -> FunctionTimeout:
    """The error of a call that ran past its limit."""
    seconds = limit_for(kind) if seconds is None else seconds
    return FunctionTimeout(f"{path}: the {kind} ran longer than its limit of {seconds:g} s ({_KNOBS[kind]})")


async def check_after_timeout(conn: Connection, error: FunctionTimeout) -> None:
    """After a query timed out inside a shared snapshot: if a cancelled statement aborted the transaction,
    chain the database's error to ``error`` so the caller sees that the snapshot can no longer be used."""
    try:
        await conn.execute("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as aborted:
        error.__cause__ = aborted
