"""The live schedule over a real socket: a subscriber to ``classes:list_instances`` sees new classes, a
cancellation and a closure as they commit; subscribers of another week or another business hear nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, new_studio
from tests.support.sync_client import RawClient

START = at("2025-03-20T12:00:00Z")
WEEK = ("2025-03-24T00:00:00Z", "2025-03-31T00:00:00Z")
LATER_WEEK = ("2025-05-05T00:00:00Z", "2025-05-12T00:00:00Z")


@pytest.fixture(scope="module")
async def ltb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False) as harness:
        yield harness


@asynccontextmanager
async def watching(tb: TestBackend, studio: Studio, week: tuple[str, str]) -> AsyncIterator[tuple[RawClient, int]]:
    """A socket signed in as the studio's owner, subscribed to one week of its schedule."""
    async with RawClient.open(tb.port) as client:
        await client.send({"type": "Authenticate", "tokenType": "User", "baseVersion": 0,
                           "value": tb.token(studio.owner)})
        args = {"businessId": studio.business_id, "from": week[0], "to": week[1]}
        (query_id,) = await client.subscribe(("classes:list_instances", args))
        assert query_id not in client.failures, client.failures
        yield client, query_id


def statuses(client: RawClient, query_id: int) -> list[tuple[str, str]]:
    rows: list[dict[str, Any]] = client.results[query_id]
    return [(r["localDate"], r["status"]) for r in rows]


async def test_schedule_updates_arrive_live_and_only_where_they_belong(ltb: TestBackend) -> None:
    studio, other = await new_studio(ltb, "Europe/London"), await new_studio(ltb, "Europe/London")
    await studio.venue("soho")
    await other.venue("elsewhere")
    async with (
        watching(ltb, studio, WEEK) as (mine, q),
        watching(ltb, studio, LATER_WEEK) as (later, q_later),
        watching(ltb, other, WEEK) as (theirs, q_theirs),
    ):
        assert mine.results[q] == later.results[q_later] == theirs.results[q_theirs] == []
        await studio.template("soho", "2025-03-24", "09:00", "FREQ=DAILY;COUNT=3")
        await mine.until(lambda: len(mine.results[q]) == 3)
        assert statuses(mine, q) == [("2025-03-24", "scheduled"), ("2025-03-25", "scheduled"), ("2025-03-26", "scheduled")]
        await later.silent()
        await theirs.silent()

        first = mine.results[q][0]["_id"]
        await studio.mutation("classes:cancel_instance", {"instanceId": first, "reason": "Teacher ill"})
        await mine.until(lambda: statuses(mine, q)[0] == ("2025-03-24", "cancelled"))
        assert mine.results[q][0]["cancelReason"] == "Teacher ill"

        await studio.mutation("classes:add_closure", {"businessId": studio.business_id, "fromDate": "2025-03-26",
                                                      "toDate": "2025-03-26", "reason": "Boiler"})
        await mine.until(lambda: statuses(mine, q)[2] == ("2025-03-26", "cancelled"))
        assert statuses(mine, q)[1] == ("2025-03-25", "scheduled")
        await later.silent()
        await theirs.silent()
        assert later.results[q_later] == [] and theirs.results[q_theirs] == []
