"""Memberships: plans, periods in the business's local calendar, the limit as a structured refusal, uses
given back by in-policy cancellations, and membership before credits when ``payWith`` is left out (F12-F14)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, clock_at, clocked_backend, new_world

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)  # a Monday
MON = NOW + dt.timedelta(days=7)  # Monday 9 September, 09:00 UTC


@pytest.fixture(scope="module")
async def mtb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(mtb: TestBackend) -> ManualClock:
    return clock_at(mtb, NOW)


@pytest.fixture
async def world(mtb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(mtb)
    await world.member("ann")
    return world


async def plan(world: World, kind: str = "limited", period: str = "week", **extra: Any) -> str:
    args = {"businessId": world.business_id, "name": f"{kind} {period}", "kind": kind, "period": period,
            "priceCents": 9900, **extra}
    if kind == "limited":
        args.setdefault("classesPerPeriod", 2)
    plan_id: str = await world.tb.mutation("memberships:create_plan", args, as_user=world.owner)
    return plan_id


async def assign(world: World, name: str, plan_id: str, starts_on: str = "2030-09-01", **extra: Any) -> str:
    membership_id: str = await world.tb.mutation("memberships:assign", {
        "businessId": world.business_id, "memberId": world.members[name], "planId": plan_id, "startsOn": starts_on,
        **extra}, as_user=world.owner)
    return membership_id


async def mine(world: World, name: str, as_user: str | None = None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await world.tb.query(
        "memberships:for_member", {"businessId": world.business_id, "memberId": world.members[name]},
        as_user=world.subject(as_user or name))
    return result


async def test_limited_plan_counts_uses_per_week_and_refuses_the_third(world: World) -> None:
    membership = await assign(world, "ann", await plan(world))
    classes = [await world.instance(MON + dt.timedelta(days=d)) for d in (0, 2, 4)]
    for instance in classes[:2]:
        booked = await world.book("ann", instance, payWith="membership")
        assert (booked["status"], booked["payWith"], booked["membershipId"]) == ("confirmed", "membership", membership)
    refused = await world.refused("ann", classes[2], payWith="membership")
    assert refused["reasons"] == ["membership_limit_reached"]
    assert (refused["periodEndsOn"], refused["membershipId"], refused["used"]) == ("2030-09-15", membership, 2)
    # The next week has its own uses; the week the class is in counts, not the week it is booked in (F5).
    next_week = await world.instance(MON + dt.timedelta(days=7))
    assert (await world.book("ann", next_week, payWith="membership"))["status"] == "confirmed"
    rows = await world.tb.sql("SELECT period_start, used FROM membership_usage WHERE membership_id = $1 "
                              "ORDER BY period_start", membership)
    assert [(r["period_start"], r["used"]) for r in rows] == [("2030-09-09", 2), ("2030-09-16", 1)]


async def test_periods_follow_the_business_local_calendar(mtb: TestBackend, clock: ManualClock) -> None:
    world = await new_world(mtb, timezone="America/New_York", bookingOpensDaysBefore=30)
    await world.member("ann")
    await assign(world, "ann", await plan(world, classesPerPeriod=1))
    # Monday 02:00 UTC is still Sunday evening in New York: it belongs to the week before.
    sunday_evening = await world.instance(dt.datetime(2030, 9, 16, 2, 0, tzinfo=UTC))
    monday = await world.instance(dt.datetime(2030, 9, 16, 14, 0, tzinfo=UTC))
    assert (await world.book("ann", sunday_evening, payWith="membership"))["payWith"] == "membership"
    assert (await world.book("ann", monday, payWith="membership"))["payWith"] == "membership"
    week_before = await world.instance(dt.datetime(2030, 9, 13, 14, 0, tzinfo=UTC))
    refused = await world.refused("ann", week_before, payWith="membership")
    assert (refused["reasons"], refused["periodEndsOn"]) == (["membership_limit_reached"], "2030-09-15")


async def test_for_member_shows_use_in_the_current_period(world: World, clock: ManualClock) -> None:
    limited = await assign(world, "ann", await plan(world, period="month", classesPerPeriod=4))
    this_week = await world.instance(NOW + dt.timedelta(days=2))
    await world.book("ann", this_week, payWith="membership")
    [view] = await mine(world, "ann")
    assert (view["membershipId"], view["used"], view["remaining"], view["classesPerPeriod"]) == (limited, 1, 3, 4)
    assert (view["periodStartsOn"], view["periodEndsOn"]) == ("2030-09-01", "2030-09-30")
    unlimited = await assign(world, "ann", await plan(world, kind="unlimited"), startsOn="2030-09-02",
                             endsOn="2030-09-30")
    views = {v["membershipId"]: v for v in await mine(world, "ann", as_user="owner")}
    assert "remaining" not in views[unlimited] and views[unlimited]["kind"] == "unlimited"
    clock.set(dt.datetime(2030, 10, 1, 9, 0, tzinfo=UTC))  # October: the unlimited one has ended
    assert [v["membershipId"] for v in await mine(world, "ann")] == [limited]
    # Another customer may not read them.
    await world.member("bob")
    with pytest.raises(Forbidden):
        await mine(world, "ann", as_user="bob")


async def test_in_policy_cancel_gives_the_use_back_and_a_late_one_does_not(world: World, clock: ManualClock) -> None:
    await assign(world, "ann", await plan(world, classesPerPeriod=2))
    early = await world.book("ann", await world.instance(MON), payWith="membership")
    late = await world.book("ann", await world.instance(MON + dt.timedelta(days=1)), payWith="membership")
    cancelled = await world.cancel("ann", early["bookingId"])
    assert (cancelled["late"], cancelled["refund"]) == (False, {"membershipUses": 1, "membershipId": early["membershipId"]})
    rows = await world.tb.sql("SELECT used FROM membership_usage WHERE business_id = $1", world.business_id)
    assert [r["used"] for r in rows] == [1]
    clock.set(MON + dt.timedelta(days=1, hours=-1))  # an hour before the class: late (12 h window)
    cancelled = await world.cancel("ann", late["bookingId"])
    assert cancelled["late"] is True
    assert cancelled["penalty"] == {"kind": "late_cancel", "forfeit": "membership_use",
                                    "membershipId": late["membershipId"]}
    rows = await world.tb.sql("SELECT used FROM membership_usage WHERE business_id = $1", world.business_id)
    assert [r["used"] for r in rows] == [1]


async def test_studio_cancel_gives_the_use_back(world: World) -> None:
    await assign(world, "ann", await plan(world, classesPerPeriod=1))
    instance = await world.instance(MON)
    await world.book("ann", instance, payWith="membership")
    await world.tb.mutation("classes:cancel_instance", {"instanceId": instance, "reason": "storm"}, as_user=world.owner)
    rows = await world.tb.sql("SELECT used FROM membership_usage WHERE business_id = $1", world.business_id)
    assert [r["used"] for r in rows] == [0]
    assert (await world.book("ann", await world.instance(MON + dt.timedelta(days=1)), payWith="membership"))[
        "payWith"] == "membership"


async def test_without_pay_with_membership_then_credits_then_a_refusal(world: World) -> None:
    await world.grant("ann", 1, "2030-12-31")
    await assign(world, "ann", await plan(world, classesPerPeriod=1))
    first = await world.book("ann", await world.instance(MON))
    assert first["payWith"] == "membership"
    second = await world.book("ann", await world.instance(MON + dt.timedelta(days=1)))
    assert second["payWith"] == "credits"
    refused = await world.refused("ann", await world.instance(MON + dt.timedelta(days=2)))
    assert refused["reasons"] == ["membership_limit_reached", "no_entitlement"]
    assert refused["periodEndsOn"] == "2030-09-15" and refused["dropinPriceCents"] == 0
    # Asked for explicitly, a drop-in is still possible, and the booking says so.
    dropin = await world.book("ann", await world.instance(MON + dt.timedelta(days=3)), payWith="dropin")
    assert dropin["payWith"] == "dropin"


async def test_plan_limited_to_venues_and_dates(world: World) -> None:
    elsewhere = await world.instance(MON)
    covered = await world.instance(MON + dt.timedelta(days=1))
    venue = (await world.instance_row(covered))["venue_id"]
    await assign(world, "ann", await plan(world, kind="unlimited", venueIds=[venue]), endsOn="2030-09-10")
    assert (await world.refused("ann", elsewhere, payWith="membership"))["reasons"] == ["no_membership"]
    assert (await world.book("ann", covered, payWith="membership"))["payWith"] == "membership"
    after_end = await world.instance(MON + dt.timedelta(days=2))
    assert (await world.refused("ann", after_end, payWith="membership"))["reasons"] == ["no_membership"]


async def test_plans_and_assignments_are_checked_and_staff_only(world: World) -> None:
    with pytest.raises(AppError) as no_limit:
        await plan(world, classesPerPeriod=None)
    assert no_limit.value.data["field"] == "classesPerPeriod"
    with pytest.raises(AppError) as limit_on_unlimited:
        await plan(world, kind="unlimited", classesPerPeriod=3)
    assert limit_on_unlimited.value.data["field"] == "classesPerPeriod"
    with pytest.raises(Forbidden):
        await world.tb.mutation("memberships:create_plan", {
            "businessId": world.business_id, "name": "x", "kind": "unlimited", "period": "week", "priceCents": 1},
            as_user=world.subject("ann"))
    plan_id = await plan(world)
    with pytest.raises(AppError) as backwards:
        await assign(world, "ann", plan_id, startsOn="2030-09-10", endsOn="2030-09-09")
    assert backwards.value.data["field"] == "endsOn"
    with pytest.raises(Forbidden):
        await world.tb.mutation("memberships:assign", {
            "businessId": world.business_id, "memberId": world.members["ann"], "planId": plan_id,
            "startsOn": "2030-09-01"}, as_user=world.subject("ann"))
    plans = await world.tb.query("memberships:list_plans", {"businessId": world.business_id},
                                 as_user=world.subject("ann"))
    assert [(p["planId"], p["classesPerPeriod"]) for p in plans] == [(plan_id, 2)]


async def test_promotion_applies_the_limit_and_skips_with_the_reason(world: World) -> None:
    await assign(world, "ann", await plan(world, classesPerPeriod=1))
    full = await world.instance(MON + dt.timedelta(days=1), capacity=1)
    await world.member("bob")
    await world.grant("bob", 1, "2030-12-31")
    seated = await world.book("bob", full)
    waiting = await world.book("ann", full, payWith="membership")  # joining takes no use yet (W10)
    assert waiting["status"] == "waitlisted"
    await world.book("ann", await world.instance(MON), payWith="membership")  # the week's one use
    await world.cancel("bob", seated["bookingId"])  # early, before the cutoff: promotion would seat ann
    row = await world.booking_row(waiting["bookingId"])
    assert (row["status"], row["skip_reason"]) == ("waitlisted", "membership_limit_reached")
    assert (await world.instance_row(full))["booked"] == 0


# -- the race for the last use, over real sockets ---------------------------------------------------------


async def call(tb: TestBackend, path: str, args: dict[str, Any], subject: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {tb.token(subject)}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
        response = await client.post("/api/mutation", content=json.dumps({"path": path, "args": args}),
                                     headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_two_bookings_race_for_the_last_use_and_one_wins(tb: TestBackend) -> None:
    world = await new_world(tb)
    await world.member("ann")
    monday = dt.datetime.now(UTC).date() + dt.timedelta(days=7 - dt.datetime.now(UTC).weekday())
    start = dt.datetime.combine(monday, dt.time(9), UTC)
    await assign(world, "ann", await plan(world, classesPerPeriod=3), startsOn=(monday - dt.timedelta(days=7)).isoformat())
    await world.book("ann", await world.instance(start), payWith="membership")
    await world.book("ann", await world.instance(start + dt.timedelta(days=1)), payWith="membership")
    for _ in range(3):  # a few rounds: each must end with exactly one winner
        racing = [await world.instance(start + dt.timedelta(days=2, hours=h)) for h in (0, 2)]
        results = await asyncio.gather(*(
            call(tb, "bookings:book", {"instanceId": i, "payWith": "membership"}, world.subject("ann")) for i in racing
        ))
        won = [r for r in results if r["status"] == "success"]
        lost = [r for r in results if r["status"] == "error"]
        if len(won) == 2:
            raise AssertionError(f"both bookings took the last use: {results}")
        assert len(won) == 1 and lost[0]["errorData"]["reasons"] == ["membership_limit_reached"], results
        rows = await tb.sql("SELECT used FROM membership_usage WHERE business_id = $1", world.business_id)
        assert [r["used"] for r in rows] == [3]
        booked = await tb.sql("SELECT count(*) AS n FROM bookings WHERE business_id = $1 AND pay_with = 'membership' "
                              "AND status = 'confirmed'", world.business_id)
        assert booked[0]["n"] == 3
        await world.cancel("ann", won[0]["value"]["bookingId"])  # gives the use back for the next round
