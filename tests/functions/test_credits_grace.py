"""F3: a refund goes back to the very lot that paid; if that lot has expired since, the business's policy
applies visibly: no restore (the refund says how many credits are expired), or a restore with a grace
period in a new lot. Either way the balance equals the ledger sum."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, iso, new_world

NOW = dt.datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
CLASS = dt.datetime(2030, 3, 6, 18, 0, tzinfo=UTC)  # the lot below is valid until 2030-03-07T00:00Z


@pytest.fixture(scope="module")
async def gtb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def world(gtb: TestBackend) -> World:
    assert isinstance(gtb.clock, ManualClock)
    gtb.clock.set(NOW)
    world = await new_world(gtb)
    await world.member("ann")
    return world


async def booked_then_cancelled_after_expiry(world: World) -> tuple[str, str, dict[str, object]]:
    lot = (await world.grant("ann", 1, "2030-03-06"))["lotId"]
    instance = await world.instance(CLASS)
    booking = (await world.book("ann", instance))["bookingId"]
    assert isinstance(world.tb.clock, ManualClock)
    world.tb.clock.set(dt.datetime(2030, 3, 8, 10, 0, tzinfo=UTC))  # the lot expired last night
    result = await world.cancel("owner", booking, waivePenalty=True, reason="booked by mistake")
    return lot, booking, result


async def kinds(world: World, booking: str) -> list[tuple[str, int]]:
    rows = await world.tb.sql("SELECT kind, amount FROM credit_ledger WHERE booking_id = $1", booking)
    return sorted((r["kind"], r["amount"]) for r in rows)


async def test_without_grace_the_refund_says_the_credit_has_expired(world: World) -> None:
    lot, booking, result = await booked_then_cancelled_after_expiry(world)
    assert result["refund"] == {"credits": 1, "expiredCredits": 1}
    balance = await world.balance("ann")
    assert (balance["available"], balance["expired"]) == (0, 1)
    assert [(x["lotId"], x["remaining"], x["expired"]) for x in balance["lots"]] == [(lot, 1, True)]
    assert await kinds(world, booking) == [("consume", -1), ("refund", 1)]


async def test_with_grace_the_credit_is_restored_in_a_new_lot(world: World) -> None:
    await world.settings(expiredCreditGraceDays=10)
    lot, booking, result = await booked_then_cancelled_after_expiry(world)
    refund = result["refund"]
    assert (refund["credits"], refund["expiredCredits"], refund["restoredCredits"]) == (1, 0, 1)
    assert refund["restoredUntil"] == iso(dt.datetime(2030, 3, 19, tzinfo=UTC))  # end of 2030-03-18
    balance = await world.balance("ann")
    assert (balance["available"], balance["expired"]) == (1, 0)
    lots = {x["lotId"]: (x["remaining"], x["expiresOn"]) for x in balance["lots"]}
    assert lots == {lot: (0, "2030-03-06"), refund["restoredLotId"]: (1, "2030-03-18")}
    assert await kinds(world, booking) == [("adjust", 1), ("consume", -1), ("expire", -1), ("refund", 1)]
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 1
    later = await world.instance(dt.datetime(2030, 3, 12, 18, 0, tzinfo=UTC))
    assert (await world.book("ann", later))["status"] == "confirmed"  # the restored credit pays
