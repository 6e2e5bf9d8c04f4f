"""Five rules that were once broken: a window that can never open, lifting a closure, the no-show grace,
series without a single class, and credit-only classes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError
from backend.testing import ManualClock, TestBackend
from tests.support.booking import World, new_world
from tests.support.studio import Studio, at, new_studio

START = at("2025-12-01T12:00:00Z")


@pytest.fixture(scope="module")
async def ftb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
def clock(ftb: TestBackend) -> ManualClock:
    assert isinstance(ftb.clock, ManualClock)
    ftb.clock.set(START)
    return ftb.clock


@pytest.fixture
async def studio(ftb: TestBackend, clock: ManualClock) -> Studio:
    return await new_studio(ftb, "Europe/London")


@pytest.fixture
async def world(ftb: TestBackend, clock: ManualClock) -> World:
    return await new_world(ftb)


# -- B8: the booking window must be able to open --------------------------------------------------------


async def test_a_window_that_closes_before_it_opens_is_refused(studio: Studio) -> None:
    with pytest.raises(AppError) as error:
        await studio.settings(bookingOpensDaysBefore=1, bookingClosesMinutesBefore=2880)
    data = error.value.data
    assert (data["code"], data["field"]) == ("invalid_argument", "bookingClosesMinutesBefore")
    assert "closes before it opens" in error.value.message
    assert data["max"] == 1 * 1440 - 60 - 1
    # Nothing was stored: the defaults still apply.
    settings = (await studio.query("businesses:get", {"businessId": studio.business_id}))["settings"]
    assert (settings["bookingOpensDaysBefore"], settings["bookingClosesMinutesBefore"]) == (14, 0)
    # Shrinking the opening below a stored close is refused the same way, naming the field that moved.
    await studio.settings(bookingClosesMinutesBefore=600)
    with pytest.raises(AppError) as shrink:
        await studio.settings(bookingOpensDaysBefore=0)
    assert shrink.value.data["field"] == "bookingOpensDaysBefore"
    # A window open from the day before until 12 h before is fine; so is opening at the start with a
    # negative close (B5).
    await studio.settings(bookingOpensDaysBefore=1, bookingClosesMinutesBefore=720)
    await studio.settings(bookingOpensDaysBefore=0, bookingClosesMinutesBefore=-15)


# -- T6: lifting a closure brings back what it alone cancelled ------------------------------------------


async def close(studio: Studio, first: str, last: str, reason: str) -> dict[str, Any]:
    result: dict[str, Any] = await studio.mutation(
        "classes:add_closure", {"businessId": studio.business_id, "fromDate": first, "toDate": last, "reason": reason})
    return result


def on(rows: list[dict[str, Any]], day: str) -> dict[str, Any]:
    [row] = [r for r in rows if r["local_date"] == day]
    return row


async def test_lifting_a_closure_restores_the_classes_it_alone_cancelled(studio: Studio, clock: ManualClock) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-12-20", "09:00", "FREQ=DAILY;COUNT=10")
    rows = await studio.rows(template)
    booked = on(rows, "2025-12-24")["_id"]
    await studio.book("bea", booked)
    own_reason = on(rows, "2025-12-26")["_id"]
    await studio.mutation("classes:cancel_instance", {"instanceId": own_reason, "reason": "teacher ill"})
    closure = await close(studio, "2025-12-21", "2025-12-27", "Christmas")
    other = await close(studio, "2025-12-23", "2025-12-23", "Boiler")
    assert closure["cancelled"] == 6  # 21 to 27 but the 26th, already cancelled
    clock.set(at("2025-12-21T10:00:00Z"))  # the 21st has started
    brought_back = await studio.mutation("classes:remove_closure", {"closureId": closure["closureId"]})
    rows = await studio.rows(template)
    status = {r["local_date"]: (r["status"], r["cancel_reason"]) for r in rows}
    assert status["2025-12-22"] == status["2025-12-25"] == status["2025-12-27"] == ("scheduled", None)
    assert status["2025-12-21"] == ("cancelled", "closed: Christmas")  # started before the closure was lifted
    assert status["2025-12-23"][0] == "cancelled"  # still closed by the other closure
    assert status["2025-12-24"][0] == "cancelled"  # had a booking: restoring it is explicit (T6)
    assert status["2025-12-26"] == ("cancelled", "teacher ill")  # cancelled for another reason
    assert brought_back == 3
    # Lifting the other closure then brings back the 23rd as well.
    assert await studio.mutation("classes:remove_closure", {"closureId": other["closureId"]}) == 1
    assert on(await studio.rows(template), "2025-12-23")["status"] == "scheduled"


async def test_a_class_moved_out_of_the_closure_stays_as_it_is(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-12-20", "09:00", "FREQ=DAILY;COUNT=3")
    moved = on(await studio.rows(template), "2025-12-21")["_id"]
    closure = await close(studio, "2025-12-21", "2025-12-21", "Refit")
    # Simulate a class moved since (a template edit re-times cancelled classes too): it is no longer on the
    # closed date, so the closure is not what keeps it from that day.
    await studio.tb.sql("UPDATE class_instances SET local_date = '2025-12-28' WHERE _id = $1", moved)
    assert await studio.mutation("classes:remove_closure", {"closureId": closure["closureId"]}) == 0
    assert (await studio.row("class_instances", moved))["status"] == "cancelled"


# -- P1: no-shows only after the grace ------------------------------------------------------------------


async def test_no_show_is_refused_inside_the_grace_with_the_time_it_opens(world: World, clock: ManualClock) -> None:
    await world.settings(noShowGraceMinutes=15)
    starts = START + dt.timedelta(days=2)
    instance = await world.instance(starts)
    await world.member("ann")
    await world.grant("ann", 2, "2030-12-31")
    booking = (await world.book("ann", instance))["bookingId"]
    clock.set(starts + dt.timedelta(minutes=5))
    with pytest.raises(AppError) as early:
        await world.tb.mutation("bookings:mark_no_show", {"bookingId": booking}, as_user=world.owner)
    assert early.value.data["code"] == "no_show_too_early"
    assert early.value.data["possibleAt"] == (starts + dt.timedelta(minutes=15)).isoformat().replace("+00:00", "Z")
    clock.set(starts + dt.timedelta(minutes=15))
    result = await world.tb.mutation("bookings:mark_no_show", {"bookingId": booking}, as_user=world.owner)
    assert result["status"] == "no_show"


# -- T14: a series must produce at least one class ------------------------------------------------------


@pytest.mark.parametrize(
    ("start_date", "start_time", "rrule", "said"),
    [
        ("2026-01-10", "09:00", "FREQ=WEEKLY;UNTIL=20260105", "UNTIL"),
        # 01:30 does not exist in London that day, and the rule allows no other day.
        ("2026-03-29", "01:30", "FREQ=DAILY;UNTIL=20260329", "no class"),
    ],
)
async def test_a_series_without_any_class_is_refused(
    studio: Studio, start_date: str, start_time: str, rrule: str, said: str
) -> None:
    await studio.venue("soho")
    with pytest.raises(AppError) as error:
        await studio.template("soho", start_date, start_time, rrule)
    assert (error.value.data["code"], error.value.data["field"]) == ("invalid_argument", "rrule")
    assert said in error.value.message
    assert await studio.tb.sql("SELECT 1 FROM class_templates WHERE business_id = $1", studio.business_id) == []


async def test_a_series_edit_that_leaves_no_class_is_refused(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2026-01-10", "09:00", "FREQ=WEEKLY;COUNT=3")
    for from_date in (None, "2026-01-17"):  # the whole series, and "this and following" (a split)
        args: dict[str, Any] = {"templateId": template, "rrule": "FREQ=WEEKLY;UNTIL=20260105"}
        if from_date is not None:
            args["fromDate"] = from_date
        with pytest.raises(AppError) as error:
            await studio.mutation("classes:update_template", args)
        assert (error.value.data["field"], "UNTIL" in error.value.message) == ("rrule", True)
    assert len(await studio.rows(template)) == 3


# -- PR6: credit-only classes -----------------------------------------------------------------------------


async def test_credit_only_class_is_sold_for_credits_and_never_as_a_drop_in(studio: Studio) -> None:
    await studio.venue("soho")
    await studio.settings(defaultPriceCents=1500)
    template = await studio.template("soho", "2025-12-03", "18:00", "FREQ=WEEKLY;COUNT=2", creditCost=2)
    [first, _] = await studio.rows(template)
    quote = await studio.query("pricing:quote", {"instanceId": first["_id"]})
    assert (quote["creditCost"], quote["creditSource"], quote["dropin"]) == (2, "template", False)
    [shown, _] = await studio.schedule("2025-12-03T00:00:00Z", "2025-12-11T00:00:00Z")
    assert (shown["creditCost"], shown["dropin"]) == (2, False)
    member = await studio.member("dee")
    with pytest.raises(AppError) as dropin:
        await studio.mutation("bookings:book", {"instanceId": first["_id"], "payWith": "dropin"}, as_user="dee")
    assert dropin.value.data["reasons"] == ["dropin_not_offered"]
    with pytest.raises(AppError) as broke:
        await studio.mutation("bookings:book", {"instanceId": first["_id"]}, as_user="dee")
    assert broke.value.data["reasons"] == ["no_entitlement"] and "dropinPriceCents" not in broke.value.data
    await studio.mutation("credits:grant", {"businessId": studio.business_id, "memberId": member, "credits": 2,
                                            "expiresOn": "2099-12-31"})
    booked = await studio.mutation("bookings:book", {"instanceId": first["_id"]}, as_user="dee")
    assert booked["status"] == "confirmed" and await studio.credits("dee") == 0
    # A priced class keeps offering both.
    priced = await studio.template("soho", "2025-12-04", "18:00", "FREQ=WEEKLY;COUNT=1", priceCents=900, creditCost=1)
    [row] = await studio.rows(priced)
    assert (await studio.query("pricing:quote", {"instanceId": row["_id"]}))["dropin"] is True
