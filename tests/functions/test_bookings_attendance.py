"""Attendance: check-in, no-show marks by staff and by the after-class job, penalties and strikes (P1-P9)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, new_world

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=2)


@pytest.fixture(scope="module")
async def atb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False) as harness:
        yield harness


@pytest.fixture
def clock(atb: TestBackend) -> ManualClock:
    assert isinstance(atb.clock, ManualClock)
    atb.clock.set(NOW)
    return atb.clock


@pytest.fixture
async def world(atb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(atb)
    await world.member("ida", role="instructor")
    return world


async def booked(world: World, instance: str, name: str, **args: Any) -> str:
    await world.member(name)
    await world.grant(name, 3, "2030-12-31")
    booking_id: str = (await world.book(name, instance, **args))["bookingId"]
    return booking_id


async def staff(world: World, path: str, booking_id: str, who: str = "ida") -> dict[str, Any]:
    result: dict[str, Any] = await world.tb.mutation(path, {"bookingId": booking_id}, as_user=world.subject(who))
    return result


async def run_job(world: World, *, everywhere: bool = False) -> dict[str, int]:
    args = {} if everywhere else {"businessId": world.business_id}
    result: dict[str, int] = await world.internal("bookings:mark_no_shows_due", args)
    return result


async def test_instructor_checks_in_customers_cannot(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    booking = await booked(world, instance, "ann")
    with pytest.raises(Forbidden):
        await staff(world, "bookings:check_in", booking, who="ann")
    with pytest.raises(AppError) as early:
        await staff(world, "bookings:check_in", booking)
    assert early.value.data["code"] == "check_in_not_open"
    clock.set(CLASS - dt.timedelta(minutes=10))
    result = await staff(world, "bookings:check_in", booking)
    assert result["status"] == "checked_in"
    roster = await world.roster(instance)
    assert [a["status"] for a in roster["attendees"]] == ["checked_in"]


async def test_job_marks_no_shows_once_and_never_the_checked_in(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, durationMinutes=60)
    present = await booked(world, instance, "ann")
    absent = await booked(world, instance, "bob")
    clock.set(CLASS + dt.timedelta(minutes=5))
    await staff(world, "bookings:check_in", present)
    clock.set(CLASS + dt.timedelta(minutes=30))  # past the grace, class not over: the job waits for the end
    await run_job(world)
    assert (await world.booking_row(absent))["status"] == "confirmed"
    clock.set(CLASS + dt.timedelta(minutes=61))
    first = await run_job(world, everywhere=True)  # the cron's form: one job per business
    assert first["scheduled"] >= 1 and first["marked"] == 0
    await world.tb.backend.scheduler.run_due()
    row = await world.booking_row(absent)
    assert row["status"] == "no_show"
    assert row["penalty"] == {"kind": "no_show", "forfeit": "credits", "credits": 1}
    assert (await world.booking_row(present))["status"] == "checked_in"
    await run_job(world)  # P9: a second run charges nothing twice
    assert len(await world.outbox("no_show_recorded")) == 1
    assert await world.ledger_sum("bob") == await world.lots_sum("bob") == 2


async def test_check_in_after_a_no_show_mark_removes_it_and_its_fee(world: World, clock: ManualClock) -> None:
    await world.settings(noShowFeeCents=500)
    instance = await world.instance(CLASS)
    booking = await booked(world, instance, "ann")
    clock.set(CLASS + dt.timedelta(hours=2))
    await run_job(world)
    row = await world.booking_row(booking)
    assert row["status"] == "no_show" and row["penalty"]["feeCents"] == 500
    assert len(await world.outbox("fee_charged")) == 1
    await staff(world, "bookings:check_in", booking)
    row = await world.booking_row(booking)
    assert (row["status"], row["penalty"]) == ("checked_in", None)
    assert len(await world.outbox("fee_reversed")) == 1
    audited = await world.tb.sql("SELECT operation FROM audit_log WHERE document_id = $1", booking)
    assert [r["operation"] for r in audited].count("update") == 2
    clock.set(CLASS + dt.timedelta(hours=60))  # past the 48 h edit window
    with pytest.raises(AppError) as locked:
        await staff(world, "bookings:mark_no_show", booking)
    assert locked.value.data["code"] == "attendance_locked"


async def test_staff_no_show_mark_needs_the_class_to_have_started(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    booking = await booked(world, instance, "ann")
    with pytest.raises(AppError) as early:
        await staff(world, "bookings:mark_no_show", booking)
    assert early.value.data["code"] == "no_show_too_early"
    clock.set(CLASS + dt.timedelta(minutes=20))
    assert (await staff(world, "bookings:mark_no_show", booking))["status"] == "no_show"


@pytest.mark.parametrize(
    ("pay_with", "kind", "expected"),
    [
        ("credits", "late_cancel", {"kind": "late_cancel", "forfeit": "credits", "credits": 1, "feeCents": 300}),
        ("credits", "no_show", {"kind": "no_show", "forfeit": "credits", "credits": 1, "feeCents": 800}),
        ("dropin", "late_cancel", {"kind": "late_cancel", "forfeit": "payment", "amountCents": 1500, "feeCents": 300}),
        ("dropin", "no_show", {"kind": "no_show", "forfeit": "payment", "amountCents": 1500, "feeCents": 800}),
    ],
)
async def test_penalty_matrix(
    world: World, clock: ManualClock, pay_with: str, kind: str, expected: dict[str, Any]
) -> None:
    await world.settings(lateCancelFeeCents=300, noShowFeeCents=800)
    instance = await world.instance(CLASS, priceCents=1500)
    booking = await booked(world, instance, "ann", payWith=pay_with)
    if kind == "late_cancel":
        clock.set(CLASS - dt.timedelta(hours=1))
        penalty = (await world.cancel("ann", booking))["penalty"]
    else:
        clock.set(CLASS + dt.timedelta(hours=2))
        await run_job(world)
        penalty = (await world.booking_row(booking))["penalty"]
    assert penalty == expected


async def test_strikes_suspend_booking(world: World, clock: ManualClock) -> None:
    await world.settings(strikeLimit=2, strikeWindowDays=30, suspensionDays=7)
    first = await world.instance(CLASS)
    second = await world.instance(CLASS + dt.timedelta(hours=2))
    await booked(world, first, "ann")
    await world.book("ann", second)
    clock.set(CLASS + dt.timedelta(hours=4))
    await run_job(world)  # two no-shows in the window (P5)
    rows = await world.tb.sql("SELECT suspended_until FROM members WHERE _id = $1", world.members["ann"])
    assert rows[0]["suspended_until"] == clock.now() + dt.timedelta(days=7)
    later = await world.instance(clock.now() + dt.timedelta(days=1))
    data = await world.refused("ann", later)
    assert data["reasons"] == ["account_suspended"]
    assert len(await world.outbox("account_suspended")) == 1


async def test_waitlist_lapses_when_the_class_starts(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    await booked(world, instance, "ann")
    waiting = await booked(world, instance, "bob")
    clock.set(CLASS)
    result = await run_job(world)
    assert result == {"marked": 0, "lapsed": 1}  # the class has only started: no no-show yet
    row = await world.booking_row(waiting)
    assert (row["status"], row["reason"], row["active_key"]) == ("withdrawn", "lapsed_at_start", None)
    assert (await world.instance_row(instance))["waitlisted"] == 0
    assert await world.ledger_sum("bob") == await world.lots_sum("bob") == 3  # nothing was held (W10)
