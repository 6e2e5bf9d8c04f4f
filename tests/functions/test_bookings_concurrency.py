"""Races over real sockets: the last seats, cancellations with a waitlist, one credit for two classes.

Every client is a separate HTTP request on its own connection to the served backend, so the mutations run
concurrently in the engine's connection pool as SERIALIZABLE transactions with retries (C1, C2, F1, W8).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from backend.testing import TestBackend
from tests.support.booking import UTC, World, new_world

# The shared backend runs on the system clock, so concurrent joins get the distinct instants they would in
# production; classes sit a few days ahead, inside the default 14-day booking window.
CLASS = (dt.datetime.now(UTC) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
EXPIRES = (dt.date.today() + dt.timedelta(days=365)).isoformat()


@pytest.fixture
async def world(tb: TestBackend) -> World:
    return await new_world(tb, waitlistLimit=1000)


async def call(tb: TestBackend, path: str, args: dict[str, Any], subject: str) -> tuple[int, dict[str, Any]]:
    """One request on its own connection, as a separate client would send it."""
    headers = {"Authorization": f"Bearer {tb.token(subject)}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
        response = await client.post("/api/mutation", content=json.dumps({"path": path, "args": args}),
                                     headers=headers)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def values(results: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every response is a 200 success; anything else (5xx, Conflict, a raw error) fails the race."""
    bad = [r for r in results if r[0] != 200 or r[1].get("status") != "success"]
    assert not bad, f"{len(bad)} failed requests, e.g. {bad[:3]}"
    return [r[1]["value"] for r in results]


async def test_fifty_clients_race_for_ten_seats(world: World) -> None:
    instance = await world.instance(CLASS, capacity=10)
    names = [f"c{i:02d}" for i in range(50)]
    for name in names:
        await world.member(name)
        await world.grant(name, 1, EXPIRES)
    retries_before = world.tb.runner.retries
    results = await asyncio.gather(*(
        call(world.tb, "bookings:book", {"instanceId": instance}, world.subject(name)) for name in names
    ))
    booked = values(results)
    statuses = Counter(v["status"] for v in booked)
    assert statuses == {"confirmed": 10, "waitlisted": 40}
    assert all(1 <= v["position"] <= 40 for v in booked if v["status"] == "waitlisted")
    roster = await world.roster(instance)
    assert [w["position"] for w in roster["waitlist"]] == list(range(1, 41))
    assert {w["bookingId"] for w in roster["waitlist"]} == {v["bookingId"] for v in booked if v["status"] == "waitlisted"}
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (10, 40)
    counted = await world.tb.sql(
        "SELECT status, count(*) AS n FROM bookings WHERE instance_id = $1 GROUP BY status", instance)
    assert {r["status"]: r["n"] for r in counted} == {"confirmed": 10, "waitlisted": 40}
    spent = await world.tb.sql("SELECT COALESCE(SUM(amount), 0) AS s FROM credit_ledger WHERE business_id = $1 "
                               "AND kind = 'consume'", world.business_id)
    assert spent[0]["s"] == -10
    print(f"50-client race: {world.tb.runner.retries - retries_before} serialization retries")


async def test_twenty_concurrent_cancellations_promote_twenty_in_order(world: World) -> None:
    instance = await world.instance(CLASS, capacity=20)
    seated = [f"s{i:02d}" for i in range(20)]
    queued = [f"w{i:02d}" for i in range(25)]
    bookings: dict[str, str] = {}
    for name in seated + queued:
        await world.member(name)
        await world.grant(name, 1, EXPIRES)
        bookings[name] = (await world.book(name, instance))["bookingId"]
    assert [w["memberId"] for w in (await world.roster(instance))["waitlist"]] == [world.members[n] for n in queued]
    results = await asyncio.gather(*(
        call(world.tb, "bookings:cancel", {"bookingId": bookings[name]}, world.subject(name)) for name in seated
    ))
    cancelled = values(results)
    assert all(c["status"] == "cancelled" and c["late"] is False for c in cancelled)
    promoted = [b for c in cancelled for b in c["promotedBookingIds"]]
    assert len(promoted) == 20 and set(promoted) == {bookings[n] for n in queued[:20]}
    roster = await world.roster(instance)
    assert {a["bookingId"] for a in roster["attendees"]} == {bookings[n] for n in queued[:20]}
    assert all(a["source"] == "waitlist" and a["creditsSpent"] == 1 for a in roster["attendees"])
    assert [(w["bookingId"], w["position"]) for w in roster["waitlist"]] == [
        (bookings[n], i) for i, n in enumerate(queued[20:], start=1)]
    assert (roster["booked"], roster["waitlisted"]) == (20, 5)
    assert len(await world.outbox("waitlist_promoted")) == 20
    for name in seated + queued:
        assert await world.ledger_sum(name) == await world.lots_sum(name)


async def test_one_credit_two_classes_at_once(world: World) -> None:
    names = [f"d{i}" for i in range(8)]
    pairs = []
    for i, name in enumerate(names):
        await world.member(name)
        await world.grant(name, 1, EXPIRES)
        first = await world.instance(CLASS + dt.timedelta(hours=2 * i))
        second = await world.instance(CLASS + dt.timedelta(hours=2 * i + 1))
        pairs.append((name, first, second))
    results = await asyncio.gather(*(
        call(world.tb, "bookings:book", {"instanceId": instance}, world.subject(name))
        for name, first, second in pairs for instance in (first, second)
    ))
    assert all(code == 200 for code, _ in results)
    for i, (name, _, _) in enumerate(pairs):
        pair = results[2 * i : 2 * i + 2]
        outcomes = sorted(body["status"] for _, body in pair)
        assert outcomes == ["error", "success"], pair
        error = next(body for _, body in pair if body["status"] == "error")
        assert error["errorData"]["reasons"] == ["no_entitlement"]
        assert await world.ledger_sum(name) == await world.lots_sum(name) == 0


async def test_double_submit_makes_one_booking(world: World) -> None:
    await world.member("ann")
    await world.grant("ann", 5, EXPIRES)
    instance = await world.instance(CLASS)
    results = await asyncio.gather(*(
        call(world.tb, "bookings:book", {"instanceId": instance}, world.subject("ann")) for _ in range(6)
    ))
    assert all(code == 200 for code, _ in results)
    assert sorted(body["status"] for _, body in results) == ["error"] * 5 + ["success"]
    assert {body["errorData"]["reasons"][0] for _, body in results if body["status"] == "error"} == {"already_booked"}
    rows = await world.tb.sql("SELECT count(*) AS n FROM bookings WHERE instance_id = $1", instance)
    assert rows[0]["n"] == 1
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 4


async def test_waitlist_limit_holds_under_concurrent_joins(world: World) -> None:
    await world.settings(waitlistLimit=5)
    instance = await world.instance(CLASS, capacity=0)
    names = [f"q{i}" for i in range(10)]
    for name in names:
        await world.member(name)
        await world.grant(name, 1, EXPIRES)
    results = await asyncio.gather(*(
        call(world.tb, "bookings:book", {"instanceId": instance}, world.subject(name)) for name in names
    ))
    assert all(code == 200 for code, _ in results)
    refused = [body["errorData"]["reasons"] for _, body in results if body["status"] == "error"]
    assert refused == [["waitlist_full"]] * 5  # W11: exactly 5 entries
    rows = await world.tb.sql("SELECT count(*) AS n FROM bookings WHERE instance_id = $1", instance)
    assert rows[0]["n"] == 5 and (await world.instance_row(instance))["waitlisted"] == 5
