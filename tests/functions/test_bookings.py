"""Booking and the waitlist: seats, refusals with reasons (F9), promotion in order (W1-W4), outbox rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, iso, new_world

NOW = dt.datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)


@pytest.fixture(scope="module")
async def btb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False) as harness:
        yield harness


@pytest.fixture
async def world(btb: TestBackend) -> World:
    assert isinstance(btb.clock, ManualClock)
    btb.clock.set(NOW)
    return await new_world(btb)


async def test_book_confirms_spends_one_credit_and_queues_a_notification(world: World) -> None:
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    instance = await world.instance(CLASS, capacity=3)
    result = await world.book("ann", instance)
    assert result["status"] == "confirmed" and "position" not in result
    assert (await world.instance_row(instance))["booked"] == 1
    balance = await world.balance("ann")
    assert balance["available"] == 4
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 4
    row = await world.booking_row(result["bookingId"])
    assert row["status"] == "confirmed" and row["pay_with"] == "credits" and row["credits_spent"] == 1
    assert row["policy"] is not None and row["active_key"] is not None
    assert [o["recipient_id"] for o in await world.outbox("booking_confirmed")] == [world.members["ann"]]
    audited = await world.tb.sql("SELECT operation FROM audit_log WHERE document_id = $1", result["bookingId"])
    assert [r["operation"] for r in audited] == ["insert"]


async def test_second_booking_of_the_same_class_is_refused(world: World) -> None:
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    instance = await world.instance(CLASS)
    first = await world.book("ann", instance)
    data = await world.refused("ann", instance)
    assert data["reasons"] == ["already_booked"] and data["bookingId"] == first["bookingId"]
    assert (await world.instance_row(instance))["booked"] == 1
    assert (await world.balance("ann"))["available"] == 4


async def test_full_class_waitlists_with_positions_in_join_order(world: World, btb: TestBackend) -> None:
    assert isinstance(btb.clock, ManualClock)
    instance = await world.instance(CLASS, capacity=1)
    for name in ("ann", "bob", "cat"):
        await world.member(name)
        await world.grant(name, 2, "2030-12-31")
    assert (await world.book("ann", instance))["status"] == "confirmed"
    btb.clock.advance(seconds=1)
    bob = await world.book("bob", instance)
    btb.clock.advance(seconds=1)
    cat = await world.book("cat", instance)
    assert (bob["status"], bob["position"], bob["reasons"]) == ("waitlisted", 1, ["class_full"])
    assert (cat["status"], cat["position"]) == ("waitlisted", 2)
    assert (await world.balance("bob"))["available"] == 2  # nothing is spent while waiting (W10)
    roster = await world.roster(instance)
    assert [a["memberId"] for a in roster["attendees"]] == [world.members["ann"]]
    assert [(w["memberId"], w["position"]) for w in roster["waitlist"]] == [
        (world.members["bob"], 1), (world.members["cat"], 2)]
    assert (roster["booked"], roster["waitlisted"]) == (1, 2)
    mine = await world.tb.query("bookings:mine", {"businessId": world.business_id}, as_user=world.subject("cat"))
    assert [(b["status"], b.get("position")) for b in mine] == [("waitlisted", 2)]


async def test_joins_in_the_same_instant_get_distinct_stable_positions(world: World) -> None:
    instance = await world.instance(CLASS, capacity=0)
    names = [f"m{i}" for i in range(5)]
    for name in names:
        await world.member(name)
        await world.grant(name, 1, "2030-12-31")
        await world.book(name, instance)  # the clock does not move: every joinedAt is equal
    first = [(w["bookingId"], w["position"]) for w in (await world.roster(instance))["waitlist"]]
    again = [(w["bookingId"], w["position"]) for w in (await world.roster(instance))["waitlist"]]
    assert first == again and [p for _, p in first] == [1, 2, 3, 4, 5]
    assert [b for b, _ in first] == sorted(b for b, _ in first)  # ties fall back to the id (W1)


async def test_refusal_reasons_are_machine_readable(world: World) -> None:
    await world.member("ann")
    far = await world.instance(NOW + dt.timedelta(days=20))
    data = await world.refused("ann", far)
    # outside the 14-day window and no credits: both reasons at once (F9)
    assert data["code"] == "booking_refused"
    assert data["reasons"] == ["outside_booking_window", "no_entitlement"]
    assert data["opensAt"] == iso(NOW + dt.timedelta(days=6))
    assert data["creditsNeeded"] == 1 and data["creditsAvailable"] == 0


async def test_booking_window_is_half_open(world: World, btb: TestBackend) -> None:
    assert isinstance(btb.clock, ManualClock)
    await world.member("ann")
    await world.grant("ann", 2, "2030-12-31")
    instance = await world.instance(NOW + dt.timedelta(days=14))
    btb.clock.set(NOW - dt.timedelta(milliseconds=1))
    data = await world.refused("ann", instance)
    assert data["reasons"] == ["outside_booking_window"] and data["opensAt"] == iso(NOW)
    btb.clock.set(NOW)
    assert (await world.book("ann", instance))["status"] == "confirmed"


async def test_expires_before_class_and_multi_credit_classes(world: World) -> None:
    await world.member("ann")
    await world.grant("ann", 3, NOW.date().isoformat())  # valid until the end of today only
    instance = await world.instance(CLASS)
    data = await world.refused("ann", instance)
    assert data["reasons"] == ["expires_before_class"]
    assert data["expiringLots"][0]["remaining"] == 3
    await world.member("bob")
    await world.grant("bob", 1, "2030-12-31")
    two = await world.instance(CLASS + dt.timedelta(hours=3), credit_cost=2)
    data = await world.refused("bob", two)  # a 2-credit class with 1 credit left (F11)
    assert data["reasons"] == ["no_entitlement"] and (data["creditsNeeded"], data["creditsAvailable"]) == (2, 1)
    await world.grant("bob", 1, "2030-12-31")
    booked = await world.book("bob", two)
    assert (await world.booking_row(booked["bookingId"]))["credits_spent"] == 2
    assert await world.ledger_sum("bob") == await world.lots_sum("bob") == 0


async def test_class_cancelled_suspended_overlap_and_waitlist_full(world: World) -> None:
    await world.member("ann")
    await world.grant("ann", 10, "2030-12-31")
    first = await world.instance(CLASS, duration_minutes=60)
    overlapping = await world.instance(CLASS + dt.timedelta(minutes=30), duration_minutes=60)
    await world.book("ann", first)
    assert (await world.refused("ann", overlapping))["reasons"] == ["overlaps_existing_booking"]
    cancelled = await world.instance(CLASS + dt.timedelta(hours=5))
    await world.internal("testing_fixtures:patch_instance", {"instanceId": cancelled, "fields": {"status": "cancelled"}})
    assert (await world.refused("ann", cancelled))["reasons"] == ["class_cancelled"]
    await world.tb.sql("UPDATE members SET suspended_until = $1 WHERE _id = $2",
                       NOW + dt.timedelta(days=1), world.members["ann"])
    later = await world.instance(CLASS + dt.timedelta(hours=8))
    data = await world.refused("ann", later)
    assert data["reasons"] == ["account_suspended"] and data["suspendedUntil"] == iso(NOW + dt.timedelta(days=1))
    await world.settings(waitlistLimit=1)
    full = await world.instance(CLASS + dt.timedelta(hours=10), capacity=1)
    for name in ("bob", "cat", "dan"):
        await world.member(name)
        await world.grant(name, 1, "2030-12-31")
    await world.book("bob", full)
    await world.book("cat", full)
    assert (await world.refused("dan", full))["reasons"] == ["waitlist_full"]


async def test_dropin_records_the_quoted_price(world: World) -> None:
    await world.member("ann")
    instance = await world.instance(CLASS, price_cents=1800)
    data = await world.refused("ann", instance)
    assert data["reasons"] == ["no_entitlement"] and data["dropinPriceCents"] == 1800
    result = await world.book("ann", instance, payWith="dropin")
    row = await world.booking_row(result["bookingId"])
    assert (row["pay_with"], row["amount_cents"], row["credits_spent"]) == ("dropin", 1800, 0)
    assert row["quote"]["source"] == "template" and row["quote"]["amountCents"] == 1800


async def test_staff_book_for_members_customers_cannot(world: World) -> None:
    await world.member("ann")
    await world.member("bob")
    await world.grant("ann", 1, "2030-12-31")
    instance = await world.instance(CLASS)
    with pytest.raises(Forbidden):
        await world.book("bob", instance, memberId=world.members["ann"])
    result = await world.book("owner", instance, memberId=world.members["ann"])
    row = await world.booking_row(result["bookingId"])
    assert row["member_id"] == world.members["ann"] and row["source"] == "staff"
    far = await world.instance(NOW + dt.timedelta(days=30))
    await world.grant("ann", 1, "2030-12-31")
    with pytest.raises(AppError):
        await world.book("owner", far, memberId=world.members["ann"])
    override = await world.book("owner", far, memberId=world.members["ann"], overrideReason="VIP guest")
    assert (await world.booking_row(override["bookingId"]))["reason"] == "VIP guest"
