"""Crons: declared in ``functions/crons.py``, stored one row per name, fired once per slot across nodes.

>>> crons = Crons()
>>> crons.cron("nightly-horizon", "0 3 * * *", "classes:extend_horizons", {}, timezone="Europe/London")
>>> crons.interval("expire-offers", "offers:expire", {}, seconds=60)

At start each node upserts the declared crons (a row whose definition is unchanged keeps its
``next_run``; a changed one is rescheduled from now) and removes crons no longer declared. Firing claims due
rows with ``FOR UPDATE SKIP LOCKED``, inserts the job and advances ``next_run`` in one transaction, so a slot
is fired by exactly one node; a unique index on ``(cron_name, run_at)`` backs that up. Slots missed while no
node ran collapse into one catch-up firing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..postgres import Connection
from ..registry import RegisteredFunction, Registry
from ._cron import IntervalSchedule, Schedule, parse_cron
from ._jobs import insert_job, new_job_id
from ._targets import encode_args, resolve_target

__all__ = ["CronJob", "Crons", "fire_due_crons", "sync_crons"]

_MAX_NAME = 128
_FIRE_BATCH = 100


@dataclass(frozen=True)
class CronJob:
    name: str
    schedule: Schedule
    function: str | RegisteredFunction[Any, Any]
    args: dict[str, Any] = field(default_factory=dict)


class Crons:
    """The crons of an application; ``functions/crons.py`` defines ``crons = Crons()`` and declares them."""

    def __init__(self) -> None:
        self._jobs: dict[str, CronJob] = {}

    def cron(
        self,
        name: str,
        expression: str,
        fn: str | RegisteredFunction[Any, Any],
        args: dict[str, Any] | None = None,
        *,
        timezone: str = "UTC",
    ) -> None:
        """Run ``fn`` whenever the 5-field cron ``expression`` matches the wall time in ``timezone``."""
        try:
            schedule = parse_cron(expression, timezone)
        except ValueError as error:
            raise ValueError(f"cron {name!r}: {error}") from None
        self._add(CronJob(name, schedule, fn, dict(args or {})))

    def interval(
        self,
        name: str,
        fn: str | RegisteredFunction[Any, Any],
        args: dict[str, Any] | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
    ) -> None:
        """Run ``fn`` every fixed period of real time (first run one period after it is declared)."""
        try:
            schedule = IntervalSchedule(seconds + 60 * minutes + 3600 * hours)
        except ValueError as error:
            raise ValueError(f"cron {name!r}: {error}") from None
        self._add(CronJob(name, schedule, fn, dict(args or {})))

    def _add(self, job: CronJob) -> None:
        if not isinstance(job.name, str) or not job.name.strip() or len(job.name) > _MAX_NAME:
            raise ValueError(f"cron name must be a non-empty string of at most {_MAX_NAME} characters")
        if job.name in self._jobs:
            raise ValueError(f"two crons are named {job.name!r}")
        self._jobs[job.name] = job

    def __iter__(self) -> Iterator[CronJob]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)


def _schedule_from(stored: Any) -> Schedule:
    schedule: Schedule = msgspec.convert(stored, Schedule)  # type: ignore[arg-type,unused-ignore]
    return schedule


async def sync_crons(
    conn: Connection, crons: Crons, registry: Registry, now: dt.datetime, *, prune: bool
) -> list[str]:
    """Upsert the declared crons (validating each target and its args); with ``prune``, drop the others."""
    rows = []
    for job in crons:
        spec = resolve_target(registry, job.function)
        args = encode_args(spec, job.args)
        rows.append((job.name, spec.path, spec.kind, args, msgspec.to_builtins(job.schedule),
                     job.schedule.next_after(now)))
    async with conn.transaction():
        for name, path, kind, args, schedule, next_run in rows:
            await conn.execute(
                """INSERT INTO _crons (name, function_path, kind, args, schedule, next_run, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                   ON CONFLICT (name) DO UPDATE
                   SET function_path = EXCLUDED.function_path, kind = EXCLUDED.kind, args = EXCLUDED.args,
                       schedule = EXCLUDED.schedule, next_run = EXCLUDED.next_run, updated_at = EXCLUDED.updated_at
                   WHERE (_crons.function_path, _crons.kind, _crons.args, _crons.schedule)
                         IS DISTINCT FROM (EXCLUDED.function_path, EXCLUDED.kind, EXCLUDED.args, EXCLUDED.schedule)""",
                name, path, kind, args, schedule, next_run, now,
            )
        if prune:
            await conn.execute("DELETE FROM _crons WHERE NOT (name = ANY($1::text[]))", [r[0] for r in rows])
    return [r[0] for r in rows]


async def fire_due_crons(conn: Connection, now: dt.datetime) -> int:
    """Enqueue one job for every due cron slot and advance those crons; returns the jobs enqueued."""
    fired = 0
    async with conn.transaction():
        due = await conn.fetch(
            """SELECT name, function_path, kind, args, schedule, next_run FROM _crons
               WHERE next_run <= $1 ORDER BY next_run, name LIMIT $2 FOR UPDATE SKIP LOCKED""",
            now, _FIRE_BATCH,
        )
        for row in due:
            slot: dt.datetime = row["next_run"]
            schedule = _schedule_from(row["schedule"])
            following = schedule.next_after(slot)
            if following <= now:
                following = schedule.next_after(now)
            if await insert_job(
                conn, job_id=new_job_id(), path=row["function_path"], args=row["args"], kind=row["kind"],
                run_at=slot, now=now, cron_name=row["name"],
            ):
                fired += 1
            await conn.execute(
                "UPDATE _crons SET next_run = $2, last_run = $3, updated_at = $4 WHERE name = $1",
                row["name"], following, slot, now,
            )
    return fired
