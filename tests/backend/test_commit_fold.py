"""A mutation's bookkeeping rows, and the writes it held back, are sent with its COMMIT as literals: exact,
injection-proof, all or nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from backend import ids, postgres
from backend.db._commit import serializable
from backend.db._literals import Unrenderable, literal
from backend.errors import ReferenceViolation
from backend.testing import TestBackend
from backend.values import decode_value, encode_value

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


# -- writes held back until the COMMIT ---------------------------------------------------------------------

ODD_TEXTS = [ODD_SESSION, "", "plain", "line\nbreak\ttab", "back\\slash", "dollar $1 $$ quote '\"", "\u2028\ufeff"]
LITERAL_CASES: list[tuple[str, Any]] = [
    *(('text COLLATE "C"', text) for text in ODD_TEXTS),
    ("bigint", 0), ("bigint", -1), ("bigint", (1 << 63) - 1), ("bigint", -(1 << 63)),
    *(("double precision", value) for value in (0.0, -0.0, 1.5, -2.25, 1e300, -1e-300, 5e-324, 0.1 + 0.2,
                                                1765012345678.123, float("inf"), float("-inf"))),
    ("double precision", 7),
    ("boolean", True), ("boolean", False),
    ("timestamptz", dt.datetime(2026, 12, 6, 11, 0, 0, 123456, tzinfo=dt.UTC)),
    ("timestamptz", dt.datetime(1, 1, 1, 0, 0, 1, tzinfo=dt.UTC)),
    ("timestamptz", dt.datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=dt.UTC)),
    ("timestamptz", dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45)))),
    ("date", dt.date(2026, 2, 28)), ("date", dt.date(1, 1, 2)),
    ("jsonb", {"a": [1, 2.5, None, True, ODD_SESSION], "nested": {"k'ey": "v\\\"al"}}), ("jsonb", []),
    ("jsonb", "just a string"), ("jsonb", 12),
    ("bytea", b""), ("bytea", bytes(range(256))),
    ("text[]", ["a", ODD_SESSION, ""]), ("text[]", []), ("bigint[]", [1, -(1 << 63)]),
    ("double precision[]", [0.5, float("inf")]), ("boolean[]", [True, False]), ("jsonb[]", [{"x": 1}, {"y": [2]}]),
    ("timestamptz[]", [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]), ("date[]", [dt.date(2026, 1, 1)]),
    ("bytea[]", [b"\x00\xff"]),
    ('text COLLATE "C"', None), ("jsonb", None), ("bigint[]", None),
]


@pytest.mark.parametrize(("sql_type", "value"), LITERAL_CASES, ids=lambda case: repr(case)[:40])
async def test_a_literal_reads_back_as_the_driver_would_send_the_value(tb: TestBackend, sql_type: str, value: Any) -> None:
    """What a held write puts in the COMMIT message is the very value the prepared statement would have bound."""
    assert tb.backend is not None and tb.backend.pool is not None
    cast = sql_type.replace(' COLLATE "C"', "")
    async with tb.backend.pool.acquire() as conn:
        as_parameter = await conn.fetchval(f"SELECT $1::{cast}", value)
        as_literal = await conn.fetchval(f"SELECT ({literal(sql_type, value)})::{cast}")
    assert as_literal == as_parameter
    assert type(as_literal) is type(as_parameter)
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, as_literal) == math.copysign(1, value)


@pytest.mark.parametrize(("sql_type", "value"), [
    ("bigint", True), ("bigint", 1.5), ("boolean", 1), ("timestamptz", dt.datetime(2026, 1, 1)),
    ("date", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), ("bytea", "text"), ("text[]", "not a list"),
    ('text COLLATE "C"', "lone \ud800 surrogate"), ("jsonb", {"x": object()}), ("money", 1),
    ("timestamptz", dt.datetime.min.replace(tzinfo=dt.UTC)), ("timestamptz", dt.datetime.max.replace(tzinfo=dt.UTC)),
    ("date", dt.date.min), ("date", dt.date.max),
])
def test_a_value_of_another_shape_has_no_literal(sql_type: str, value: Any) -> None:
    with pytest.raises(Unrenderable):
        literal(sql_type, value)


@pytest.fixture
async def logged(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestBackend, list[str]]]:
    """A backend whose pool connections report every statement they run (asyncpg's query logger)."""
    statements: list[str] = []
    plain = postgres.init_connection

    async def init(conn: asyncpg.Connection) -> None:
        await plain(conn)
        conn.add_query_logger(lambda record: statements.append(record.query))

    monkeypatch.setattr(postgres, "init_connection", init)
    async with TestBackend(serve=False, run_scheduler=False) as backend:
        await asyncio.sleep(0)  # asyncpg reports statements with call_soon
        statements.clear()  # the schema's
        yield backend, statements


def _user_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if "counters" in s or "ref_" in s]


