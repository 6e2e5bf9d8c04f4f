"""Fair use of the connection pool: no single caller can hold every connection, and no call waits forever.

Function calls take a pool connection through ``PoolGate.acquire``. Calls from clients are keyed by caller
— the verified user, or for anonymous clients their network address (set per HTTP request and per socket in
``PEER``) — and each caller holds at most ``knobs.POOL_MAX_PER_CALLER`` connections at once; further calls
wait in that caller's own queue, bounded by ``knobs.POOL_QUEUE_PER_CALLER``, and beyond it are refused
with ``Overloaded``. All function calls together leave ``knobs.POOL_RESERVED`` connections free for the
engine's own work (health checks, scheduler bookkeeping). Waiting for a connection is bounded by
``knobs.POOL_WAIT_SECONDS``: a caller stuck behind its own calls gets ``Overloaded`` (429), a call that found
the whole pool busy gets ``Unavailable`` (503). Either way nothing was done, so a retry is safe.

Calls made inside the server (the scheduler, actions' ``run_mutation`` inherit their caller, tests) that
carry no ``PEER`` count only against the shared limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .. import knobs
from ..errors import Overloaded, Unavailable
from ..postgres import Connection

__all__ = ["PEER", "PoolGate", "caller_key"]

#: The network address of the client whose request the current task serves (None inside the server).
PEER: ContextVar[str | None] = ContextVar("backend_peer", default=None)


def caller_key(identity: Any | None) -> str | None:
    """Whom a call counts against: the verified user, else the client's address; None for the server's own."""
    peer = PEER.get()
    if peer is None:
        return None
    if identity is not None:
        return f"user:{getattr(identity, 'token_identifier', None) or identity.subject}"
    return f"addr:{peer}"


class _Share:
    """One caller's connections: ``users`` counts its calls holding or waiting for one."""

    __slots__ = ("limit", "slots", "users")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.slots = asyncio.Semaphore(limit)
        self.users = 0


class PoolGate:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.size = max(1, knobs.POOL_MAX_SIZE - knobs.POOL_RESERVED)
        self._slots = asyncio.Semaphore(self.size)
        self._shares: dict[str, _Share] = {}
        self.refused = 0  # calls refused because their caller had too many waiting
        self.timed_out = 0  # calls that waited longer than the pool wait

    @property
    def free(self) -> int:
        """Connections function calls may still take without waiting."""
        return self._slots._value

    def caller(self, key: str) -> tuple[int, int]:
        """``(running, waiting)``: the calls of caller ``key`` holding a connection, and those waiting."""
        share = self._shares.get(key)
        if share is None:
            return 0, 0
        running = share.limit - share.slots._value
        return running, share.users - running

    @contextlib.asynccontextmanager
    async def acquire(self, identity: Any | None) -> AsyncIterator[Connection]:
        deadline = time.monotonic() + knobs.POOL_WAIT_SECONDS
        key = caller_key(identity)
        share = None if key is None else self._enter(key)
        try:
            if share is not None:
                await self._wait(share.slots, deadline, share.limit)
            try:
                await self._wait(self._slots, deadline, None)
                try:
                    conn = await self._connect(deadline)
                    try:
                        yield conn
                    finally:
                        await self.pool.release(conn)
                finally:
                    self._slots.release()
            finally:
                if share is not None:
                    share.slots.release()
        finally:
            if share is not None and key is not None:
                self._leave(key, share)

    def _enter(self, key: str) -> _Share:
        share = self._shares.get(key)
        if share is None:
            share = self._shares[key] = _Share(knobs.POOL_MAX_PER_CALLER)
        if share.users >= share.limit + knobs.POOL_QUEUE_PER_CALLER:
            self.refused += 1
            raise Overloaded(
                f"too many concurrent calls from one client: {share.limit} running and "
                f"{knobs.POOL_QUEUE_PER_CALLER} waiting (BACKEND_POOL_QUEUE_PER_CALLER); retry later")
        share.users += 1
        return share

    async def _wait(self, slots: asyncio.Semaphore, deadline: float, share_limit: int | None) -> None:
        """Take one of ``slots`` by ``deadline``: the caller's own share (``share_limit``) or the shared pool."""
        if not slots.locked():  # a free slot is taken without suspending: no timer to arm and cancel
            await slots.acquire()
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await slots.acquire()
        except TimeoutError:
            self.timed_out += 1
            if share_limit is not None:
                raise Overloaded(
                    f"too many concurrent calls from one client: {share_limit} may run at once "
                    f"(BACKEND_POOL_MAX_PER_CALLER) and none finished within {knobs.POOL_WAIT_SECONDS:g} s "
                    "(BACKEND_POOL_WAIT_SECONDS); retry later") from None
            raise _pool_busy() from None

    async def _connect(self, deadline: float) -> PoolConnectionProxy[Any]:
        # A timeout scope rather than asyncpg's own ``timeout=``, which wraps every acquire in a task.
        try:
            async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                conn: PoolConnectionProxy[Any] = await self.pool.acquire()
        except TimeoutError:
            self.timed_out += 1
            raise _pool_busy() from None
        return conn

    def _leave(self, key: str, share: _Share) -> None:
        share.users -= 1
        if share.users == 0 and self._shares.get(key) is share:
            del self._shares[key]


def _pool_busy() -> Unavailable:
    return Unavailable(f"no database connection became free within {knobs.POOL_WAIT_SECONDS:g} s "
                       "(BACKEND_POOL_WAIT_SECONDS); nothing was done, try again")
