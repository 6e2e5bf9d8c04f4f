"""A live query that fails inside PostgreSQL fails alone; the snapshot pass is redone and others still update."""

from __future__ import annotations

import uuid

from backend import QueryCtx, query
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


@query
async def divides_by_zero(ctx: QueryCtx, name: str) -> int:
    """Reads a counter, then runs a statement PostgreSQL rejects (reaching into internals on purpose)."""
    await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    await ctx.db._txn.conn.fetchval("SELECT 1 / 0")
    return 0


async def test_a_database_error_fails_only_that_query() -> None:
    async with TestBackend() as tb:
        assert tb.backend is not None
        tb.backend.registry.add("tests:divides_by_zero", divides_by_zero.spec)
        name = f"pg-{uuid.uuid4()}"
        async with RawClient.open(tb.port) as client:
            broken, healthy = await client.subscribe(("tests:divides_by_zero", {"name": name}),
                                                     ("counters:get", {"name": name}))
            assert broken in client.failures and "Server Error" in client.failures[broken]["errorMessage"]
            assert client.results[healthy] == 0.0
            response, transition = await client.mutation("counters:increment", {"name": name})
            assert response["success"] is True and transition is not None
            await client.until(lambda: client.results.get(healthy) == 1.0)
            assert broken in client.failures
