"""Durable crons on a real PostgreSQL: wall-time firing across DST, one firing per slot across nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend.errors import FunctionNotFound, InvalidArgs
from backend.scheduler import Crons
from backend.testing import ManualClock, TestBackend
from functions import crons as declared
from functions import testing_jobs


def z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def key() -> str:
    return f"cron-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def node() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(z("2025-03-28T12:00")), run_scheduler=False, serve=False) as harness:
        yield harness


def scheduler(tb: TestBackend) -> Any:
    assert tb.backend is not None
    return tb.backend.scheduler


def clock_of(tb: TestBackend) -> ManualClock:
    assert isinstance(tb.clock, ManualClock)
    return tb.clock


async def fired(tb: TestBackend, name: str) -> list[Any]:
    return await tb.sql("SELECT * FROM _scheduled_jobs WHERE cron_name = $1 ORDER BY run_at", name)


async def count(tb: TestBackend, name: str) -> int:
    return int(await tb.query("counters:get", {"name": name}))


async def walk(tb: TestBackend, until: dt.datetime, step: dt.timedelta, *others: TestBackend) -> None:
    """Move the clock in steps, letting every node run what is due at each step (concurrently)."""
    clock = clock_of(tb)
    while clock.now() < until:
        clock.set(min(until, clock.now() + step))
        await asyncio.gather(*(scheduler(n).run_due() for n in (tb, *others)))


async def test_a_cron_in_a_dst_zone_fires_at_the_local_wall_time(node: TestBackend) -> None:
    three, half_one = key(), key()
    crons = Crons()
    crons.cron(three, "0 3 * * *", "testing_jobs:record", {"key": three}, timezone="Europe/London")
    crons.cron(half_one, "30 1 * * *", testing_jobs.record, {"key": half_one}, timezone="Europe/London")
    await scheduler(node).register_crons(crons)

    await walk(node, z("2025-04-01T12:00"), dt.timedelta(minutes=15))

    # 2025-03-30 01:00 GMT the clocks jump to 02:00 BST: 03:00 local is 03:00Z before and 02:00Z after.
    assert [r["run_at"] for r in await fired(node, three)] == [
        z("2025-03-29T03:00"), z("2025-03-30T02:00"), z("2025-03-31T02:00"), z("2025-04-01T02:00")]
    # 01:30 does not exist on the 30th: it fires once, at the first instant after the gap.
    assert [r["run_at"] for r in await fired(node, half_one)] == [
        z("2025-03-29T01:30"), z("2025-03-30T01:00"), z("2025-03-31T00:30"), z("2025-04-01T00:30")]
    for name in (three, half_one):
        rows = await fired(node, name)
        assert {r["status"] for r in rows} == {"success"}
        assert all(dt.timedelta(0) <= r["started_at"] - r["run_at"] < dt.timedelta(minutes=15) for r in rows)
        assert await count(node, name) == 4
    # The application's own nightly cron (functions/crons.py) ran on the same London schedule.
    nightly = await fired(node, "nightly-horizon")
    assert [r["run_at"] for r in nightly] == [r["run_at"] for r in await fired(node, three)]
    assert {r["status"] for r in nightly} == {"success"}


async def test_a_repeated_wall_time_fires_once_when_clocks_go_back() -> None:
    name = key()
    async with TestBackend(clock=ManualClock(z("2025-10-25T12:00")), run_scheduler=False, serve=False) as node:
        crons = Crons()
        crons.cron(name, "30 1 * * *", "testing_jobs:record", {"key": name}, timezone="Europe/London")
        await scheduler(node).register_crons(crons)
        await walk(node, z("2025-10-27T12:00"), dt.timedelta(minutes=10))
        # 2025-10-26 02:00 BST the clocks go back to 01:00 GMT: 01:30 happens twice, fires at the first.
        assert [r["run_at"] for r in await fired(node, name)] == [z("2025-10-26T00:30"), z("2025-10-27T01:30")]


async def test_each_slot_fires_exactly_once_across_nodes(node: TestBackend) -> None:
    minutely, every_90s = key(), key()
    async with TestBackend(clock=node.clock, database_url=node.database_url, serve=False,
                           run_scheduler=False) as other:
        crons = Crons()
        crons.cron(minutely, "* * * * *", "testing_jobs:record", {"key": minutely})
        crons.interval(every_90s, "testing_jobs:record", {"key": every_90s}, seconds=90)
        await scheduler(node).register_crons(crons)
        await scheduler(other).register_crons(crons)  # a second node declaring the same crons changes nothing
        start = clock_of(node).now()
        await walk(node, start + dt.timedelta(minutes=30), dt.timedelta(seconds=20), other, other)

        minute_runs = [r["run_at"] for r in await fired(node, minutely)]
        assert minute_runs == [start + dt.timedelta(minutes=m) for m in range(1, 31)]
        interval_runs = [r["run_at"] for r in await fired(node, every_90s)]
        assert interval_runs == [start + dt.timedelta(seconds=90 * n) for n in range(1, 21)]
        assert await count(node, minutely) == 30
        assert await count(node, every_90s) == 20
        claimers = {r["claimed_by"] for r in await fired(node, minutely) + await fired(node, every_90s)}
        assert claimers <= {scheduler(node).node, scheduler(other).node}


async def test_slots_missed_while_no_node_ran_collapse_into_one_firing(node: TestBackend) -> None:
    name = key()
    crons = Crons()
    crons.cron(name, "*/5 * * * *", "testing_jobs:record", {"key": name})
    await scheduler(node).register_crons(crons)
    clock = clock_of(node)
    clock.set(z("2025-03-28T15:02"))
    await scheduler(node).run_due()
    assert [r["run_at"] for r in await fired(node, name)] == [z("2025-03-28T12:05")]
    state = await node.sql("SELECT next_run, last_run FROM _crons WHERE name = $1", name)
    assert (state[0]["next_run"], state[0]["last_run"]) == (z("2025-03-28T15:05"), z("2025-03-28T12:05"))
    clock.set(z("2025-03-28T15:05"))
    await scheduler(node).run_due()
    assert len(await fired(node, name)) == 2
    assert await count(node, name) == 2


async def test_registration_keeps_unchanged_crons_and_reschedules_changed_ones(node: TestBackend) -> None:
    declared_names = {c.name for c in declared.crons}
    assert {r["name"] for r in await node.sql("SELECT name FROM _crons")} == declared_names

    name = key()
    crons = Crons()
    crons.cron(name, "0 * * * *", "testing_jobs:record", {"key": name})
    await scheduler(node).register_crons(crons)

    async def next_run() -> dt.datetime:
        return (await node.sql("SELECT next_run FROM _crons WHERE name = $1", name))[0]["next_run"]

    assert await next_run() == z("2025-03-28T13:00")
    clock_of(node).set(z("2025-03-28T12:59"))
    await scheduler(node).register_crons(crons)
    assert await next_run() == z("2025-03-28T13:00")

    changed = Crons()
    changed.cron(name, "30 * * * *", "testing_jobs:record", {"key": name})
    await scheduler(node).register_crons(changed)
    assert await next_run() == z("2025-03-28T13:30")

    await scheduler(node).register_crons(Crons(), prune=True)
    assert await node.sql("SELECT name FROM _crons") == []


async def test_bad_cron_declarations_are_refused(node: TestBackend) -> None:
    crons = Crons()
    with pytest.raises(ValueError, match=r"cron 'x'.*minute"):
        crons.cron("x", "61 * * * *", "testing_jobs:record", {"key": "k"})
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        crons.cron("x", "0 3 * * *", "testing_jobs:record", {"key": "k"}, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="positive"):
        crons.interval("x", "testing_jobs:record", {"key": "k"})
    crons.cron("x", "0 3 * * *", "testing_jobs:record", {"key": "k"})
    with pytest.raises(ValueError, match="two crons are named 'x'"):
        crons.interval("x", "testing_jobs:record", {"key": "k"}, minutes=5)

    before = await node.sql("SELECT name FROM _crons ORDER BY name")
    for target, args, error in [
        ("testing_jobs:missing", {}, FunctionNotFound),
        ("counters:get", {"name": "n"}, FunctionNotFound),
        ("testing_jobs:record", {"key": 1}, InvalidArgs),
    ]:
        bad = Crons()
        bad.cron(key(), "0 3 * * *", "testing_jobs:record", {"key": "fine"})
        bad.cron(key(), "0 3 * * *", target, args)
        with pytest.raises(error):
            await scheduler(node).register_crons(bad)
    assert await node.sql("SELECT name FROM _crons ORDER BY name") == before
