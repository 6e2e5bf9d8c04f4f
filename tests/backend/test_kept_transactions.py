"""Connections kept begun between mutations: a commit message may begin the next SERIALIZABLE transaction, and
the next mutation starts on it without a BEGIN of its own. Such a connection holds no snapshot and no lock
while it waits, sees every commit made meanwhile, gives way to calls that need a plain connection, and goes
back to the pool when idle or when the node stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import knobs
from backend.db import _pool
from backend.errors import AppError
from backend.testing import TestBackend


@pytest.fixture
async def tb() -> AsyncIterator[TestBackend]:
    async with TestBackend(serve=False, run_scheduler=False) as backend:
        yield backend


def _kept_pids(tb: TestBackend) -> list[int]:
    return [conn.get_server_pid() for conn, _ in tb.runner.gate._kept]


async def _activity(tb: TestBackend, pid: int) -> tuple[str, str | None, str | None, int]:
    state, xmin, xid = (await tb.sql(
        "SELECT state, backend_xmin::text, backend_xid::text FROM pg_stat_activity WHERE pid = $1", pid))[0]
    locks = (await tb.sql("SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'relation'", pid))[0][0]
    return state, xmin, xid, locks


async def test_the_next_mutation_starts_on_the_transaction_the_last_commit_began(tb: TestBackend) -> None:
    gate = tb.runner.gate
    name = f"kept-{uuid.uuid4().hex[:8]}"
    assert await tb.mutation("counters:increment", {"name": name}) == 1
    assert gate.kept == 1, "the commit began the next transaction and the connection was kept"
    (pid,) = _kept_pids(tb)
    # Waiting, it has taken no snapshot: no vacuum horizon, no transaction id, no lock.
    assert await _activity(tb, pid) == ("idle in transaction", None, None, 0)
    started = gate.started_begun
    assert await tb.mutation("counters:increment", {"name": name}) == 2
    assert gate.started_begun == started + 1
    assert _kept_pids(tb) == [pid]  # the same connection, begun again by the second commit


async def test_a_kept_transaction_sees_what_was_committed_while_it_waited(tb: TestBackend) -> None:
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    await tb.mutation("counters:increment", {"name": name})
    assert tb.runner.gate.kept == 1
    # Committed on another connection after the kept transaction was begun: its snapshot is taken by the
    # next mutation's first statement, so that mutation reads 41, not 1.
    await tb.sql("UPDATE counters SET value = 41 WHERE name = $1", name)
    assert await tb.mutation("counters:increment", {"name": name}) == 42
    assert await tb.query("counters:get", {"name": name}) == 42


async def test_a_mutation_that_fails_on_a_kept_transaction_leaves_nothing_behind(tb: TestBackend) -> None:
    gate = tb.runner.gate
    name = f"fails-{uuid.uuid4().hex[:8]}"
    await tb.mutation("counters:increment", {"name": name})
    started = gate.started_begun
    with pytest.raises(AppError):
        await tb.mutation("counters:fail_after_write", {"name": name})
    assert gate.started_begun == started + 1
    assert gate.kept == 0, "a rolled-back transaction does not begin another"
    assert await tb.query("counters:get", {"name": name}) == 1
    assert await tb.mutation("counters:increment", {"name": name}) == 2


async def test_a_kept_connection_whose_server_went_away_is_not_used(tb: TestBackend) -> None:
    """PostgreSQL ended its backend while it waited (a restart, an administrator): the next mutation gets
    another connection instead of failing with a lost one."""
    name = f"gone-{uuid.uuid4().hex[:8]}"
    await tb.mutation("counters:increment", {"name": name})
    (pid,) = _kept_pids(tb)
    assert (await tb.sql("SELECT pg_terminate_backend($1)", pid))[0][0] is True
    await asyncio.sleep(0.2)  # the connection reads its termination notice
    assert await tb.mutation("counters:increment", {"name": name}) == 2
    assert pid not in _kept_pids(tb)


async def test_kept_connections_go_back_to_the_pool_when_idle(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool, "KEEP_SECONDS", 0.2)
    await tb.mutation("counters:increment", {"name": f"idle-{uuid.uuid4().hex[:8]}"})
    (pid,) = _kept_pids(tb)
    async with asyncio.timeout(5):
        while tb.runner.gate.kept:
            await asyncio.sleep(0.05)
    # Given back: the begun transaction was rolled back (the connection may now be serving this very check).
    async with asyncio.timeout(5):
        while (await _activity(tb, pid))[0] == "idle in transaction":
            await asyncio.sleep(0.05)


async def test_calls_that_need_a_plain_connection_roll_kept_ones_back_instead_of_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small pool where kept connections fill the gate: queries still run at once, and the pool keeps its
    reserve for the engine's own work."""
    monkeypatch.setattr(knobs, "POOL_MAX_SIZE", 4)
    monkeypatch.setattr(knobs, "POOL_RESERVED", 1)
    monkeypatch.setattr(knobs, "POOL_WAIT_SECONDS", 3.0)
    async with TestBackend(serve=False, run_scheduler=False) as tb:
        gate = tb.runner.gate
        assert gate.size == 3
        names = [f"fill-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
        for _ in range(20):  # concurrent mutations raise the limit until all three connections are kept
            await asyncio.gather(*(tb.runner.mutation("counters:increment_slowly", {"name": n, "delayMs": 20},
                                                      None) for n in names))
            if gate.kept == 3:
                break
        assert gate.kept == 3
        async with asyncio.timeout(2):  # the reserve is still there
            assert (await tb.sql("SELECT 1"))[0][0] == 1
        from_pool = 0
        connect = gate._connect

        async def counted(deadline: float) -> Any:
            nonlocal from_pool
            from_pool += 1
            return await connect(deadline)

        monkeypatch.setattr(gate, "_connect", counted)
        async with asyncio.timeout(2):
            values = await asyncio.gather(*(tb.query("counters:get", {"name": n}) for n in names))
        assert all(v > 0 for v in values)
        assert gate.kept < 3 and gate.timed_out == 0
        assert from_pool == 0, "a rolled-back connection serves the query itself; none is taken from the pool"


async def test_stopping_gives_kept_connections_back() -> None:
    tb = TestBackend(serve=False, run_scheduler=False)
    await tb.__aenter__()
    try:
        await tb.mutation("counters:increment", {"name": f"stop-{uuid.uuid4().hex[:8]}"})
        assert tb.runner.gate.kept == 1
    finally:
        async with asyncio.timeout(10):  # the pool's close would wait for a connection never given back
            await tb.__aexit__(None, None, None)


async def test_a_mutation_that_ends_while_the_node_stops_is_not_kept(tb: TestBackend) -> None:
    """Calls still running when the gate closes give their connections back, or the pool's close would wait
    for them forever."""
    gate = tb.runner.gate
    name = f"closing-{uuid.uuid4().hex[:8]}"
    await tb.mutation("counters:increment", {"name": name})
    running = asyncio.create_task(tb.mutation("counters:increment_slowly", {"name": name, "delayMs": 100}))
    await asyncio.sleep(0.03)  # it has started on the kept connection
    await gate.close()
    assert await running == 2
    await asyncio.sleep(0.05)
    assert gate.kept == 0 and not gate.keep_next()
