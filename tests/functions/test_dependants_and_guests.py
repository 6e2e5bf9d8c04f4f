"""Dependants (members without a login, booked by their owner, G1) and guests (an extra seat paid by the
booker, G2): each person takes a seat or a waitlist place of their own, and pays their own penalty."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, Forbidden, NotFound
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, clock_at, clocked_backend, new_world

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)


@pytest.fixture(scope="module")
async def gtb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(gtb: TestBackend) -> ManualClock:
    return clock_at(gtb, NOW)


@pytest.fixture
async def world(gtb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(gtb, lateCancelFeeCents=500)
    for name in ("ann", "bob"):
        await world.member(name)
        await world.grant(name, 5, "2030-12-31")
    return world


async def add_dependent(world: World, owner: str, name: str, **extra: Any) -> str:
    member_id: str = await world.tb.mutation(
        "members:add_dependent", {"businessId": world.business_id, "name": name, **extra}, as_user=world.subject(owner))
    world.members[name] = member_id
    return member_id


async def test_an_owner_books_cancels_and_reads_for_a_dependant(world: World) -> None:
    kid = await add_dependent(world, "ann", "Kit", birthDate="2022-05-01")
    listed = await world.tb.query("members:dependents", {"businessId": world.business_id}, as_user=world.subject("ann"))
    assert listed == [{"memberId": kid, "name": "Kit", "birthDate": "2022-05-01"}]
    await world.grant("Kit", 2, "2030-12-31")  # staff sell the child a pack of their own
    instance = await world.instance(CLASS, capacity=5)
    own = await world.book("ann", instance)
    child = await world.book("ann", instance, memberId=kid)  # the same class: a second person, a second seat
    assert own["status"] == child["status"] == "confirmed"
    assert (await world.instance_row(instance))["booked"] == 2
    row = await world.booking_row(child["bookingId"])
    assert (row["member_id"], row["source"]) == (kid, "self")
    assert await world.ledger_sum("Kit") == 1 and await world.ledger_sum("ann") == 4
    kids = await world.tb.query("bookings:mine", {"businessId": world.business_id, "memberId": kid},
                                as_user=world.subject("ann"))
    assert [b["bookingId"] for b in kids] == [child["bookingId"]]
    balance = await world.tb.query("credits:balance", {"businessId": world.business_id, "memberId": kid},
                                   as_user=world.subject("ann"))
    assert balance["available"] == 1
    # Nobody else may book, cancel or read for the child.
    with pytest.raises(Forbidden):
        await world.book("bob", await world.instance(CLASS + dt.timedelta(days=1)), memberId=kid)
    with pytest.raises(NotFound):
        await world.cancel("bob", child["bookingId"])
    with pytest.raises(NotFound):
        await world.tb.query("bookings:mine", {"businessId": world.business_id, "memberId": kid},
                             as_user=world.subject("bob"))
    assert (await world.cancel("ann", child["bookingId"]))["status"] == "cancelled"
    assert await world.ledger_sum("Kit") == 2


async def test_dependants_are_checked(world: World) -> None:
    with pytest.raises(AppError) as empty:
        await add_dependent(world, "ann", "  ")
    assert empty.value.data["field"] == "name"
    with pytest.raises(AppError) as unborn:
        await add_dependent(world, "ann", "Later", birthDate="2031-01-01")
    assert unborn.value.data["field"] == "birthDate"
    kid = await add_dependent(world, "ann", "Kit")
    row = (await world.tb.sql("SELECT role, owner_id, subject FROM members WHERE _id = $1", kid))[0]
    assert (row["role"], row["owner_id"]) == ("dependent", world.members["ann"])
    assert row["subject"].startswith("dependent:") and len(row["subject"]) > 30
    with pytest.raises(AppError) as role:
        await world.tb.mutation("members:set_role", {"memberId": kid, "role": "admin"}, as_user=world.owner)
    assert role.value.data["code"] == "dependent_has_no_login"


async def test_a_guest_takes_a_seat_of_their_own_paid_by_the_booker(world: World) -> None:
    instance = await world.instance(CLASS, capacity=3)
    result = await world.book("ann", instance, guestName="Zoe")
    assert result["status"] == "confirmed" and result["guest"]["status"] == "confirmed"
    assert (result["guest"]["guestName"], result["guest"]["payWith"]) == ("Zoe", "credits")
    assert (await world.instance_row(instance))["booked"] == 2
    assert await world.ledger_sum("ann") == 3  # two seats, two credits, both the booker's
    guest_row = await world.booking_row(result["guest"]["bookingId"])
    assert (guest_row["member_id"], guest_row["guest_name"]) == (world.members["ann"], "Zoe")
    # The same guest twice is one seat (C2 per person); another guest is another seat.
    again = await world.refused("ann", instance, guestName="zoe")
    assert again["reasons"] == ["already_booked"]
    more = await world.book("ann", instance, guestName="Yan")
    assert (more["bookingId"], more["status"], more["guest"]["status"]) == (result["bookingId"], "confirmed", "confirmed")
    # The class is now full: bob waits; the roster shows each person.
    assert (await world.book("bob", instance))["status"] == "waitlisted"
    roster = await world.roster(instance)
    assert sorted(a.get("guestName") or "" for a in roster["attendees"]) == ["", "Yan", "Zoe"]


async def test_the_guest_waits_when_only_the_booker_fits(world: World) -> None:
    instance = await world.instance(CLASS, capacity=1)
    result = await world.book("ann", instance, guestName="Zoe")
    assert (result["status"], result["guest"]["status"], result["guest"]["position"]) == ("confirmed", "waitlisted", 1)
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (1, 1)
    # The booker leaving frees a seat: the guest is promoted like anyone waiting.
    cancelled = await world.cancel("ann", result["bookingId"])
    assert cancelled["promotedBookingIds"] == [result["guest"]["bookingId"]]


async def test_waitlist_limit_counts_each_person(gtb: TestBackend, clock: ManualClock) -> None:
    world = await new_world(gtb, waitlistLimit=1)
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    instance = await world.instance(CLASS, capacity=1)
    await world.member("cat")
    await world.grant("cat", 1, "2030-12-31")
    await world.book("cat", instance)
    refused = await world.refused("ann", instance, guestName="Zoe")
    assert refused["reasons"] == ["waitlist_full"]
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (1, 0)  # all or nothing: the booker's place went too
    assert await world.tb.sql("SELECT 1 FROM bookings WHERE member_id = $1", world.members["ann"]) == []


async def test_late_cancel_penalties_count_each_person_and_fall_on_the_booker(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=4)
    result = await world.book("ann", instance, guestName="Zoe")
    clock.set(CLASS - dt.timedelta(hours=1))
    own = await world.cancel("ann", result["bookingId"])
    guest = await world.cancel("ann", result["guest"]["bookingId"])
    assert own["penalty"] == guest["penalty"] == {"kind": "late_cancel", "forfeit": "credits", "credits": 1,
                                                   "feeCents": 500}
    fees = await world.outbox("fee_charged")
    assert [f["recipient_id"] for f in fees] == [world.members["ann"]] * 2
    assert await world.ledger_sum("ann") == 3


async def test_a_membership_never_pays_for_a_guest(world: World) -> None:
    plan = await world.tb.mutation("memberships:create_plan", {
        "businessId": world.business_id, "name": "All in", "kind": "unlimited", "period": "month", "priceCents": 1},
        as_user=world.owner)
    await world.tb.mutation("memberships:assign", {
        "businessId": world.business_id, "memberId": world.members["ann"], "planId": plan, "startsOn": "2030-09-01"},
        as_user=world.owner)
    instance = await world.instance(CLASS)
    result = await world.book("ann", instance, guestName="Zoe")
    assert (result["payWith"], result["guest"]["payWith"]) == ("membership", "credits")
    # Asking for the membership pays the booker's seat; the guest's still takes credits.
    other = await world.book("ann", await world.instance(CLASS + dt.timedelta(days=1)), guestName="Zoe",
                             payWith="membership")
    assert (other["payWith"], other["guest"]["payWith"]) == ("membership", "credits")
    assert await world.ledger_sum("ann") == 3
    with pytest.raises(AppError) as blank:
        await world.book("ann", instance, guestName=" ")
    assert blank.value.data["field"] == "guestName"
