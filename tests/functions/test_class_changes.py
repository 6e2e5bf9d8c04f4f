"""Editing a class people are booked into: added seats fill from the waitlist (W2), capacity below the
bookings needs an explicit overbooking (C4), and a moved class lets its members leave free (T7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, iso, new_studio

START = at("2025-03-20T12:00:00Z")
WEEK2 = "2025-03-31"  # the second Monday of the series: 17:00Z (18:00 BST)


@pytest.fixture(scope="module")
async def ctb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(ctb: TestBackend) -> Studio:
    assert isinstance(ctb.clock, ManualClock)
    ctb.clock.set(START)
    studio = await new_studio(ctb, "Europe/London")
    await studio.venue("soho")
    return studio


async def series(studio: Studio, capacity: int = 1) -> tuple[str, dict[str, dict[str, Any]]]:
    template = await studio.template("soho", "2025-03-24", "18:00", "FREQ=WEEKLY;BYDAY=MO;COUNT=4", capacity=capacity)
    return template, {r["local_date"]: r for r in await studio.rows(template)}


async def book(studio: Studio, name: str, instance: str) -> dict[str, Any]:
    """A member with credits booked by the front desk (any status: confirmed or waitlisted)."""
    studio.clock.advance(seconds=1)  # distinct join times: the waitlist order is the booking order
    if name not in studio.members:
        await studio.member(name)
        await studio.mutation("credits:grant", {"businessId": studio.business_id, "memberId": studio.members[name],
                                                "credits": 5, "expiresOn": "2099-12-31"})
    result: dict[str, Any] = await studio.mutation("bookings:book", {
        "instanceId": instance, "memberId": studio.members[name], "overrideReason": "front desk"})
    return result


async def statuses(studio: Studio, instance: str) -> dict[str, str]:
    rows = await studio.tb.sql("SELECT member_id, status FROM bookings WHERE instance_id = $1", instance)
    names = {v: k for k, v in studio.members.items()}
    return {names[r["member_id"]]: r["status"] for r in rows}


# -- W2: seats added are filled from the waitlist in the same transaction ------------------------------------


async def test_raising_one_class_capacity_promotes_in_order(studio: Studio) -> None:
    _, rows = await series(studio)
    instance = rows[WEEK2]["_id"]
    ids = {name: (await book(studio, name, instance))["bookingId"] for name in ("ann", "bob", "cat", "dan")}
    result = await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 3})
    assert result == {"promotedBookingIds": [ids["bob"], ids["cat"]]}
    assert await statuses(studio, instance) == {"ann": "confirmed", "bob": "confirmed", "cat": "confirmed",
                                                "dan": "waitlisted"}
    row = await studio.row("class_instances", instance)
    assert (row["capacity"], row["booked"], row["waitlisted"]) == (3, 3, 1)
    promoted = await studio.outbox("waitlist_promoted")
    assert sorted(o["payload"]["bookingId"] for o in promoted) == sorted([ids["bob"], ids["cat"]])
    assert await studio.credits("bob") == 4  # paid at promotion


async def test_raising_a_series_capacity_promotes_in_every_class(studio: Studio) -> None:
    template, rows = await series(studio)
    first, second = rows["2025-03-31"]["_id"], rows["2025-04-07"]["_id"]
    for instance in (first, second):
        for name in ("ann", "bob", "cat"):
            await book(studio, name, instance)
    result = await studio.mutation("classes:update_template", {"templateId": template, "capacity": 2})
    assert len(result["promotedBookingIds"]) == 2
    for instance in (first, second):
        assert await statuses(studio, instance) == {"ann": "confirmed", "bob": "confirmed", "cat": "waitlisted"}
        row = await studio.row("class_instances", instance)
        assert (row["booked"], row["waitlisted"]) == (2, 1)


async def test_seats_added_after_the_promotion_cutoff_are_offered_not_given(studio: Studio) -> None:
    _, rows = await series(studio)
    instance = rows[WEEK2]["_id"]
    for name in ("ann", "bob"):
        await book(studio, name, instance)
    studio.clock.set(rows[WEEK2]["starts_at"] - (at("2025-01-01T13:00:00Z") - at("2025-01-01T00:00:00Z")))
    result = await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 2})
    assert result == {"promotedBookingIds": []}  # 13 h before: inside the 12 h + 2 h cutoff (W3, W4)
    assert await statuses(studio, instance) == {"ann": "confirmed", "bob": "offered"}  # held for bob (W5)
    assert [o["recipient_id"] for o in await studio.outbox("waitlist_offered")] == [studio.members["bob"]]


# -- C4: capacity below the seats taken needs an explicit, recorded overbooking -----------------------------


async def test_lowering_capacity_below_bookings_needs_allow_overbook_with_a_reason(studio: Studio) -> None:
    _, rows = await series(studio, capacity=3)
    instance = rows[WEEK2]["_id"]
    ids = {name: (await book(studio, name, instance))["bookingId"] for name in ("ann", "bob", "cat", "dan")}
    with pytest.raises(AppError) as refused:
        await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 2})
    assert refused.value.data == {"code": "capacity_below_booked", "instanceIds": [instance]}
    with pytest.raises(AppError) as no_reason:
        await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 2, "allowOverbook": True})
    assert no_reason.value.data["field"] == "overbookReason"
    with pytest.raises(AppError) as no_flag:
        await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 2,
                                                          "overbookReason": "room change"})
    assert no_flag.value.data["field"] == "allowOverbook"
    assert (await studio.row("class_instances", instance))["capacity"] == 3
    await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 2, "allowOverbook": True,
                                                      "overbookReason": "smaller room"})
    row = await studio.row("class_instances", instance)
    assert (row["capacity"], row["booked"], row["overbook_reason"]) == (2, 3, "smaller room")
    audit = await studio.tb.sql("SELECT before, after FROM audit_log WHERE document_id = $1 AND operation = 'update' "
                                "AND after ? 'overbookReason'", instance)
    assert [(a["before"]["capacity"], a["after"]["capacity"], a["after"]["overbookReason"]) for a in audit] == [
        (3, 2, "smaller room")]
    cancelled = await studio.mutation("bookings:cancel", {"bookingId": ids["ann"]})
    assert cancelled["promotedBookingIds"] == []  # 2 seated on 2 seats: nobody moves up yet
    await studio.mutation("bookings:cancel", {"bookingId": ids["bob"]})
    assert await statuses(studio, instance) == {"ann": "cancelled", "bob": "cancelled", "cat": "confirmed",
                                                "dan": "confirmed"}
    await studio.mutation("classes:update_instance", {"instanceId": instance, "capacity": 3})
    assert (await studio.row("class_instances", instance))["overbook_reason"] is None  # no longer overbooked


async def test_a_series_edit_may_overbook_with_a_reason(studio: Studio) -> None:
    template, rows = await series(studio, capacity=3)
    instance = rows[WEEK2]["_id"]
    for name in ("ann", "bob", "cat"):
        await book(studio, name, instance)
    with pytest.raises(AppError) as refused:
        await studio.mutation("classes:update_template", {"templateId": template, "capacity": 2})
    assert refused.value.data == {"code": "capacity_below_booked", "instanceIds": [instance]}
    await studio.mutation("classes:update_template", {"templateId": template, "capacity": 2, "allowOverbook": True,
                                                      "overbookReason": "instructor asked"})
    after = {r["local_date"]: r for r in await studio.rows(template)}
    assert (after[WEEK2]["capacity"], after[WEEK2]["overbook_reason"]) == (2, "instructor asked")
    assert {(r["capacity"], r["overbook_reason"]) for d, r in after.items() if d != WEEK2} == {(2, None)}
    await studio.mutation("classes:update_template", {"templateId": template, "name": "Renamed"})  # still fine


# -- T7: a moved class lets its members leave free ----------------------------------------------------------


async def test_moving_a_booked_class_gives_free_cancel_and_notices(studio: Studio) -> None:
    _, rows = await series(studio)
    instance = rows[WEEK2]["_id"]
    ann = (await book(studio, "ann", instance))["bookingId"]
    bob = (await book(studio, "bob", instance))["bookingId"]  # waiting
    await studio.mutation("classes:update_instance", {"instanceId": instance, "startTime": "07:00"})
    for booking in (ann, bob):
        row = await studio.row("bookings", booking)
        assert iso(row["starts_at"]) == "2025-03-31T06:00:00Z" and row["policy"]["freeCancel"] is True
    notices = await studio.outbox("class_changed")  # written in one transaction: no order among them
    assert sorted((n["recipient_id"], n["payload"]["bookingId"], n["payload"]["freeCancel"]) for n in notices) == sorted([
        (studio.members["ann"], ann, True), (studio.members["bob"], bob, True)])
    assert notices[0]["payload"]["startsAt"] == "2025-03-31T06:00:00Z"
    studio.clock.set(at("2025-03-31T05:30:00Z"))  # 30 min before the new start: late, but free (T7)
    result = await studio.mutation("bookings:cancel", {"bookingId": ann}, "ann")
    assert (result["late"], result["penalty"], result["refund"]["credits"]) == (True, None, 1)
    assert await studio.credits("ann") == 5


async def test_a_series_move_marks_bookings_and_promoted_entries_keep_it(studio: Studio) -> None:
    template, rows = await series(studio)
    instance = rows[WEEK2]["_id"]
    ann = (await book(studio, "ann", instance))["bookingId"]
    bob = (await book(studio, "bob", instance))["bookingId"]
    await studio.mutation("classes:update_template", {"templateId": template, "fromDate": WEEK2, "startTime": "19:30"})
    assert (await studio.row("bookings", ann))["policy"]["freeCancel"] is True
    await studio.mutation("bookings:cancel", {"bookingId": ann})  # bob is promoted into the moved class
    promoted = await studio.row("bookings", bob)
    assert (promoted["status"], promoted["source"]) == ("confirmed", "waitlist")
    assert promoted["policy"]["freeCancel"] is True and iso(promoted["starts_at"]) == "2025-03-31T18:30:00Z"


async def test_edits_that_do_not_move_a_class_change_no_policy(studio: Studio) -> None:
    template, rows = await series(studio)
    instance = rows[WEEK2]["_id"]
    ann = (await book(studio, "ann", instance))["bookingId"]
    await studio.mutation("classes:update_instance", {"instanceId": instance, "name": "Slow flow"})
    await studio.mutation("classes:update_template", {"templateId": template, "name": "Flow"})
    assert "freeCancel" not in (await studio.row("bookings", ann))["policy"]
    assert await studio.outbox("class_changed") == []
