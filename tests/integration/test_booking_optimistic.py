"""The official npm client's optimistic update for ``bookings:book`` never flickers (issue 7, done-when).

tests/js/booking_optimistic.mjs does the client side: a customer subscribed to a week of
``classes:list_instances`` books with an optimistic ``booked + 1``; another customer's bookings, one after
and one at the same moment, arrive live. The script reports every ``booked`` value the subscription
delivered; the assertions here check the sequences and the rows the server holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from typing import Any

import pytest

from backend.testing import TestBackend
from tests.integration.official_clients import JS_DIR, node_or_skip
from tests.support.booking import UTC, iso, new_world

pytestmark = pytest.mark.node


async def run_script(config: dict[str, Any]) -> dict[str, Any]:
    node = node_or_skip()
    env = {**os.environ, "BOOKING_TEST_CONFIG": json.dumps(config)}
    process = await asyncio.create_subprocess_exec(
        node, "booking_optimistic.mjs", cwd=JS_DIR, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = stdout.decode().strip().splitlines()
    assert lines, f"no report from booking_optimistic.mjs (exit {process.returncode}): {stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert process.returncode == 0 and report.get("ok"), json.dumps(report, indent=1)[:4000]
    return report


def never_back(values: list[float], old: float) -> None:
    """``old`` first, then only ``old + 1``: no return to ``old``, no double count."""
    assert values[0] == old, values
    assert len(values) >= 2 and set(values[1:]) == {old + 1}, values


async def test_optimistic_booking_never_flickers_and_others_arrive_live(tb: TestBackend) -> None:
    node_or_skip()
    world = await new_world(tb)
    day = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
    first = await world.instance(day, capacity=10)
    second = await world.instance(day + dt.timedelta(hours=3), capacity=10)
    expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    for name in ("ann", "bob", "early"):
        await world.member(name)
        await world.grant(name, 5, expires)
    await world.book("early", first)  # the class starts at 1 booked, so "back to old" is not "back to 0"
    week = (day - dt.timedelta(days=3), day + dt.timedelta(days=4))
    report = await run_script({
        "url": tb.url, "token": tb.token(world.subject("ann")), "otherToken": tb.token(world.subject("bob")),
        "businessId": world.business_id, "from": iso(week[0]), "to": iso(week[1]), "first": first, "second": second,
    })

    # single: old, old+1 (the guess), then the server's old+1 replaces it; also after the promise resolved
    never_back(report["single"], 1)
    never_back(report["singleSettled"], 1)
    assert report["result"]["status"] == "confirmed"
    rows = await tb.sql("SELECT _id, member_id, status FROM bookings WHERE instance_id = $1 AND member_id = $2",
                        first, world.members["ann"])
    assert [(r["_id"], r["status"]) for r in rows] == [(report["result"]["bookingId"], "confirmed")]

    # live: the other customer's booking arrives on ann's subscription
    assert report["otherResult"]["status"] == "confirmed"
    assert report["live"][0] == 2 and report["live"][-1] == 3, report["live"]
    assert report["live"] == sorted(report["live"])

    # race: both at once; ann's view only ever goes up, from 0 to 2
    race = report["race"]
    assert race[0] == 0 and race[-1] == 2 and race == sorted(race), race
    assert {r["status"] for r in report["raceResults"]} == {"confirmed"}
    assert (await world.instance_row(second))["booked"] == 2
    assert not [line for line in report["logs"] if line[0] in ("error", "queryError")], report["logs"]
