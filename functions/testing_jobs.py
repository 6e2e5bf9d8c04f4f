"""Functions the scheduler's tests schedule and inspect; they touch only the tenant-free ``counters`` table."""

from __future__ import annotations

import asyncio
from typing import Any

from backend import (
    ActionCtx,
    AppError,
    MutationCtx,
    ScheduledJob,
    internal_action,
    internal_mutation,
    mutation,
)
from schema import BusinessId

#: Gates a test opens to let ``slow_action`` finish, by key.
GATES: dict[str, asyncio.Event] = {}


async def _bump(ctx: MutationCtx, name: str) -> int:
    row = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    if row is None:
        await ctx.db.insert("counters", {"name": name, "value": 1})
        return 1
    await ctx.db.patch(row["_id"], {"value": row["value"] + 1})
    return int(row["value"]) + 1


@mutation
async def schedule(ctx: MutationCtx, key: str, delay_seconds: float = 0, fail: bool = False) -> str:
    """Schedule ``record(key)``; with ``fail`` the mutation raises afterwards, so the job must vanish."""
    if ctx.auth.get_user_identity() is None:
        raise AppError({"code": "unauthenticated"}, "sign in to schedule")
    job_id = await ctx.scheduler.run_after(delay_seconds, record, {"key": key})
    if fail:
        raise AppError({"code": "boom"}, "failed after scheduling")
    return str(job_id)


@internal_mutation
async def schedule_many(ctx: MutationCtx, keys: list[str], delay_seconds: float = 0) -> list[str]:
    return [str(await ctx.scheduler.run_after(delay_seconds, "testing_jobs:record", {"key": k})) for k in keys]


@internal_mutation
async def schedule_call(
    ctx: MutationCtx, fn: str, args: dict[str, Any], delay_seconds: float | None = None, at: str | None = None
) -> str:
    if at is not None:
        return str(await ctx.scheduler.run_at(at, fn, args))
    return str(await ctx.scheduler.run_after(delay_seconds or 0, fn, args))


@internal_action
async def schedule_from_action(ctx: ActionCtx, key: str, delay_seconds: float = 0) -> str:
    return str(await ctx.scheduler.run_after(delay_seconds, "testing_jobs:record", {"key": key}))


@internal_mutation
async def record(ctx: MutationCtx, key: str) -> int:
    """Count one run under ``key`` (a second run of the same job would show as 2)."""
    return await _bump(ctx, key)


@internal_mutation
async def record_caller(ctx: MutationCtx, key: str) -> str:
    identity = ctx.auth.get_user_identity()
    subject = "anonymous" if identity is None else str(identity.subject)
    await _bump(ctx, f"{key}:{subject}")
    return subject


@internal_mutation
async def fail_job(ctx: MutationCtx, key: str) -> None:
    """Writes, then raises: the write must not survive and the job must end failed."""
    await _bump(ctx, key)
    raise AppError({"code": "job_failed", "key": key}, "failed on purpose")


@internal_action
async def slow_action(ctx: ActionCtx, key: str) -> str:
    """Counts its start, waits for the test to open ``GATES[key]``, then counts its end."""
    await ctx.run_mutation(record, {"key": f"{key}:started"})
    gate = GATES.setdefault(key, asyncio.Event())
    await gate.wait()
    await ctx.run_mutation(record, {"key": f"{key}:finished"})
    return f"done:{key}"


@internal_mutation
async def cancel(ctx: MutationCtx, job_id: str) -> bool:
    return bool(await ctx.scheduler.cancel(job_id))


@internal_mutation
async def inspect(ctx: MutationCtx, job_id: str) -> ScheduledJob | None:
    job: ScheduledJob | None = await ctx.scheduler.get(job_id)
    return job


@internal_mutation
async def list_jobs(ctx: MutationCtx, status: str | None = None, cron: str | None = None) -> list[ScheduledJob]:
    jobs: list[ScheduledJob] = await ctx.scheduler.list(status=status, cron=cron)
    return jobs


@internal_mutation(tenant="business_id")
async def schedule_in_business(ctx: MutationCtx, business_id: BusinessId, key: str, delay_seconds: float = 60) -> str:
    return str(await ctx.scheduler.run_after(delay_seconds, record, {"key": key}))


@internal_mutation(tenant="business_id")
async def inspect_in_business(ctx: MutationCtx, business_id: BusinessId, job_id: str) -> ScheduledJob | None:
    job: ScheduledJob | None = await ctx.scheduler.get(job_id)
    return job


@internal_mutation(tenant="business_id")
async def cancel_in_business(ctx: MutationCtx, business_id: BusinessId, job_id: str) -> bool:
    return bool(await ctx.scheduler.cancel(job_id))
