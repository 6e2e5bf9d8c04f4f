"""ctx.db against real PostgreSQL: each operation, its read-set record, its errors and the limits."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import knobs
from backend.db import DatabaseReader, DatabaseWriter, Txn
from backend.errors import InvalidArgs, InvalidWrite, LimitExceeded, NotFound
from backend.ids import new_id, table_number
from backend.testing import TestBackend

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def txn(tb: TestBackend) -> AsyncIterator[Txn]:
    """A transaction that is rolled back after the test, so tests never see each other's rows."""
    assert tb.backend is not None and tb.backend.pool is not None
    async with tb.backend.pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            yield Txn(conn, tb.backend.schema, NOW, read_only=False, function_path="test", actor="tester")
        finally:
            await tr.rollback()


def prefix() -> str:
    return f"p{uuid.uuid4().hex[:8]}-"


async def test_insert_get_patch_replace_delete(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    name = prefix() + "a"
    doc_id = await db.insert("counters", {"name": name, "value": 1})
    doc = await db.get(doc_id)
    assert doc is not None and doc["name"] == name and doc["value"] == 1
    assert doc["_creationTime"] == NOW.timestamp() * 1000
    await db.patch(doc_id, {"value": 2})
    assert (await db.get(doc_id))["value"] == 2  # type: ignore[index]
    await db.replace(doc_id, {"name": name, "value": 3})
    assert (await db.get(doc_id))["value"] == 3  # type: ignore[index]
    await db.delete(doc_id)
    assert await db.get(doc_id) is None
    assert [w.table for w in txn.writes] == ["counters"] * 4
    assert txn.writes[0].old is None and txn.writes[-1].new is None


async def test_get_records_a_point_interval(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    doc_id = await db.insert("counters", {"name": prefix(), "value": 1})
    txn.read_set.intervals.clear()
    await DatabaseReader(txn).get(doc_id)
    (interval,) = txn.read_set.intervals
    assert (interval.table, interval.index, interval.prefix) == ("counters", "by_id", (doc_id,))


async def test_index_range_query_orders_and_records_its_range(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    p = prefix()
    for i, letter in enumerate("dbca"):
        await db.insert("counters", {"name": p + letter, "value": i})
    txn.read_set.intervals.clear()
    rows = await db.query("counters").with_index("by_name", lambda q: q.gte("name", p + "b").lt("name", p + "d")).collect()
    assert [r["name"] for r in rows] == [p + "b", p + "c"]
    (interval,) = txn.read_set.intervals
    assert interval.index == "by_name" and interval.prefix == ()
    assert interval.contains((p + "b", 0.0, "x")) and interval.contains((p + "c", 0.0, "x"))
    assert not interval.contains((p + "d", 0.0, "x")) and not interval.contains((p + "a", 0.0, "x"))
    desc = await db.query("counters").with_index("by_name", lambda q: q.gte("name", p).lt("name", p + "z")).order("desc").collect()
    assert [r["name"] for r in desc] == [p + x for x in "dcba"]


async def test_take_records_only_what_it_read(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    p = prefix()
    for letter in "abc":
        await db.insert("counters", {"name": p + letter, "value": 0})
    txn.read_set.intervals.clear()
    first = await db.query("counters").with_index("by_name", lambda q: q.gte("name", p).lt("name", p + "z")).first()
    assert first is not None and first["name"] == p + "a"
    (interval,) = txn.read_set.intervals
    assert interval.contains((p + "a", first["_creationTime"], first["_id"]))
    assert not interval.contains((p + "b", 0.0, "x"))  # beyond the last row read: a write there cannot change first()


async def test_eq_filter_unique_paginate(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    p = prefix()
    for i in range(5):
        await db.insert("counters", {"name": p + "same", "value": i})
    rows = await db.query("counters").with_index("by_name", lambda q: q.eq("name", p + "same")).filter(lambda d: d["value"] % 2 == 0).collect()
    assert sorted(r["value"] for r in rows) == [0, 2, 4]
    assert await db.query("counters").with_index("by_name", lambda q: q.eq("name", p + "none")).unique() is None
    pages: list[Any] = []
    cursor = None
    while True:
        page = await db.query("counters").with_index("by_name", lambda q: q.eq("name", p + "same")).paginate(
            {"numItems": 2, "cursor": cursor})
        pages.append([r["value"] for r in page.page])
        if page.is_done:
            break
        cursor = page.continue_cursor
    assert sorted(v for page in pages for v in page) == [0, 1, 2, 3, 4]


async def test_write_errors_name_the_field(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    with pytest.raises(InvalidWrite, match=r"counters.value: expected an integer"):
        await db.insert("counters", {"name": "x", "value": "nope"})
    with pytest.raises(InvalidWrite, match=r"counters.value: missing required field"):
        await db.insert("counters", {"name": "x"})
    with pytest.raises(InvalidWrite, match=r"counters.bogus: unknown field"):
        await db.insert("counters", {"name": "x", "value": 1, "bogus": 2})
    with pytest.raises(InvalidWrite, match=r"set by the engine"):
        await db.insert("counters", {"name": "x", "value": 1, "_creationTime": 5.0})
    with pytest.raises(NotFound):
        await db.patch("a" * 28, {"value": 1})


async def test_index_misuse_is_a_clear_error(txn: Txn) -> None:
    db = DatabaseReader(txn)
    with pytest.raises(Exception, match="no index 'nope'"):
        db.query("counters").with_index("nope")
    with pytest.raises(InvalidArgs, match="out of order"):
        db.query("counters").with_index("by_name", lambda q: q.eq("value", 1))


async def test_rows_scanned_limit(txn: Txn, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseWriter(txn)
    p = prefix()
    for i in range(6):
        await db.insert("counters", {"name": p + str(i), "value": i})
    monkeypatch.setattr(knobs, "MAX_ROWS_SCANNED", txn.rows_scanned + 3)
    with pytest.raises(LimitExceeded, match="scanned more than"):
        await db.query("counters").with_index("by_name", lambda q: q.gte("name", p)).filter(lambda d: False).collect()


async def test_rows_written_limit(txn: Txn, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseWriter(txn)
    monkeypatch.setattr(knobs, "MAX_ROWS_WRITTEN", 2)
    await db.insert("counters", {"name": "w1", "value": 1})
    await db.insert("counters", {"name": "w2", "value": 1})
    with pytest.raises(LimitExceeded, match="wrote more than 2"):
        await db.insert("counters", {"name": "w3", "value": 1})


async def test_read_ranges_limit(txn: Txn, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseReader(txn)
    monkeypatch.setattr(knobs, "MAX_READ_RANGES", 3)
    for _ in range(3):
        await db.get(new_id(table_number("counters")))
    with pytest.raises(LimitExceeded, match="index ranges"):
        await db.query("counters").with_index("by_name").first()


async def test_unfiltered_collect_is_bounded_by_the_scan_limit(txn: Txn, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseWriter(txn)
    p = prefix()
    for i in range(5):
        await db.insert("counters", {"name": p + str(i), "value": i})
    monkeypatch.setattr(knobs, "MAX_ROWS_SCANNED", txn.rows_scanned + 4)
    with pytest.raises(LimitExceeded, match="scanned more than"):
        await db.query("counters").with_index("by_name", lambda q: q.gte("name", p).lt("name", p + "~")).collect()


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pagination_returns_rows_with_null_keys(txn: Txn, order: str) -> None:
    db = DatabaseWriter(txn)
    parent = await db.insert("ref_parents", {"name": prefix()})
    tags = [None, "b", None, "a", None, "c", None]
    for i, tag in enumerate(tags):
        await db.insert("ref_children", {"parentId": parent, "name": f"{i}", "tag": tag})
    seen: list[Any] = []
    cursor = None
    for _ in range(1000):
        page = await db.query("ref_children").with_index("by_tag").order(order).paginate(  # type: ignore[arg-type]
            {"numItems": 3, "cursor": cursor})
        seen += [(r["tag"], r["name"]) for r in page.page if r["parentId"] == parent]
        if page.is_done:
            break
        cursor = page.continue_cursor
    assert sorted(seen, key=str) == sorted([(t, str(i)) for i, t in enumerate(tags)], key=str)
    order_of_tags = [t for t, _ in seen]
    expected = ["a", "b", "c", None, None, None, None]
    assert order_of_tags == (expected if order == "asc" else expected[::-1])


# -- held writes ---------------------------------------------------------------------------------------------


async def test_a_held_write_keeps_its_json_as_it_was_at_the_call(txn: Txn) -> None:
    """The function's own objects stay the function's: changing one after the call changes no held write."""
    txn.cross_tenant = True
    db = DatabaseWriter(txn)
    settings: dict[str, Any] = {"horizonDays": 30, "tags": ["a"]}
    first = await db.insert("businesses", {"name": "First", "timezone": "UTC", "currency": "EUR", "settings": settings})
    settings["horizonDays"] = 60
    settings["tags"].append("b")
    second = await db.insert("businesses", {"name": "Second", "timezone": "UTC", "currency": "EUR",
                                            "settings": settings})
    assert len(txn.held) >= 2, "both inserts (and their audit rows) wait"
    unsent = await txn.conn.fetch("SELECT _id FROM businesses WHERE _id = ANY($1::text[])", [first, second])
    assert unsent == [] and txn.held, "not sent yet: a statement outside ctx.db does not send them"
    await DatabaseReader(txn).get(first)  # a read sends them first
    assert not txn.held
    rows = {r["_id"]: r["settings"] for r in await txn.conn.fetch(
        "SELECT _id, settings FROM businesses WHERE _id = ANY($1::text[])", [first, second])}
    assert rows == {first: {"horizonDays": 30, "tags": ["a"]}, second: {"horizonDays": 60, "tags": ["a", "b"]}}


async def test_a_held_write_that_fails_when_sent_stays_held_and_the_transaction_cannot_commit(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    name = prefix()
    await db.insert("counters", {"name": name, "value": 1})
    assert len(txn.held) == 1
    good = txn.held[0]
    broken = type(good)(good.parts, (*good.params[:-1], "not a number"), good.types)  # as a driver error would
    txn.held[0] = broken
    with pytest.raises(Exception, match="int"):
        await db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    assert txn.held == [broken] and txn.write_failed is not None


async def test_a_lone_surrogate_is_refused_at_the_call_naming_the_field(txn: Txn) -> None:
    db = DatabaseWriter(txn)
    with pytest.raises(InvalidWrite, match=r"counters\.name: strings must be valid Unicode"):
        await db.insert("counters", {"name": "bad \ud800", "value": 1})
    txn.cross_tenant = True
    with pytest.raises(InvalidWrite, match=r"businesses\.settings\.k: strings must be valid Unicode"):
        await db.insert("businesses", {"name": "B", "timezone": "UTC", "currency": "EUR", "settings": {"k": "\udfff"}})


async def test_large_values_are_sent_at_the_call_not_held(txn: Txn) -> None:
    """The COMMIT message writes held values as hex: a large one goes as a parameter at its own call."""
    txn.cross_tenant = True
    db = DatabaseWriter(txn)
    small = await db.insert("businesses", {"name": "Small", "timezone": "UTC", "currency": "EUR", "settings": {}})
    assert [w.params[0] for w in txn.held][:1] == [small]
    big = await db.insert("businesses", {"name": "Big", "timezone": "UTC", "currency": "EUR",
                                         "settings": {"notes": "x" * 300_000}})
    sent = await txn.conn.fetch("SELECT _id FROM businesses WHERE _id = ANY($1::text[])", [small, big])
    assert {r["_id"] for r in sent} == {small, big}, "the large write sent what was held before it, then itself"
    assert txn.held == [] and txn.held_bytes == 0  # its audit row is as large: sent too
