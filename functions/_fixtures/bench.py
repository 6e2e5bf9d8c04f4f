"""Tenant-free functions the benchmarks in ``bench/`` drive; each mirrors a shape the booking platform has."""

from __future__ import annotations

from backend import AppError, MutationCtx, QueryCtx, internal_mutation, mutation, query


@mutation
async def book(ctx: MutationCtx, slot: str, member: str) -> int:
    """A booking's shape: read the slot and the member's latest row (2 index reads), insert, patch the slot.

    The patch touches ``v``, which no index covers (like a class's booked count), so PostgreSQL can update
    the row in place (HOT) instead of adding index entries that other transactions' reads conflict with.
    """
    row = await ctx.db.query("bench_items").with_index("by_bucket", lambda q: q.eq("bucket", slot)).first()
    if row is None:
        raise AppError({"code": "no_slot", "slot": slot}, f"no slot {slot}")
    await ctx.db.query("bench_items").with_index("by_bucket_n", lambda q: q.eq("bucket", member)).order("desc").first()
    taken = int(row["v"] or 0) + 1
    await ctx.db.insert("bench_items", {"bucket": member, "n": taken})
    await ctx.db.patch(row["_id"], {"v": taken})
    return taken


@mutation
async def add(ctx: MutationCtx, bucket: str, n: int) -> str:
    """One insert: what the commit-to-subscriber and fan-out scenarios commit."""
    return await ctx.db.insert("bench_items", {"bucket": bucket, "n": n})


@query
async def latest(ctx: QueryCtx, bucket: str) -> int | None:
    """The highest ``n`` in a bucket: a subscriber sees each ``add`` as a new value."""
    row = await ctx.db.query("bench_items").with_index("by_bucket_n", lambda q: q.eq("bucket", bucket)).order(
        "desc").first()
    return None if row is None else int(row["n"])


@query
async def span(ctx: QueryCtx, bucket: str, lo: int, hi: int) -> list[int]:
    """The ``n`` values in ``[lo, hi)`` of a bucket: one index range, for invalidation precision."""
    rows = await ctx.db.query("bench_items").with_index(
        "by_bucket_n", lambda q: q.eq("bucket", bucket).gte("n", lo).lt("n", hi)).collect()
    return [int(r["n"]) for r in rows]


@internal_mutation
async def seed(ctx: MutationCtx, prefix: str, count: int, n: int = 0, start: int = 0, rows: int = 1) -> int:
    """Buckets ``prefix{start} … prefix{start+count-1}``, each with ``rows`` rows numbered from ``n``."""
    for i in range(start, start + count):
        for j in range(rows):
            await ctx.db.insert("bench_items", {"bucket": f"{prefix}{i}", "n": n + j})
    return count * rows
