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

A mutation's commit message may end with the next ``BEGIN ISOLATION LEVEL SERIALIZABLE``: its connection is
then *kept begun* here rather than given back to the pool, and the next mutation starts on it without a
``BEGIN`` round trip. Such a transaction has run no statement, so it has no snapshot, holds no lock and no
vacuum horizon; its snapshot is taken by the next mutation's first statement, as with a fresh ``BEGIN``.
Kept connections count with the calls against the gate's size, so the pool always keeps its reserve; a call
that needs a plain connection when they fill it rolls one back. How many are kept follows demand (a
mutation that found none raises the limit, a rollback lowers it), and one idle for ``KEEP_SECONDS`` goes
back to the pool.
"""

from __future__ import annotations

import asyncio
import collections
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

__all__ = ["KEEP_SECONDS", "PEER", "PoolGate", "caller_key"]

#: Seconds a connection kept begun may wait for the next mutation before it goes back to the pool.
KEEP_SECONDS = 2.0

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
        self.started_begun = 0  # mutations that started on a connection kept begun (no BEGIN round trip)
        self._kept: collections.deque[tuple[PoolConnectionProxy[Any], float]] = collections.deque()
        self._keep_limit = 0  # how many may be kept: follows demand
        self._expiry: asyncio.TimerHandle | None = None
        self._returning: set[asyncio.Task[None]] = set()
        self._closed = False  # after close(), nothing more is kept: the pool's close waits for every connection

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

    @property
    def kept(self) -> int:
        """Connections kept begun for the next mutation."""
        return len(self._kept)

    @contextlib.asynccontextmanager
    async def acquire(self, identity: Any | None, *, serializable: bool = False) -> AsyncIterator[Connection]:
        """A connection for one call. ``serializable``: the caller starts a SERIALIZABLE transaction at once
        (``db.serializable``), so it may get a connection kept begun (``conn.is_in_transaction()``); if its
        commit began the next transaction, the connection is kept for the next such caller."""
        deadline = time.monotonic() + knobs.POOL_WAIT_SECONDS
        key = caller_key(identity)
        share = None if key is None else self._enter(key)
        try:
            if share is not None:
                await self._wait(share.slots, deadline, share.limit)
            try:
                await self._wait(self._slots, deadline, None)
                try:
                    conn = await self._take(deadline, serializable)
                    finished = False
                    try:
                        yield conn
                        finished = True
                    finally:
                        if finished and serializable and _begun(conn):
                            self._keep(conn)
                        else:
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

    def keep_next(self) -> bool:
        """Should a committing mutation begin the next transaction in its commit message?"""
        return not self._closed and len(self._kept) < self._keep_limit

    async def close(self) -> None:
        """Give every kept connection back to the pool (before the pool closes), and keep none from now on."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._kept:
            await self._give_back(self._kept.popleft()[0])
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)

    async def _take(self, deadline: float, serializable: bool) -> PoolConnectionProxy[Any]:
        while self._kept:
            if serializable:
                conn = self._kept.pop()[0]  # the most recent: the oldest ones age out
                if _begun(conn):
                    self.started_begun += 1
                    return conn
            elif self.size - self._slots._value + len(self._kept) > self.size:
                # Kept connections and calls fill the gate's size: roll one back and use it rather than dip
                # into the pool's reserve, and keep fewer from now on.
                conn = self._kept.popleft()[0]
                self._keep_limit = max(0, self._keep_limit - 1)
                try:
                    await conn.execute("ROLLBACK")
                    return conn
                except Exception:
                    pass
                except BaseException:
                    self._return_later(conn)
                    raise
            else:
                break
            # Its server went away while it waited (asyncpg may already have taken it back).
            self._return_later(conn)
        if serializable:
            self._keep_limit = min(self.size, self._keep_limit + 1)  # a mutation found none kept
        return await self._connect(deadline)

    def _keep(self, conn: PoolConnectionProxy[Any]) -> None:
        # Not checked against the limit again: its commit asked (``keep_next``), and rolling back a transaction
        # it just began would cost the round trip it saves. Kept and running together stay within the size.
        if self._closed:  # a call that finished while the node stops
            self._return_later(conn)
            return
        self._kept.append((conn, time.monotonic()))
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().call_later(KEEP_SECONDS, self._expire)

    def _expire(self) -> None:
        """Give back the connections kept longer than ``KEEP_SECONDS``; check again when the next one is due."""
        self._expiry = None
        now = time.monotonic()
        while self._kept and now - self._kept[0][1] >= KEEP_SECONDS:
            self._return_later(self._kept.popleft()[0])
        if self._kept:
            due = self._kept[0][1] + KEEP_SECONDS - now
            self._expiry = asyncio.get_running_loop().call_later(due, self._expire)

    def _return_later(self, conn: PoolConnectionProxy[Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._give_back(conn))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _give_back(self, conn: PoolConnectionProxy[Any]) -> None:
        """Roll back the begun transaction and give the connection back to the pool (which drops it if broken)."""
        if _begun(conn):
            try:
                await conn.execute("ROLLBACK")
            except Exception:
                with contextlib.suppress(Exception):
                    conn.terminate()
        with contextlib.suppress(Exception):  # a proxy asyncpg already took back is left alone
            await self.pool.release(conn)

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


def _begun(conn: PoolConnectionProxy[Any]) -> bool:
    """Open and inside a transaction. False too for a proxy asyncpg took back when its connection closed."""
    try:
        return not conn.is_closed() and conn.is_in_transaction()
    except asyncpg.InterfaceError:
        return False


def _pool_busy() -> Unavailable:
    return Unavailable(f"no database connection became free within {knobs.POOL_WAIT_SECONDS:g} s "
                       "(BACKEND_POOL_WAIT_SECONDS); nothing was done, try again")
