"""A mutation's bookkeeping rows are sent with its COMMIT as literals: exact, injection-proof, all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from backend.db._commit import serializable
from backend.testing import TestBackend

ODD_SESSION = "s'); DROP TABLE _commit_log; --\\x00 \u00e9\u6f22 \U0001f600 '' \\'"


@pytest.fixture
async def tb() -> AsyncIterator[TestBackend]:
    async with TestBackend(serve=False, run_scheduler=False) as backend:
        yield backend


async def test_a_stored_result_keeps_an_odd_session_id_exactly(tb: TestBackend) -> None:
    first = await tb.runner.mutation("counters:increment", {"name": "odd"}, None, session=(ODD_SESSION, 7))
    assert first.error is None and first.wrote
    rows = await tb.sql("SELECT session_id, request_id, result FROM _session_requests")
    assert [(r["session_id"], r["request_id"], msgspec.json.decode(r["result"])) for r in rows] == [
        (ODD_SESSION, 7, first.value)]
    assert len(await tb.sql("SELECT xid FROM _commit_log")) >= 1
    # The replay finds that row: it returns the first result and runs nothing.
    again = await tb.runner.mutation("counters:increment", {"name": "odd"}, None, session=(ODD_SESSION, 7))
    assert again.value == first.value
    assert await tb.query("counters:get", {"name": "odd"}) == 1


async def test_a_failing_final_message_leaves_nothing_and_no_open_transaction(tb: TestBackend) -> None:
    assert tb.backend is not None and tb.backend.pool is not None
    async with tb.backend.pool.acquire() as conn:
        async with serializable(conn) as final:
            final.session_result("dup", 1, b"1", b"[]", None, "t:f")
        before = await conn.fetchval("SELECT count(*) FROM _commit_log")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with serializable(conn) as final:
                await conn.execute("INSERT INTO counters (_id, _creation_time, name, value) "
                                   "VALUES ('x', 0, 'lost', 1)")
                final.commit_log(b"[]")
                final.session_result("dup", 1, b"2", b"[]", None, "t:f")  # the key is taken: the whole message fails
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM _commit_log") == before
        assert await conn.fetchval("SELECT count(*) FROM counters WHERE name = 'lost'") == 0
        assert await conn.fetchval("SELECT result FROM _session_requests WHERE session_id = 'dup'") == b"1"


async def test_an_error_in_the_body_rolls_back(tb: TestBackend) -> None:
    assert tb.backend is not None and tb.backend.pool is not None
    async with tb.backend.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with serializable(conn) as final:
                final.session_result("gone", 1, b"1", b"[]", "issuer|sub", "t:f")
                await conn.execute("INSERT INTO _commit_log (xid, summary) VALUES (pg_current_xact_id(), '')")
                raise RuntimeError("body failed")
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM _session_requests WHERE session_id = 'gone'") == 0
        # asyncpg refuses a nested managed transaction rather than committing ours early.
        with pytest.raises(asyncpg.InterfaceError):
            async with serializable(conn), conn.transaction():
                pass
        assert not conn.is_in_transaction()
