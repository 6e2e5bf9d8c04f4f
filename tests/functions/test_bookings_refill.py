"""P4: a seat given up late and taken by a waiting member costs the canceller nothing in the end: the
forfeited credit goes back to the very lot it came from, a drop-in payment is queued for refund, the fee is
reversed, and the waived penalty is no strike."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, clock_at, clocked_backend, new_world

NOW = dt.datetime(2030, 5, 6, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)


@pytest.fixture(scope="module")
async def rtb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(rtb: TestBackend) -> ManualClock:
    return clock_at(rtb, NOW)


@pytest.fixture
async def world(rtb: TestBackend, clock: ManualClock) -> World:
    return await new_world(rtb, lateCancelFeeCents=300)


async def seat(world: World, clock: ManualClock, instance: str, *names: str, **args: Any) -> dict[str, str]:
    ids = {}
    for name in names:
        await world.member(name)
        await world.grant(name, 3, "2030-12-31")
        ids[name] = (await world.book(name, instance, **args))["bookingId"]
        clock.advance(seconds=1)
    return ids


async def ledger_kinds(world: World, booking_id: str) -> list[tuple[str, int, str | None]]:
    rows = await world.tb.sql("SELECT kind, amount, reason, lot_id FROM credit_ledger WHERE booking_id = $1 "
                              "ORDER BY kind", booking_id)
    return [(r["kind"], r["amount"], r["reason"]) for r in rows]


async def test_a_late_cancel_refilled_in_the_same_transaction_costs_nothing(world: World, clock: ManualClock) -> None:
    """Booked under a 24 h late window (P2); the studio later shortens it, so auto-promotion is still open
    when the member cancels late under the window they booked with: the promotion refills the seat at once."""
    await world.settings(lateCancelMinutes=24 * 60, strikeLimit=1)
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, clock, instance, "ann", "bob")
    lot = (await world.balance("ann"))["lots"][0]["lotId"]
    await world.settings(lateCancelMinutes=60)
    clock.set(CLASS - dt.timedelta(hours=20))
    result = await world.cancel("ann", ids["ann"])
    assert result["late"] is True and result["promotedBookingIds"] == [ids["bob"]]
    assert (result["penalty"], result["penaltyWaived"]) == (None, "seat_refilled")
    assert result["refund"] == {"credits": 1, "expiredCredits": 0}
    assert [(x["lotId"], x["remaining"]) for x in (await world.balance("ann"))["lots"]] == [(lot, 3)]
    assert await ledger_kinds(world, ids["ann"]) == [("consume", -1, "booking"), ("refund", 1, "late_cancel_waived")]
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 3
    row = await world.booking_row(ids["ann"])
    assert (row["late"], row["penalty"]["waived"], row["penalty"]["refilledBy"]) == (True, "seat_refilled", ids["bob"])
    assert await world.outbox("fee_charged") == await world.outbox("fee_reversed") == []  # never charged
    [notice] = await world.outbox("booking_cancelled")
    assert notice["payload"]["penaltyWaived"] == "seat_refilled"
    member = await world.tb.sql("SELECT suspended_until FROM members WHERE _id = $1", world.members["ann"])
    assert member[0]["suspended_until"] is None  # a waived penalty is no strike (P5)


@pytest.mark.parametrize("pay_with", ["credits", "dropin"])
async def test_a_seat_claimed_later_reverses_the_penalty(world: World, clock: ManualClock, pay_with: str) -> None:
    instance = await world.instance(CLASS, capacity=1, price_cents=1500)
    ids = await seat(world, clock, instance, "ann", "bob", payWith=pay_with)
    clock.set(CLASS - dt.timedelta(hours=2))  # late, and past the promotion cutoff: the seat is offered
    result = await world.cancel("ann", ids["ann"])
    assert result["penalty"]["feeCents"] == 300 and result["promotedBookingIds"] == []
    assert len(await world.outbox("fee_charged")) == 1
    clock.advance(minutes=5)
    assert (await world.book("bob", instance))["status"] == "confirmed"  # bob claims the seat (W3)
    row = await world.booking_row(ids["ann"])
    assert (row["penalty"]["waived"], row["penalty"]["refilledBy"]) == ("seat_refilled", ids["bob"])
    [reversed_fee] = await world.outbox("fee_reversed")
    assert (reversed_fee["recipient_id"], reversed_fee["payload"]["feeCents"]) == (world.members["ann"], 300)
    assert [o["payload"]["bookingId"] for o in await world.outbox("penalty_waived")] == [ids["ann"]]
    if pay_with == "credits":
        assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 3
    else:
        [refund] = [o for o in await world.outbox("refund_payment") if o["payload"]["bookingId"] == ids["ann"]]
        assert refund["payload"]["amountCents"] == 1500


async def test_one_refill_forgives_one_late_cancel_the_oldest_first(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=2)
    ids = await seat(world, clock, instance, "ann", "bob", "cat", "dan")
    clock.set(CLASS - dt.timedelta(hours=2))
    await world.cancel("ann", ids["ann"])
    clock.advance(minutes=1)
    await world.cancel("bob", ids["bob"])
    await world.book("cat", instance)
    assert (await world.booking_row(ids["ann"]))["penalty"]["waived"] == "seat_refilled"
    assert "waived" not in (await world.booking_row(ids["bob"]))["penalty"]
    assert await world.ledger_sum("bob") == 2
    await world.book("dan", instance)
    assert (await world.booking_row(ids["bob"]))["penalty"]["refilledBy"] == ids["dan"]
    assert await world.ledger_sum("bob") == await world.lots_sum("bob") == 3


async def test_the_waiver_follows_the_policy_the_booking_was_made_under(world: World, clock: ManualClock) -> None:
    await world.settings(refillWaivesLateCancel=False)
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, clock, instance, "ann", "bob")
    await world.settings(refillWaivesLateCancel=True)  # too late for ann: her booking says no waiver (P2)
    clock.set(CLASS - dt.timedelta(hours=2))
    await world.cancel("ann", ids["ann"])
    await world.book("bob", instance)
    assert "waived" not in (await world.booking_row(ids["ann"]))["penalty"]
    assert await world.ledger_sum("ann") == 2 and await world.outbox("fee_reversed") == []


async def test_an_early_cancel_has_nothing_to_waive(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, clock, instance, "ann", "bob")
    result = await world.cancel("ann", ids["ann"])
    assert (result["late"], result["penaltyWaived"], result["promotedBookingIds"]) == (False, None, [ids["bob"]])
    assert await ledger_kinds(world, ids["ann"]) == [("consume", -1, "booking"), ("refund", 1, "cancelled")]
    assert await world.outbox("penalty_waived") == []


async def test_a_refill_in_the_same_transaction_forgives_an_older_late_cancel_first(
    world: World, clock: ManualClock
) -> None:
    await world.settings(lateCancelMinutes=24 * 60)
    instance = await world.instance(CLASS, capacity=2)
    ids = await seat(world, clock, instance, "ann", "bob")
    await world.settings(lateCancelMinutes=60)  # auto-promotion stays open until 3 h before (W4)
    clock.set(CLASS - dt.timedelta(hours=22))
    assert (await world.cancel("ann", ids["ann"]))["penalty"]["feeCents"] == 300  # nobody waiting: charged
    ids.update(await seat(world, clock, instance, "cat", "dan"))  # cat takes the free seat, dan waits
    result = await world.cancel("bob", ids["bob"])
    assert result["promotedBookingIds"] == [ids["dan"]]
    assert (result["penaltyWaived"], result["penalty"]["feeCents"]) == (None, 300)  # dan's seat forgave ann
    ann = await world.booking_row(ids["ann"])
    assert (ann["penalty"]["waived"], ann["penalty"]["refilledBy"]) == ("seat_refilled", ids["dan"])
    assert sorted(o["payload"]["bookingId"] for o in await world.outbox("fee_charged")) == sorted([ids["ann"], ids["bob"]])
    assert [o["payload"]["bookingId"] for o in await world.outbox("fee_reversed")] == [ids["ann"]]
    assert await world.ledger_sum("ann") == 3 and await world.ledger_sum("bob") == 2
