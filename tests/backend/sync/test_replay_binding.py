"""A stored mutation result answers only the caller that made it: same identity, same function.

Presenting another session's id (any client can claim ``connectionCount > 0``) with a request id already
used there must neither reveal that session's result nor silently skip the presenter's own mutation: the
presenter gets a failed MutationResponse with a stable code. Session ids must be UUIDs.
"""

from __future__ import annotations

import uuid

from backend.testing import TestBackend
from tests.support.sync_client import RawClient


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_another_identity_presenting_the_session_is_refused_and_learns_nothing(tb: TestBackend) -> None:
    mine, theirs = unique("victim"), unique("intruder")
    session = str(uuid.uuid4())
    async with RawClient.open(tb.port, session_id=session) as victim:
        await victim.authenticate(tb.token("alice"))
        response, _ = await victim.mutation("counters:increment", {"name": mine, "by": 41}, request_id=3)
        assert response["success"] and response["result"] == 41.0
    for token in (None, tb.token("mallory")):
        async with RawClient.open(tb.port, session_id=session, connection_count=1) as intruder:
            if token is not None:
                await intruder.authenticate(token)
            refused, _ = await intruder.mutation("counters:increment", {"name": theirs, "by": 1}, request_id=3)
            assert not refused["success"]
            assert refused["result"].startswith("[RequestIdReused]"), refused
            assert "41" not in refused["result"]
    assert await tb.query("counters:get", {"name": theirs}) == 0
    assert await tb.query("counters:get", {"name": mine}) == 41


async def test_the_same_identity_calling_another_function_is_refused(tb: TestBackend) -> None:
    name = unique("path")
    session = str(uuid.uuid4())
    token = tb.token("alice")
    async with RawClient.open(tb.port, session_id=session) as first:
        await first.authenticate(token)
        response, _ = await first.mutation("counters:increment", {"name": name}, request_id=0)
        assert response["success"]
    async with RawClient.open(tb.port, session_id=session, connection_count=1) as again:
        await again.authenticate(token)
        refused, _ = await again.mutation("counters:increment_two", {"a": name, "b": name}, request_id=0)
        assert not refused["success"] and refused["result"].startswith("[RequestIdReused]")
        # The real replay (same identity, same function) is still answered from the stored result.
        replay, _ = await again.mutation("counters:increment", {"name": name}, request_id=0)
        assert replay["success"] and replay["result"] == 1.0
    assert await tb.query("counters:get", {"name": name}) == 1


async def test_a_fresh_socket_claiming_a_used_session_is_refused_too(tb: TestBackend) -> None:
    """connectionCount 0 skips the replay lookup on the first attempt; the stored row's key still catches it."""
    mine, theirs = unique("fresh-victim"), unique("fresh-intruder")
    session = str(uuid.uuid4())
    async with RawClient.open(tb.port, session_id=session) as victim:
        await victim.authenticate(tb.token("alice"))
        await victim.mutation("counters:increment", {"name": mine}, request_id=0)
    async with RawClient.open(tb.port, session_id=session) as intruder:
        refused, _ = await intruder.mutation("counters:increment", {"name": theirs}, request_id=0)
        assert not refused["success"] and refused["result"].startswith("[RequestIdReused]")
    assert await tb.query("counters:get", {"name": theirs}) == 0


async def test_session_ids_must_be_uuids(tb: TestBackend) -> None:
    for bad in ("victim-session", "x" * 36, "{" + str(uuid.uuid4()) + "}", str(uuid.uuid4()).replace("-", "")):
        async with RawClient.open(tb.port, session_id=bad, connect=False) as client:
            await client.connect()
            messages, _ = await client.closed()
            assert messages and messages[0]["type"] == "FatalError"
            assert "Connect.sessionId" in messages[0]["error"] and "UUID" in messages[0]["error"]
    async with RawClient.open(tb.port, session_id=str(uuid.uuid4()).upper()) as upper:
        (q,) = await upper.subscribe(("counters:get", {"name": unique("upper")}))
        assert upper.results[q] == 0


async def test_an_existing_database_gains_the_binding_columns_and_old_rows_answer_nobody() -> None:
    import asyncpg

    from backend.testing import create_database, drop_database

    url = await create_database("replay")
    try:
        conn = await asyncpg.connect(url)
        try:  # the table as it was before results were bound to a caller
            await conn.execute("""CREATE TABLE _session_requests (
                session_id text NOT NULL, request_id bigint NOT NULL, result bytea NOT NULL,
                log_lines bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (session_id, request_id))""")
            session = str(uuid.uuid4())
            await conn.execute("INSERT INTO _session_requests (session_id, request_id, result, log_lines) "
                               "VALUES ($1, 0, '\"secret\"', '[]')", session)
        finally:
            await conn.close()
        async with TestBackend(database_url=url, run_scheduler=False) as old:
            columns = {r["column_name"] for r in await old.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_name = '_session_requests'")}
            assert {"identity", "function_path"} <= columns
            async with RawClient.open(old.port, session_id=session, connection_count=1) as client:
                refused, _ = await client.mutation("counters:increment", {"name": "legacy"}, request_id=0)
                assert not refused["success"] and refused["result"].startswith("[RequestIdReused]")
                assert "secret" not in refused["result"]
    finally:
        await drop_database(url)