async def test_writes_after_the_last_read_travel_with_the_commit(logged: tuple[TestBackend, list[str]]) -> None:
    tb, statements = logged
    name = "held-" + ODD_SESSION
    assert await tb.mutation("counters:increment", {"name": name}) == 1  # read, then insert
    assert await tb.mutation("counters:increment", {"name": name}) == 2  # read, then patch
    assert await tb.mutation("counters:increment_two", {"a": name, "b": "held-b"}) == [3, 1]
    await asyncio.sleep(0)  # asyncpg reports statements with call_soon
    user = _user_statements(statements)
    kinds = ["read" if s.startswith("SELECT") else "commit" if "COMMIT" in s else "write" for s in user]
    # increment_two: its second read first sent the first counter's patch; its insert went with the COMMIT.
    assert kinds == ["read", "commit", "read", "commit", "read", "write", "read", "commit"], user
    commits = [s for s in user if "COMMIT" in s]
    assert 'INSERT INTO "counters"' in commits[0] and 'UPDATE "counters"' in commits[1]
    assert user[5].startswith('UPDATE "counters"') and 'INSERT INTO "counters"' in commits[2]
    rows = await tb.sql("SELECT name, value FROM counters ORDER BY name")
    assert [(r["name"], r["value"]) for r in rows] == [("held-b", 1), (name, 3)]


async def test_a_read_sees_the_writes_held_before_it(logged: tuple[TestBackend, list[str]]) -> None:
    tb, statements = logged
    assert await tb.mutation("counters:increment_two", {"a": "same", "b": "same"}) == [1, 2]
    await asyncio.sleep(0)  # asyncpg reports statements with call_soon
    user = _user_statements(statements)
    assert any(s.startswith("INSERT INTO \"counters\"") for s in user), "the insert had to go before the read"
    assert await tb.query("counters:get", {"name": "same"}) == 2


async def test_a_write_the_database_may_refuse_goes_at_once(logged: tuple[TestBackend, list[str]]) -> None:
    """A reference to a document the transaction has not seen is sent at the call, so its error is the
    call's (ReferenceViolation), catchable there; one to a document it has seen may wait."""
    tb, statements = logged

    async def write(*ops: dict[str, Any]) -> Any:
        return await tb.runner.mutation("testing_tenancy:write_unscoped", encode_value({"ops": list(ops)}), None,
                                        allow_internal=True)

    def alone(table: str) -> list[str]:
        return [s for s in statements if s.startswith(f'INSERT INTO "{table}"') and "COMMIT" not in s]

    created = await write({"op": "insert", "table": "ref_parents", "doc": {"name": "parent"}})
    [parent] = decode_value(created.value)
    statements.clear()
    await write({"op": "insert", "table": "ref_children", "doc": {"parentId": parent, "name": "unseen parent"}})
    await asyncio.sleep(0)
    assert len(alone("ref_children")) == 1
    statements.clear()
    seen = await write({"op": "patch", "id": parent, "doc": {"name": "parent, read first"}},
                       {"op": "insert", "table": "ref_children", "doc": {"parentId": parent, "name": "seen parent"}})
    await asyncio.sleep(0)
    assert seen.error is None and alone("ref_children") == []
    await asyncio.sleep(0)  # asyncpg reports statements with call_soon
    assert [s for s in statements if "COMMIT" in s and 'INSERT INTO "ref_children"' in s]
    missing = ids.new_id(ids.table_number("ref_parents"))
    refused = await write({"op": "insert", "table": "ref_children", "doc": {"parentId": missing, "name": "x"}})
    assert isinstance(refused.error, ReferenceViolation), refused.error
    rows = await tb.sql("SELECT name FROM ref_children ORDER BY name")
    assert [r["name"] for r in rows] == ["seen parent", "unseen parent"]
