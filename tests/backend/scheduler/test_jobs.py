"""Durable scheduled functions on a real PostgreSQL: atomicity, exactly-once, cancel, nodes, crashes, limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, knobs
from backend.errors import FunctionNotFound, InvalidArgs, LimitExceeded
from backend.scheduler._ddl import NODE_LOCK_SPACE
from backend.testing import ManualClock, TestBackend, create_database, drop_database
from backend.values import decode_value
from functions import testing_jobs

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def key() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


async def call(tb: TestBackend, path: str, args: dict[str, Any] | None = None, *, kind: str = "mutation",
               as_user: str | None = None) -> Any:
    """Call any function, internal ones included, and unwrap its result."""
    outcome = await getattr(tb.runner, kind)(path, args or {}, tb.identity(as_user), allow_internal=True)
    if outcome.error is not None:
        raise outcome.error
    return decode_value(outcome.value)


async def run_due(tb: TestBackend) -> int:
    """Run everything due on this node's clock, as its scheduler loop would, and wait for it."""
    assert tb.backend is not None
    ran: int = await tb.backend.scheduler.run_due()
    return ran


async def job(tb: TestBackend, job_id: str) -> Any:
    rows = await tb.sql("SELECT * FROM _scheduled_jobs WHERE id = $1", job_id)
    return rows[0] if rows else None


async def jobs_for(tb: TestBackend, name: str) -> list[Any]:
    return await tb.sql("SELECT * FROM _scheduled_jobs WHERE args->>'key' = $1", name)


async def count(tb: TestBackend, name: str) -> int:
    return int(await tb.query("counters:get", {"name": name}))


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
async def node() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(T0), run_scheduler=False, serve=False) as harness:
        yield harness


def clock_of(tb: TestBackend) -> ManualClock:
    assert isinstance(tb.clock, ManualClock)
    return tb.clock


async def test_a_job_scheduled_by_a_rolled_back_mutation_never_exists(node: TestBackend) -> None:
    name = key()
    with pytest.raises(AppError):
        await node.mutation("testing_jobs:schedule", {"key": name, "fail": True}, as_user="ann")
    assert await jobs_for(node, name) == []
    await run_due(node)
    assert await count(node, name) == 0

    job_id = await node.mutation("testing_jobs:schedule", {"key": name}, as_user="ann")
    assert [r["id"] for r in await jobs_for(node, name)] == [job_id]


async def test_a_scheduled_mutation_runs_after_its_time_and_exactly_once(node: TestBackend) -> None:
    clock, name = clock_of(node), key()
    job_id = await node.mutation("testing_jobs:schedule", {"key": name, "delaySeconds": 60}, as_user="ann")
    row = await job(node, job_id)
    assert (row["status"], row["kind"], row["subject"]) == ("pending", "mutation", "ann")
    assert row["run_at"] == clock.now() + dt.timedelta(seconds=60)

    clock.advance(seconds=59)
    await run_due(node)
    assert (await job(node, job_id))["status"] == "pending"
    assert await count(node, name) == 0

    clock.advance(seconds=2)
    await run_due(node)
    row = await job(node, job_id)
    assert (row["status"], row["attempts"], row["result"]) == ("success", 1, 1.0)
    assert row["started_at"] == clock.now() and row["completed_at"] == clock.now()
    assert await count(node, name) == 1

    clock.advance(hours=1)
    await run_due(node)
    assert await count(node, name) == 1

    seen = await call(node, "testing_jobs:inspect", {"jobId": job_id})
    assert (seen["status"], seen["functionPath"], seen["args"], seen["result"]) == (
        "success", "testing_jobs:record", {"key": name}, 1)
    listed = await call(node, "testing_jobs:list_jobs", {"status": "success"})
    assert job_id in [j["id"] for j in listed]


