"""Reports: attendance per class and revenue over a span, read through bounded index ranges, and live."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, clock_at, clocked_backend, iso, new_world
from tests.support.sync_client import RawClient

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)
SPAN = {"from": iso(NOW), "to": iso(NOW + dt.timedelta(days=7))}


@pytest.fixture(scope="module")
async def rtb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(rtb: TestBackend) -> ManualClock:
    return clock_at(rtb, NOW)


@pytest.fixture
async def world(rtb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(rtb, lateCancelFeeCents=400, noShowFeeCents=900, offerMinutes=0)
    await world.member("ida", role="instructor")
    for name in ("ann", "bob", "cat", "dan", "eve"):
        await world.member(name)
        await world.grant(name, 3, "2030-12-31")
    return world


async def report(world: World, path: str, as_user: str = "owner", **args: Any) -> dict[str, Any]:
    result: dict[str, Any] = await world.tb.query(path, {"businessId": world.business_id, **SPAN, **args},
                                                  as_user=world.subject(as_user))
    return result


async def test_attendance_per_class_with_totals(world: World, clock: ManualClock) -> None:
    main = await world.instance(CLASS, capacity=3, name="Flow")
    other = await world.instance(CLASS + dt.timedelta(days=1), capacity=5, name="Burn")
    outside = await world.instance(NOW + dt.timedelta(days=10), capacity=5)
    ids = {n: (await world.book(n, main))["bookingId"] for n in ("ann", "bob", "cat", "dan")}  # dan waits
    await world.book("eve", other)
    await world.book("eve", outside)
    clock.set(CLASS - dt.timedelta(hours=1))
    await world.cancel("cat", ids["cat"])  # late; the seat opens to dan (open booking after the cutoff)
    clock.set(CLASS + dt.timedelta(minutes=5))
    await world.tb.mutation("bookings:check_in", {"bookingId": ids["ann"]}, as_user=world.owner)
    clock.set(CLASS + dt.timedelta(minutes=20))
    await world.tb.mutation("bookings:mark_no_show", {"bookingId": ids["bob"]}, as_user=world.owner)
    result = await report(world, "reports:attendance", as_user="ida")
    rows = {c["instanceId"]: c for c in result["classes"]}
    assert set(rows) == {main, other}
    flow = rows[main]
    assert (flow["name"], flow["booked"], flow["attended"], flow["noShows"], flow["lateCancels"],
            flow["waitlistLength"]) == ("Flow", 2, 1, 1, 1, 1)
    assert (rows[other]["booked"], rows[other]["attended"]) == (1, 0)
    assert (result["booked"], result["attended"], result["noShows"], result["lateCancels"]) == (3, 1, 1, 1)
    venue = (await world.instance_row(other))["venue_id"]
    only = await report(world, "reports:attendance", venueId=venue)
    assert [c["instanceId"] for c in only["classes"]] == [other]


async def test_revenue_counts_what_was_kept_and_what_was_refunded(world: World, clock: ManualClock) -> None:
    priced = await world.instance(CLASS, capacity=5, price_cents=1500)
    await world.book("ann", priced, payWith="dropin")
    early = (await world.book("bob", priced, payWith="dropin"))["bookingId"]
    late = (await world.book("cat", priced))["bookingId"]  # credits
    await world.book("dan", priced)  # credits, attends
    absent = (await world.book("eve", priced))["bookingId"]
    await world.cancel("bob", early)  # early: the 1500 is refunded
    clock.set(CLASS - dt.timedelta(hours=1))
    await world.cancel("cat", late)  # late: the credit is forfeited, plus a 400 fee
    clock.set(CLASS + dt.timedelta(hours=2))
    await world.tb.mutation("bookings:mark_no_show", {"bookingId": absent}, as_user=world.owner)  # credit + 900
    result = await report(world, "reports:revenue")
    assert result == {
        "currency": "USD", "dropinCents": 1500, "creditsSpent": 3, "membershipUses": 0, "penaltyFeesCents": 1300,
        "refundedCents": 1500, "refundedCredits": 0, "bookings": 5,
    }


async def test_reports_are_staff_only_and_bounded(world: World) -> None:
    with pytest.raises(Forbidden):
        await report(world, "reports:revenue", as_user="ida")
    with pytest.raises(Forbidden):
        await report(world, "reports:attendance", as_user="ann")
    with pytest.raises(AppError) as wide:
        await world.tb.query("reports:attendance", {"businessId": world.business_id, "from": iso(NOW),
                                                    "to": iso(NOW + dt.timedelta(days=93))}, as_user=world.owner)
    assert (wide.value.data["field"], wide.value.data["maxDays"]) == ("to", 92)


@pytest.mark.parametrize("path", ["reports:attendance", "reports:revenue"])
async def test_reports_read_bounded_index_ranges_only(world: World, path: str) -> None:
    """Every range read over classes or bookings is bounded by the span at both ends: history outside it
    is never scanned, and writes outside it never re-run a subscribed report."""
    instance = await world.instance(CLASS, capacity=3)
    await world.book("bob", instance)
    outcome = await world.tb.runner.query(path, {"businessId": world.business_id, **SPAN},
                                          world.tb.identity(world.owner))
    assert outcome.error is None and outcome.read_set is not None
    ranges = [i for i in outcome.read_set.intervals if i.table in ("bookings", "class_instances") and i.index != "by_id"]
    assert ranges, "the report read no range"
    assert all(i.lo is not None and i.hi is not None for i in ranges), ranges
    assert {i.index for i in ranges} <= {"by_status_start", "by_start", "by_venue_start"}


async def test_attendance_is_live(tb: TestBackend) -> None:
    world = await new_world(tb)
    start = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    instance = await world.instance(start, capacity=1)
    for name in ("ann", "bob"):
        await world.member(name)
        await world.grant(name, 2, (dt.date.today() + dt.timedelta(days=30)).isoformat())
    span = {"businessId": world.business_id, "from": iso(start - dt.timedelta(days=1)),
            "to": iso(start + dt.timedelta(days=1))}
    async with RawClient.open(tb.port) as staff:
        await staff.authenticate(tb.token(world.owner))
        (attendance, revenue) = await staff.subscribe(("reports:attendance", span), ("reports:revenue", span))
        assert staff.results[attendance]["classes"][0]["booked"] == 0
        await world.book("ann", instance)
        await world.book("bob", instance)
        await staff.until(lambda: [(c["booked"], c["waitlistLength"]) for c in staff.results[attendance]["classes"]]
                          == [(1, 1)])
        await staff.until(lambda: staff.results[revenue]["creditsSpent"] == 1)
