"""Scenario 6: schedule read, ``classes:list_instances`` for one week against 2 years of classes.

A business with a 730-day horizon and daily classes materialised through the real functions
(``businesses:create``, ``venues:create``, ``classes:create_template``). The week is read through the engine
(the runner, in this process) and, as the baseline, by raw asyncpg running the same index-range SELECT.
Rows scanned are PostgreSQL's own count (``pg_stat_xact_user_tables`` before and after the call, in its
transaction: heap rows fetched by index scans plus rows read by sequential scans of ``class_instances``);
they must equal the rows returned.
"""

from __future__ import annotations

import datetime as dt
import time

from .harness import percentile
from .report import Report, Row

SCANNED = ("SELECT COALESCE(sum(idx_tup_fetch), 0) + COALESCE(sum(seq_tup_read), 0) "
           "FROM pg_stat_xact_user_tables WHERE relname = 'class_instances'")


def _baseline_sql() -> str:
    from backend.server import load_schema

    table = load_schema().table("class_instances")
    index = table.index("by_start")
    columns = [table.column_of(k) for k in index.keys]
    select = ", ".join(f'"{c.column}"' for c in table.columns)
    return (f'SELECT {select} FROM "class_instances" WHERE "{columns[0]}" = $1 AND "{columns[1]}" >= $2 '
            f'AND "{columns[1]}" < $3 AND NOT deleted ORDER BY ' + ", ".join(f'"{c}" ASC' for c in columns))


async def run(report: Report, quick: bool) -> None:
    from backend.testing import TestBackend

    templates, calls = (4, 30) if quick else (10, 100)
    async with TestBackend(run_scheduler=False, serve=False) as tb:
        owner = "owner"
        business = await tb.mutation("businesses:create", {"name": "Bench Studio", "timezone": "Europe/London",
                                                           "currency": "GBP"}, as_user=owner)
        await tb.mutation("businesses:update_settings", {"businessId": business, "horizonDays": 730}, as_user=owner)
        venue = await tb.mutation("venues:create", {"businessId": business, "name": "Main hall"}, as_user=owner)
        today = dt.datetime.now(dt.UTC).date()
        began = time.monotonic()
        for i in range(templates):
            await tb.mutation("classes:create_template", {
                "businessId": business, "venueId": venue, "name": f"Class {i}", "startDate": today.isoformat(),
                "startTime": f"{6 + i:02d}:30", "durationMinutes": 45, "rrule": "FREQ=DAILY", "capacity": 20,
            }, as_user=owner)
        seed_seconds = time.monotonic() - began
        total = (await tb.sql("SELECT count(*) FROM class_instances"))[0][0]
        week_start = dt.datetime.combine(today + dt.timedelta(days=365), dt.time(0, 0), dt.UTC)
        args = {"businessId": business, "from": week_start.isoformat(),
                "to": (week_start + dt.timedelta(days=7)).isoformat()}
        runner = tb.runner
        spec = runner.resolve("classes:list_instances", "query", False)
        kwargs = runner.validate_args(spec, args)
        identity = tb.identity(owner)
        assert tb.backend is not None and tb.backend.pool is not None
        ours: list[float] = []
        base: list[float] = []
        sql = _baseline_sql()
        async with tb.backend.pool.acquire() as conn:
            # The view also holds counts not yet flushed from earlier transactions: take the difference.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                before = int(await conn.fetchval(SCANNED))
                outcome = await runner.execute_query(conn, spec, kwargs, identity)
                scanned = int(await conn.fetchval(SCANNED)) - before
            if outcome.error is not None:
                raise RuntimeError(f"list_instances failed: {outcome.error}")
            returned = len(outcome.value)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                before = int(await conn.fetchval(SCANNED))
                raw_rows = await conn.fetch(sql, business, week_start, week_start + dt.timedelta(days=7))
                raw_scanned = int(await conn.fetchval(SCANNED)) - before
            for _ in range(calls):  # interleaved: the same noise for both
                t0 = time.perf_counter()
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    await runner.execute_query(conn, spec, kwargs, identity)
                ours.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    await conn.fetch(sql, business, week_start, week_start + dt.timedelta(days=7))
                base.append((time.perf_counter() - t0) * 1000)
    cond = (f"{total:,} instances over 730 days ({templates} daily classes), one week read; "
            f"made in {seed_seconds:.0f} s through classes:create_template")
    report.add(Row("6 schedule read", "rows scanned / rows returned", scanned, returned, "rows",
                   f"{cond}; raw SELECT scanned {raw_scanned} for {len(raw_rows)} rows", "= 1x",
                   scanned == returned))
    report.add(Row("6 schedule read", "latency p50", percentile(ours, 50), percentile(base, 50), "ms",
                   f"{calls} reads each, in-process runner vs raw asyncpg (same SELECT, same snapshot kind)"))
    report.data["schedule"] = {"scanned": scanned, "returned": returned, "total": total,
                               "p50": percentile(ours, 50), "base_p50": percentile(base, 50)}