async def test_cancel_stops_a_pending_job_only(node: TestBackend) -> None:
    clock, name = clock_of(node), key()
    job_id = await node.mutation("testing_jobs:schedule", {"key": name, "delaySeconds": 30}, as_user="ann")
    assert await call(node, "testing_jobs:cancel", {"jobId": job_id}) is True
    assert await call(node, "testing_jobs:cancel", {"jobId": job_id}) is False
    clock.advance(minutes=5)
    await run_due(node)
    assert await count(node, name) == 0
    row = await job(node, job_id)
    assert row["status"] == "canceled" and row["completed_at"] is not None

    done = await node.mutation("testing_jobs:schedule", {"key": name}, as_user="ann")
    await run_due(node)
    assert await call(node, "testing_jobs:cancel", {"jobId": done}) is False
    assert (await job(node, done))["status"] == "success"

    with pytest.raises(InvalidArgs):
        await call(node, "testing_jobs:cancel", {"jobId": "not-a-job"})


async def test_a_failing_job_is_marked_failed_and_leaves_no_writes(node: TestBackend) -> None:
    name = key()
    job_id = await call(node, "testing_jobs:schedule_call", {"fn": "testing_jobs:fail_job", "args": {"key": name}})
    await run_due(node)
    row = await job(node, job_id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["error"].startswith("AppError: failed on purpose") and "job_failed" in row["error"]
    assert await count(node, name) == 0


async def test_action_jobs_run_once_and_keep_their_result(node: TestBackend) -> None:
    name = key()
    testing_jobs.GATES[name] = asyncio.Event()
    testing_jobs.GATES[name].set()
    job_id = await call(node, "testing_jobs:schedule_call", {"fn": "testing_jobs:slow_action", "args": {"key": name}})
    from_action = await call(node, "testing_jobs:schedule_from_action", {"key": name}, kind="action")
    await run_due(node)
    row = await job(node, job_id)
    assert (row["kind"], row["status"], row["result"]) == ("action", "success", f"done:{name}")
    assert (await job(node, from_action))["status"] == "success"
    assert await count(node, f"{name}:started") == 1
    assert await count(node, f"{name}:finished") == 1
    assert await count(node, name) == 1  # the job the action scheduled


async def test_a_job_runs_as_the_user_who_scheduled_it(node: TestBackend) -> None:
    name = key()
    args = {"fn": "testing_jobs:record_caller", "args": {"key": name}}
    await call(node, "testing_jobs:schedule_call", args, as_user="bob")
    await call(node, "testing_jobs:schedule_call", args)
    await run_due(node)
    assert await count(node, f"{name}:bob") == 1
    assert await count(node, f"{name}:anonymous") == 1


async def test_jobs_are_scoped_to_the_business_that_scheduled_them(node: TestBackend) -> None:
    business_a = await node.mutation("businesses:create", {"name": "A", "timezone": "UTC"}, as_user="ann")
    business_b = await node.mutation("businesses:create", {"name": "B", "timezone": "UTC"}, as_user="bob")
    job_id = await call(node, "testing_jobs:schedule_in_business", {"businessId": business_a, "key": key()},
                        as_user="ann")
    mine = await call(node, "testing_jobs:inspect_in_business", {"businessId": business_a, "jobId": job_id},
                      as_user="ann")
    assert mine["id"] == job_id
    assert await call(node, "testing_jobs:inspect_in_business", {"businessId": business_b, "jobId": job_id},
                      as_user="bob") is None
    assert await call(node, "testing_jobs:inspect", {"jobId": job_id}) is None
    assert await call(node, "testing_jobs:cancel_in_business", {"businessId": business_b, "jobId": job_id},
                      as_user="bob") is False
    assert (await job(node, job_id))["status"] == "pending"
    assert await call(node, "testing_jobs:cancel_in_business", {"businessId": business_a, "jobId": job_id},
                      as_user="ann") is True


async def test_limits_and_bad_targets_fail_at_schedule_time(node: TestBackend, monkeypatch: Any) -> None:
    name = key()
    monkeypatch.setattr(knobs, "MAX_SCHEDULED_PER_MUTATION", 3)
    with pytest.raises(LimitExceeded, match="MAX_SCHEDULED_PER_MUTATION"):
        await call(node, "testing_jobs:schedule_many", {"keys": [name] * 4})
    assert await jobs_for(node, name) == []
    assert len(await call(node, "testing_jobs:schedule_many", {"keys": [name] * 3})) == 3

    monkeypatch.setattr(knobs, "MAX_SCHEDULED_ARGS_BYTES", 1024)
    big = {"fn": "testing_jobs:record", "args": {"key": "x" * 2000}}
    with pytest.raises(LimitExceeded, match="MAX_SCHEDULED_ARGS_BYTES"):
        await call(node, "testing_jobs:schedule_call", big)

    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"fn": "testing_jobs:nope", "args": {}}, FunctionNotFound, "testing_jobs:nope"),
        ({"fn": "counters:get", "args": {"name": "x"}}, FunctionNotFound, "is a query"),
        ({"fn": "testing_jobs:record", "args": {"key": 5}}, InvalidArgs, r"testing_jobs:record.*\$\.args\.key"),
        ({"fn": "testing_jobs:record", "args": {}}, InvalidArgs, "missing required field"),
        ({"fn": "testing_jobs:record", "args": {"key": "k"}, "delaySeconds": -1}, InvalidArgs, ">= 0"),
        ({"fn": "testing_jobs:record", "args": {"key": "k"}, "at": "2025-03-01T12:00:00"}, InvalidArgs, "naive"),
        ({"fn": "testing_jobs:record", "args": {"key": "k"}, "at": "tomorrow"}, InvalidArgs, "ISO 8601"),
    ]
    before = await node.sql("SELECT count(*) AS n FROM _scheduled_jobs")
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            await call(node, "testing_jobs:schedule_call", args)
    assert await node.sql("SELECT count(*) AS n FROM _scheduled_jobs") == before


