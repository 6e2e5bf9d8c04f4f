"""A tenant-free counter, used by engine tests and benchmarks."""

from __future__ import annotations

from typing import Any

from backend import AppError, MutationCtx, QueryCtx, internal_mutation, mutation, query


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
