"""Credits: lots that expire at the end of a local day (F2), consumption order (F3), balance = ledger (F1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, new_world

NOW = dt.datetime(2030, 6, 25, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def ktb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False) as harness:
        yield harness


@pytest.fixture
def clock(ktb: TestBackend) -> ManualClock:
    assert isinstance(ktb.clock, ManualClock)
    ktb.clock.set(NOW)
    return ktb.clock


@pytest.fixture
async def world(ktb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(ktb, timezone="Europe/London")
    await world.member("ann")
    return world


async def test_grant_expires_at_the_end_of_the_local_day(world: World) -> None:
    lot = await world.grant("ann", 2, "2030-06-30", note="summer pack")
    assert lot["expiresAt"] == "2030-06-30T23:00:00Z"  # midnight BST
    evening = await world.instance(dt.datetime(2030, 6, 30, 18, 0, tzinfo=UTC), timezone="Europe/London")
    morning = await world.instance(dt.datetime(2030, 7, 1, 8, 0, tzinfo=UTC), timezone="Europe/London")
    assert (await world.book("ann", evening))["status"] == "confirmed"
    data = await world.refused("ann", morning)
    assert data["reasons"] == ["expires_before_class"]
    balance = await world.balance("ann")
    assert (balance["available"], balance["total"]) == (1, 1)
    assert balance["lots"][0]["note"] == "summer pack" and balance["lots"][0]["expiresOn"] == "2030-06-30"


async def test_soonest_expiry_is_spent_first(world: World) -> None:
    late = await world.grant("ann", 1, "2030-12-31")
    soon = await world.grant("ann", 1, "2030-07-31")
    await world.book("ann", await world.instance(NOW + dt.timedelta(days=2)))
    lots = {lot["lotId"]: lot["remaining"] for lot in (await world.balance("ann"))["lots"]}
    assert lots == {soon["lotId"]: 0, late["lotId"]: 1}


async def test_balance_always_equals_the_ledger(world: World, clock: ManualClock) -> None:
    await world.grant("ann", 4, "2030-12-31")
    await world.grant("ann", 1, "2030-06-26")
    instances = [await world.instance(NOW + dt.timedelta(days=1, hours=h)) for h in range(0, 8, 2)]
    bookings = [(await world.book("ann", i))["bookingId"] for i in instances]
    await world.cancel("ann", bookings[0])
    clock.set(NOW + dt.timedelta(days=1, hours=1))
    assert (await world.cancel("ann", bookings[2]))["late"] is True  # forfeited
    clock.set(NOW + dt.timedelta(days=3))  # the one-day lot has expired by now
    balance = await world.balance("ann")
    assert balance["total"] == await world.ledger_sum("ann") == await world.lots_sum("ann")
    assert balance["available"] + balance["expired"] == balance["total"]
    page = await world.tb.query("credits:ledger", {"businessId": world.business_id, "paginationOpts": {
        "numItems": 100, "cursor": None}}, as_user=world.subject("ann"))
    assert sum(e["amount"] for e in page["page"]) == balance["total"]
    assert page["isDone"] is True


async def test_refund_to_an_expired_lot_is_reported(world: World, clock: ManualClock) -> None:
    await world.grant("ann", 1, "2030-06-27")
    instance = await world.instance(dt.datetime(2030, 6, 27, 18, 0, tzinfo=UTC), timezone="Europe/London")
    booking = (await world.book("ann", instance))["bookingId"]
    clock.set(dt.datetime(2030, 6, 27, 23, 30, tzinfo=UTC))  # the lot expired at 23:00Z
    result = await world.cancel("owner", booking, waivePenalty=True, reason="class never ran")
    assert result["refund"] == {"credits": 1, "expiredCredits": 1}  # visible, not a silent loss (F3)
    balance = await world.balance("ann")
    assert (balance["available"], balance["expired"]) == (0, 1)
    assert balance["total"] == await world.ledger_sum("ann")


async def test_ledger_pages_newest_first(world: World) -> None:
    for i in range(5):
        await world.grant("ann", i + 1, "2030-12-31")
    seen: list[int] = []
    cursor = None
    while True:
        page = await world.tb.query("credits:ledger", {
            "businessId": world.business_id, "memberId": world.members["ann"],
            "paginationOpts": {"numItems": 2, "cursor": cursor}}, as_user=world.owner)
        seen += [e["amount"] for e in page["page"]]
        if page["isDone"]:
            break
        cursor = page["continueCursor"]
    assert sorted(seen) == [1, 2, 3, 4, 5] and len(seen) == 5


async def test_who_may_grant_and_read(world: World) -> None:
    await world.member("bob")
    with pytest.raises(Forbidden):
        await world.tb.mutation("credits:grant", {"businessId": world.business_id, "memberId": world.members["ann"],
                                                  "credits": 1, "expiresOn": "2030-12-31"}, as_user=world.subject("bob"))
    with pytest.raises(Forbidden):
        await world.tb.query("credits:balance", {"businessId": world.business_id, "memberId": world.members["ann"]},
                             as_user=world.subject("bob"))
    own = await world.tb.query("credits:balance", {"businessId": world.business_id}, as_user=world.subject("bob"))
    assert (own["memberId"], own["available"], own["lots"]) == (world.members["bob"], 0, [])
    with pytest.raises(AppError) as past:
        await world.grant("ann", 1, "2030-06-24")
    assert past.value.data["field"] == "expiresOn"
    with pytest.raises(AppError) as zero:
        await world.grant("ann", 0, "2030-12-31")
    assert zero.value.data["field"] == "credits"
    other = await new_world(world.tb)
    with pytest.raises(Exception, match="not found"):
        await world.tb.mutation("credits:grant", {"businessId": other.business_id, "memberId": world.members["ann"],
                                                  "credits": 1, "expiresOn": "2030-12-31"}, as_user=other.owner)