async def test_run_at_accepts_an_iso_instant(node: TestBackend) -> None:
    clock, name = clock_of(node), key()
    when = (clock.now() + dt.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    job_id = await call(node, "testing_jobs:schedule_call",
                        {"fn": "testing_jobs:record", "args": {"key": name}, "at": when})
    assert (await job(node, job_id))["run_at"] == clock.now() + dt.timedelta(hours=2)
    clock.advance(hours=2)
    await run_due(node)
    assert await count(node, name) == 1


async def test_two_nodes_never_run_one_job_twice(node: TestBackend, caplog: Any) -> None:
    names = [key() for _ in range(200)]
    actions = [key() for _ in range(30)]
    for name in actions:
        testing_jobs.GATES[name] = asyncio.Event()
        testing_jobs.GATES[name].set()
    async with TestBackend(clock=node.clock, database_url=node.database_url, serve=False,
                           run_scheduler=False) as other:
        ids = await call(node, "testing_jobs:schedule_many", {"keys": names})
        for name in actions:
            ids.append(await call(node, "testing_jobs:schedule_call",
                                  {"fn": "testing_jobs:slow_action", "args": {"key": name}}))
        await asyncio.gather(run_due(node), run_due(other), run_due(node))
        rows = await node.sql("SELECT id, status, attempts, claimed_by FROM _scheduled_jobs WHERE id = ANY($1)", ids)
        assert len(rows) == len(ids)
        assert {r["status"] for r in rows} == {"success"}
        # Claimed once each, unless a mutation was given back after a conflict it could not get past.
        given_back = {r.args[0] for r in caplog.records if "giving it back" in r.getMessage()}
        assert [r["id"] for r in rows if r["attempts"] != 1 and r["id"] not in given_back] == []
        assert {r["claimed_by"] for r in rows} == {node.backend.scheduler.node, other.backend.scheduler.node}
        counts = await call(node, "counters:list_all", kind="query")
        by_name = {c["name"]: c["value"] for c in counts}
        assert all(by_name.get(n) == 1 for n in names)
        assert all(by_name.get(f"{n}:started") == 1 and by_name.get(f"{n}:finished") == 1 for n in actions)


async def test_jobs_due_while_no_node_ran_run_after_restart() -> None:
    url = await create_database()
    clock = ManualClock(T0)
    names = [key() for _ in range(5)]
    try:
        async with TestBackend(clock=clock, database_url=url, serve=False, run_scheduler=False) as first:
            await call(first, "testing_jobs:schedule_many", {"keys": names, "delaySeconds": 3600})
        clock.advance(hours=2)
        async with TestBackend(clock=clock, database_url=url, serve=False, run_scheduler=True) as second:

            async def all_done() -> bool:
                rows = await second.sql("SELECT status FROM _scheduled_jobs WHERE cron_name IS NULL")
                return [r["status"] for r in rows] == ["success"] * len(names)

            await until(all_done)
            assert [await count(second, n) for n in names] == [1] * len(names)
    finally:
        await drop_database(url)


async def test_work_a_dead_node_left_behind_is_settled() -> None:
    url = await create_database()
    clock = ManualClock(T0)
    name = key()
    testing_jobs.GATES[name] = asyncio.Event()
    try:
        async with TestBackend(clock=clock, database_url=url, serve=False, run_scheduler=True) as doomed:
            action_id = await call(doomed, "testing_jobs:schedule_call",
                                   {"fn": "testing_jobs:slow_action", "args": {"key": name}})

            async def started() -> bool:
                return await count(doomed, f"{name}:started") == 1

            await until(started)
            async with TestBackend(clock=clock, database_url=url, serve=False, run_scheduler=False) as survivor:
                # The claimant is alive: its running action is left alone, by startup and by later passes.
                await run_due(survivor)
                row = await job(survivor, action_id)
                assert row["status"] == "in_progress" and row["claimed_by"] == doomed.backend.scheduler.node

                # A mutation job claimed by a node that died before committing goes back to pending.
                mutation_key = key()
                mutation_id = await call(survivor, "testing_jobs:schedule_call",
                                         {"fn": "testing_jobs:record", "args": {"key": mutation_key},
                                          "delaySeconds": 3600})
                ghost = (await survivor.sql("SELECT nextval('_scheduler_nodes')::int AS n"))[0]["n"]
                await survivor.sql("UPDATE _scheduled_jobs SET status = 'in_progress', claimed_by = $2, "
                                   "attempts = 1, run_at = $3 WHERE id = $1", mutation_id, ghost, clock.now())

                # The doomed node's session dies (as in a crash): PostgreSQL releases its lock.
                await survivor.sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = $1 AND objid = $2 AND objsubid = 2",
                    NODE_LOCK_SPACE, row["claimed_by"])

                async def lock_released() -> bool:
                    held = await survivor.sql(
                        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
                        "AND objsubid = 2", NODE_LOCK_SPACE, row["claimed_by"])
                    return not held

                await until(lock_released)
                await run_due(survivor)
                row = await job(survivor, action_id)
                assert (row["status"], row["error"]) == ("failed", "node crashed mid-action")


                async def settled() -> bool:
                    return bool((await job(survivor, mutation_id))["status"] == "success")

                await until(settled)  # run by whichever node claimed it again
                assert (await job(survivor, mutation_id))["attempts"] == 2
                assert await count(survivor, mutation_key) == 1

                # The action, still running in the doomed process, cannot overwrite the verdict.
                testing_jobs.GATES[name].set()

                async def finished() -> bool:
                    return await count(survivor, f"{name}:finished") == 1

                await until(finished)
                await asyncio.sleep(0.2)
                await run_due(survivor)
                assert (await job(survivor, action_id))["status"] == "failed"
                assert await count(survivor, f"{name}:started") == 1
    finally:
        await drop_database(url)


async def test_the_running_loop_picks_up_jobs_promptly(tb: TestBackend) -> None:
    name, later = key(), key()
    await tb.mutation("testing_jobs:schedule", {"key": name}, as_user="ann")
    later_id = await tb.mutation("testing_jobs:schedule", {"key": later, "delaySeconds": 0.3}, as_user="ann")
    started = time.monotonic()

    async def both_ran() -> bool:
        return await count(tb, name) == 1 and await count(tb, later) == 1

    await until(both_ran, timeout=knobs.SCHEDULER_POLL_SECONDS + 3)
    assert time.monotonic() - started < knobs.SCHEDULER_POLL_SECONDS + 2
    row = await job(tb, later_id)
    assert row["started_at"] >= row["run_at"]
