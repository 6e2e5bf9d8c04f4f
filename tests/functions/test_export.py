"""M4: an owner can take the business's data out through the API, page by page, history included."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, new_world

NOW = dt.datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def xtb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False, serve=False) as harness:
        yield harness


async def busy_world(tb: TestBackend) -> World:
    world = await new_world(tb)
    instance = await world.instance(NOW + dt.timedelta(days=2), capacity=1)
    for name in ("ann", "bob", "cat"):
        await world.member(name)
        await world.grant(name, 2, "2030-12-31")
        await world.book(name, instance)
    await tb.mutation("members:remove", {"memberId": world.members["cat"]}, as_user=world.owner)
    return world


async def export_all(world: World, as_user: str, num_items: int) -> tuple[dict[str, list[dict[str, Any]]], int]:
    parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cursor: str | None = None
    calls = 0
    while True:
        opts: dict[str, Any] = {"numItems": num_items}
        if cursor is not None:
            opts["cursor"] = cursor
        page = await world.tb.query("businesses:export", {"businessId": world.business_id, "paginationOpts": opts},
                                    as_user=as_user)
        calls += 1
        parts[page["part"]] += page["page"]
        if page["isDone"]:
            return parts, calls
        cursor = page["continueCursor"]


async def test_owner_pages_through_every_part_including_history(xtb: TestBackend) -> None:
    world = await busy_world(xtb)
    other = await busy_world(xtb)
    parts, calls = await export_all(world, world.owner, num_items=2)
    assert calls > 4  # several pages per part
    for table in ("members", "credit_lots", "bookings", "credit_ledger"):
        rows = await xtb.sql(f"SELECT _id FROM {table} WHERE business_id = $1", world.business_id)
        ids = [r["_id"] for r in parts[table]]
        assert sorted(ids) == sorted(r["_id"] for r in rows), table
        assert len(ids) == len(set(ids)), table
        assert {r["businessId"] for r in parts[table]} == {world.business_id}
    removed = [m for m in parts["members"] if m["_id"] == world.members["cat"]]
    assert removed[0]["deleted"] is True  # a removed member's record stays in the export (M3)
    assert other.business_id not in {r["businessId"] for rows in parts.values() for r in rows}
    one_call = await world.tb.query("businesses:export", {"businessId": world.business_id}, as_user=world.owner)
    assert one_call["part"] == "members" and one_call["isDone"] is False


async def test_only_owners_export(xtb: TestBackend) -> None:
    world = await new_world(xtb)
    await world.member("ada", role="admin")
    with pytest.raises(Forbidden):
        await xtb.query("businesses:export", {"businessId": world.business_id}, as_user=world.subject("ada"))
    with pytest.raises(AppError) as bad:
        await xtb.query("businesses:export", {"businessId": world.business_id,
                                              "paginationOpts": {"numItems": 5, "cursor": "secrets:"}},
                        as_user=world.owner)
    assert bad.value.data["field"] == "paginationOpts.cursor"
