"""A tenant-free counter, used by engine tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from backend import ActionCtx, AppError, MutationCtx, QueryCtx, action, internal_mutation, mutation, query


@query
async def get(ctx: QueryCtx, name: str) -> int:
    row = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    return 0 if row is None else int(row["value"])


@query
async def list_all(ctx: QueryCtx) -> list[dict[str, Any]]:
    return await ctx.db.query("counters").with_index("by_name").collect()


@mutation
async def increment(ctx: MutationCtx, name: str, by: int = 1) -> int:
    row = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    if row is None:
        await ctx.db.insert("counters", {"name": name, "value": by})
        return by
    await ctx.db.patch(row["_id"], {"value": row["value"] + by})
    return int(row["value"]) + by


@query
async def whoami(ctx: QueryCtx) -> str | None:
    """The caller's subject, so clients can see which identity their socket carries."""
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


@action
async def add_later(ctx: ActionCtx, name: str, by: int = 1, delay_ms: int = 0) -> int:
    """Increments through a mutation, then waits: an action that is observably in flight."""
    value: int = await ctx.run_mutation("counters:increment", {"name": name, "by": by})
    await asyncio.sleep(delay_ms / 1000)
    return value


@mutation
async def fail_after_write(ctx: MutationCtx, name: str) -> None:
    """Writes, then raises: nothing of it may survive."""
    await ctx.db.insert("counters", {"name": name, "value": 1})
    raise AppError({"code": "boom", "name": name}, "failed on purpose")


@internal_mutation
async def reset(ctx: MutationCtx, name: str) -> None:
    row = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    if row is not None:
        await ctx.db.delete(row["_id"])


@mutation
async def increment_two(ctx: MutationCtx, a: str, b: str, by: int = 1) -> list[int]:
    """Increments two counters in one transaction, so every snapshot shows them moved together."""
    return [await increment(ctx, a, by), await increment(ctx, b, by)]


@query
async def pair(ctx: QueryCtx, a: str, b: str) -> list[int]:
    return [await get(ctx, a), await get(ctx, b)]


@query
async def range(
    ctx: QueryCtx, lo: str, hi: str, limit: int | None = None, descending: bool = False
) -> list[dict[str, Any]]:
    """Counters with ``lo <= name < hi`` in name order; ``limit`` reads only the first rows of the range."""
    rows = (
        ctx.db.query("counters")
        .with_index("by_name", lambda q: q.gte("name", lo).lt("name", hi))
        .order("desc" if descending else "asc")
    )
    found = await (rows.collect() if limit is None else rows.take(limit))
    return [{"name": row["name"], "value": row["value"]} for row in found]


@query
async def first_in(ctx: QueryCtx, lo: str, hi: str) -> str | None:
    """The first counter name in ``[lo, hi)``: a one-row read through ``first()``."""
    row = await (
        ctx.db.query("counters").with_index("by_name", lambda q: q.gte("name", lo).lt("name", hi)).first()
    )
    return None if row is None else str(row["name"])


@query
async def below(ctx: QueryCtx, name: str, limit: int) -> int:
    """The counter's value, failing (with data) once it reaches ``limit``."""
    value = await get(ctx, name)
    if value >= limit:
        raise AppError({"code": "limitReached", "value": value}, f"counter {name!r} reached {limit}")
    return value


@query
async def padded(ctx: QueryCtx, name: str, size: int) -> dict[str, Any]:
    """The counter's value with ``size`` bytes of padding: a large result for flow-control tests."""
    if not 0 <= size <= 1_000_000:
        raise AppError({"code": "badSize"}, "size must be between 0 and 1,000,000")
    return {"value": await get(ctx, name), "pad": "x" * size}


@mutation
async def increment_slowly(ctx: MutationCtx, name: str, delay_ms: int) -> int:
    """Holds its transaction open for ``delay_ms`` before incrementing: a mutation observably in flight."""
    await asyncio.sleep(delay_ms / 1000)
    return await increment(ctx, name)


@query
async def get_slowly(ctx: QueryCtx, name: str, delay_ms: int) -> int:
    """Reads the counter, then waits ``delay_ms``: a query that runs past its time limit."""
    value = await get(ctx, name)
    await asyncio.sleep(delay_ms / 1000)
    return value
