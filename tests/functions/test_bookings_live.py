"""Live rosters over the sync WebSocket: counts and waitlist positions change as bookings commit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from backend.testing import TestBackend
from tests.support.booking import UTC, new_world
from tests.support.sync_client import RawClient

CLASS = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
EXPIRES = (dt.date.today() + dt.timedelta(days=365)).isoformat()


def waitlist(roster: dict[str, Any]) -> list[tuple[str, float]]:
    return [(w["memberId"], w["position"]) for w in roster["waitlist"]]


async def test_roster_and_my_bookings_update_live(tb: TestBackend) -> None:
    world = await new_world(tb)
    instance = await world.instance(CLASS, capacity=1)
    for name in ("ann", "bob", "cat"):
        await world.member(name)
        await world.grant(name, 2, EXPIRES)
    m = world.members
    async with RawClient.open(tb.port) as staff, RawClient.open(tb.port) as cat:
        await staff.authenticate(tb.token(world.owner))
        await cat.authenticate(tb.token(world.subject("cat")))
        (roster,) = await staff.subscribe(("bookings:for_instance", {"instanceId": instance}))
        (mine,) = await cat.subscribe(("bookings:mine", {"businessId": world.business_id}))
        assert staff.results[roster]["booked"] == 0 and cat.results[mine] == []

        ann = (await world.book("ann", instance))["bookingId"]
        await staff.until(lambda: staff.results[roster]["booked"] == 1)
        await world.book("bob", instance)
        await world.book("cat", instance)
        await staff.until(lambda: waitlist(staff.results[roster]) == [(m["bob"], 1), (m["cat"], 2)])
        await cat.until(lambda: [b.get("position") for b in cat.results[mine]] == [2])

        await world.cancel("ann", ann)  # bob is promoted; cat moves up to 1
        await staff.until(lambda: waitlist(staff.results[roster]) == [(m["cat"], 1)])
        assert [a["memberId"] for a in staff.results[roster]["attendees"]] == [m["bob"]]
        assert (staff.results[roster]["booked"], staff.results[roster]["waitlisted"]) == (1, 1)
        await cat.until(lambda: [b.get("position") for b in cat.results[mine]] == [1])
