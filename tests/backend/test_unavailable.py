"""When the database is gone the API answers 503 with a code, not a bare 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backend import MutationCtx, QueryCtx, mutation, query
from backend.testing import TestBackend


async def test_database_loss_is_a_coded_503() -> None:
    async with TestBackend() as tb:
        assert tb.backend is not None and tb.backend.pool is not None
        pool = tb.backend.pool
        await pool.close()
        async with httpx.AsyncClient(base_url=tb.url) as client:
            response = await client.post("/api/query", json={"path": "counters:get", "args": {"name": "x"}})
        assert response.status_code == 503
        assert response.json()["code"] == "ServiceUnavailable"


@query
async def sleeps(ctx: QueryCtx, seconds: float) -> int:
    """Holds its statement open long enough for the test to end its backend (reaching into internals)."""
    await ctx.db._txn.conn.fetchval("SELECT pg_sleep($1)", seconds)
    return 0


@mutation
async def sleeps_writing(ctx: MutationCtx, seconds: float) -> int:
    await ctx.db._txn.conn.fetchval("SELECT pg_sleep($1)", seconds)
    return 0


@pytest.mark.parametrize("kind", ["query", "mutation"])
async def test_a_backend_ended_under_a_call_is_a_coded_503_not_a_500(kind: str) -> None:
    """PostgreSQL restarting ends the backends mid-statement (AdminShutdown); the caller should retry."""
    async with TestBackend() as tb:
        assert tb.backend is not None
        tb.backend.registry.add("tests:sleeps", (sleeps if kind == "query" else sleeps_writing).spec)
        async with httpx.AsyncClient(base_url=tb.url, timeout=10) as client:
            call = asyncio.create_task(client.post(f"/api/{kind}", json={"path": "tests:sleeps", "args": {"seconds": 5}}))
            ended = 0
            for _ in range(100):
                await asyncio.sleep(0.02)
                ended = (await tb.sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"))[0][0]
                if ended:
                    break
            assert ended == 1
            response = await call
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "ServiceUnavailable"


async def test_pool_connections_ended_while_idle_answer_503_or_work() -> None:
    """After a PostgreSQL restart the pool's idle connections are dead: calls on them are refused with a coded
    503 (or succeed on a fresh connection), never a 500."""
    async with TestBackend() as tb:
        async with httpx.AsyncClient(base_url=tb.url, timeout=10) as client:
            statuses = []
            for _ in range(3):
                await tb.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'")
                await asyncio.sleep(0.05)
                for kind, path in (("mutation", "counters:increment"), ("query", "counters:get")):
                    response = await client.post(f"/api/{kind}", json={"path": path, "args": {"name": "restart"}})
                    statuses.append(response.status_code)
                    if response.status_code != 200:
                        assert response.json()["code"] == "ServiceUnavailable", response.text
        assert set(statuses) <= {200, 503}, statuses
