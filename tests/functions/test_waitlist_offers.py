"""Offers after the promotion cutoff (W5): a freed seat is held for the head of the waitlist, claimed with
``bookings:claim_offer``, passed on by a scheduled expiry, never held past the class start."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backend import AppError, NotFound
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, clock_at, clocked_backend, new_world

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)
AFTER_CUTOFF = CLASS - dt.timedelta(hours=13)  # inside the 12 h late window + 2 h grace (W4)


@pytest.fixture(scope="module")
async def otb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(otb: TestBackend) -> ManualClock:
    return clock_at(otb, NOW)


@pytest.fixture
async def world(otb: TestBackend, clock: ManualClock) -> World:
    return await new_world(otb, offerMinutes=30)


async def queue(world: World, instance: str, *names: str, clock: ManualClock) -> dict[str, str]:
    ids = {}
    for name in names:
        await world.member(name)
        await world.grant(name, 3, "2030-12-31")
        ids[name] = (await world.book(name, instance))["bookingId"]
        clock.advance(seconds=1)
    return ids


async def claim(world: World, name: str, booking_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await world.tb.mutation("bookings:claim_offer", {"bookingId": booking_id},
                                                     as_user=world.subject(name))
    return result


async def expire_due(world: World) -> int:
    ran: int = await world.tb.backend.scheduler.run_due()
    return ran


async def test_a_seat_freed_after_the_cutoff_is_held_for_the_head_and_claimed(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await queue(world, instance, "ann", "bob", "cat", clock=clock)
    clock.set(AFTER_CUTOFF)
    result = await world.cancel("ann", ids["ann"])
    assert result["promotedBookingIds"] == []
    bob = await world.booking_row(ids["bob"])
    assert (bob["status"], bob["offer_expires_at"]) == ("offered", AFTER_CUTOFF + dt.timedelta(minutes=30))
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (1, 1)  # the held seat counts as taken
    [offer] = await world.outbox("waitlist_offered")
    assert offer["recipient_id"] == world.members["bob"]
    assert offer["payload"]["expiresAt"] == "2030-09-04T20:30:00Z"
    jobs = await world.tb.sql("SELECT run_at, args::text AS args FROM _scheduled_jobs WHERE function_path = "
                              "'bookings:expire_offer' AND args::text LIKE $1", f"%{ids['bob']}%")
    assert [j["run_at"] for j in jobs] == [AFTER_CUTOFF + dt.timedelta(minutes=30)]
    # Nobody else can take the held seat meanwhile.
    await world.member("dan")
    await world.grant("dan", 1, "2030-12-31")
    assert (await world.book("dan", instance))["status"] == "waitlisted"
    assert (await world.refused("cat", instance))["reasons"] == ["already_booked"]
    with pytest.raises(NotFound):
        await claim(world, "cat", ids["bob"])
    clock.advance(minutes=29)
    claimed = await claim(world, "bob", ids["bob"])
    assert (claimed["status"], claimed["payWith"]) == ("confirmed", "credits")
    bob = await world.booking_row(ids["bob"])
    assert (bob["status"], bob["source"], bob["offer_expires_at"]) == ("confirmed", "waitlist", None)
    assert await world.ledger_sum("bob") == 2
    assert (await world.instance_row(instance))["booked"] == 1
    with pytest.raises(AppError) as again:
        await claim(world, "bob", ids["bob"])
    assert again.value.data["code"] == "not_offered"
    # The expiry job finds nothing left to do.
    clock.advance(minutes=5)
    await expire_due(world)
    assert (await world.booking_row(ids["bob"]))["status"] == "confirmed"


async def test_an_expired_offer_passes_to_the_next_person(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await queue(world, instance, "ann", "bob", "cat", clock=clock)
    clock.set(AFTER_CUTOFF)
    await world.cancel("ann", ids["ann"])
    clock.advance(minutes=30)
    with pytest.raises(AppError) as late:
        await claim(world, "bob", ids["bob"])  # the job has not run yet, but the offer is over
    assert late.value.data["code"] == "offer_expired"
    assert await expire_due(world) >= 1
    bob = await world.booking_row(ids["bob"])
    assert (bob["status"], bob["reason"], bob["active_key"]) == ("withdrawn", "offer_expired", None)
    cat = await world.booking_row(ids["cat"])
    assert (cat["status"], cat["offer_expires_at"]) == ("offered", AFTER_CUTOFF + dt.timedelta(minutes=60))
    assert [o["recipient_id"] for o in await world.outbox("offer_expired")] == [world.members["bob"]]
    assert [o["recipient_id"] for o in await world.outbox("waitlist_offered")] == [
        world.members["bob"], world.members["cat"]]
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (1, 0)
    assert await world.ledger_sum("bob") == 3  # nothing was charged for the offer
    # Declining passes it on just the same; with nobody left the seat is simply free.
    await world.cancel("cat", ids["cat"])
    assert (await world.booking_row(ids["cat"]))["status"] == "cancelled"
    assert (await world.instance_row(instance))["booked"] == 0


async def test_the_hold_ends_when_the_class_starts(world: World, clock: ManualClock) -> None:
    await world.settings(offerMinutes=120)
    instance = await world.instance(CLASS, capacity=1)
    ids = await queue(world, instance, "ann", "bob", "cat", clock=clock)
    clock.set(CLASS - dt.timedelta(minutes=45))
    await world.cancel("ann", ids["ann"])
    assert (await world.booking_row(ids["bob"]))["offer_expires_at"] == CLASS  # not 2 h later
    clock.set(CLASS)
    await expire_due(world)
    bob = await world.booking_row(ids["bob"])
    assert (bob["status"], bob["reason"]) == ("withdrawn", "lapsed_at_start")
    cat = await world.booking_row(ids["cat"])  # no new offer after the start: cat's entry lapses (W10)
    assert (cat["status"], cat["reason"]) == ("withdrawn", "lapsed_at_start")
    assert [o["recipient_id"] for o in await world.outbox("waitlist_offered")] == [world.members["bob"]]
    assert (await world.instance_row(instance))["booked"] == 0


async def test_booking_again_takes_the_offer_and_an_offer_skips_who_cannot_pay(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await queue(world, instance, "ann", "bob", "cat", clock=clock)
    await world.tb.sql("UPDATE credit_lots SET remaining = 0 WHERE member_id = $1", world.members["bob"])
    clock.set(AFTER_CUTOFF)
    await world.cancel("ann", ids["ann"])
    bob, cat = await world.booking_row(ids["bob"]), await world.booking_row(ids["cat"])
    assert (bob["status"], bob["skip_reason"]) == ("waitlisted", "no_entitlement")
    assert cat["status"] == "offered"
    booked = await world.book("cat", instance)
    assert (booked["bookingId"], booked["status"]) == (ids["cat"], "confirmed")


async def test_open_booking_when_offers_are_off(world: World, clock: ManualClock) -> None:
    await world.settings(offerMinutes=0)
    instance = await world.instance(CLASS, capacity=1)
    ids = await queue(world, instance, "ann", "bob", clock=clock)
    clock.set(AFTER_CUTOFF)
    await world.cancel("ann", ids["ann"])
    assert (await world.booking_row(ids["bob"]))["status"] == "waitlisted"
    assert await world.outbox("waitlist_offered") == []
    assert len(await world.outbox("seat_available")) == 1


# -- two people, one offer, over real sockets ---------------------------------------------------------------


async def post(tb: TestBackend, path: str, args: dict[str, Any], subject: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {tb.token(subject)}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
        response = await client.post("/api/mutation", content=json.dumps({"path": path, "args": args}),
                                     headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_two_people_claiming_one_offer(tb: TestBackend) -> None:
    world = await new_world(tb, offerMinutes=30)
    starts = (dt.datetime.now(UTC) + dt.timedelta(hours=5)).replace(second=0, microsecond=0)
    expires = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    for round_ in range(3):
        instance = await world.instance(starts + dt.timedelta(hours=2 * round_), capacity=1)
        names = [f"{n}{round_}" for n in ("ann", "bob", "cat")]
        ids = {}
        for name in names:
            await world.member(name)
            await world.grant(name, 2, expires)
            ids[name] = (await world.book(name, instance))["bookingId"]
        ann, bob, cat = names
        await world.cancel(ann, ids[ann])
        assert (await world.booking_row(ids[bob]))["status"] == "offered"
        # bob claims from two devices at once while cat, also waiting, tries to book the seat.
        results = await asyncio.gather(
            post(tb, "bookings:claim_offer", {"bookingId": ids[bob]}, world.subject(bob)),
            post(tb, "bookings:claim_offer", {"bookingId": ids[bob]}, world.subject(bob)),
            post(tb, "bookings:book", {"instanceId": instance}, world.subject(cat)),
        )
        claims = results[:2]
        assert Counter(r["status"] for r in claims) == {"success": 1, "error": 1}, claims
        [failed] = [r for r in claims if r["status"] == "error"]
        assert failed["errorData"]["code"] == "not_offered"
        assert results[2]["status"] == "error" and results[2]["errorData"]["reasons"] == ["already_booked"]
        row = await world.instance_row(instance)
        assert (row["booked"], row["waitlisted"]) == (1, 1)
        consumed = await tb.sql("SELECT count(*) AS n FROM credit_ledger WHERE booking_id = $1 AND kind = 'consume'",
                                ids[bob])
        assert consumed[0]["n"] == 1
