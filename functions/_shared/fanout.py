"""Crons that touch every business run as one small job per business, never one mutation over all of them.

A single mutation over every tenant grows with the number of tenants until it passes the engine's per-call
time, scan and write limits, and then the cron stops doing anything at all. Instead the cron's own run pages
through the businesses, schedules the real work once per business, and schedules itself for the next page:
each job stays small however many tenants there are.
"""

from __future__ import annotations

from typing import Any

from backend import MutationCtx

__all__ = ["PAGE", "fan_out"]

#: Businesses one fan-out run schedules jobs for (each a scheduled job of its own).
PAGE = 200


async def fan_out(ctx: MutationCtx, path: str, cursor: str | None, args: dict[str, Any] | None = None) -> int:
    """Schedule ``path`` with ``{businessId, **args}`` for the next page of businesses after ``cursor``, and
    this fan-out again for the page after it; returns how many businesses this run scheduled."""
    page = await ctx.db.query("businesses").paginate({"numItems": PAGE, "cursor": cursor})
    for business in page.page:
        await ctx.scheduler.run_after(0, path, {**(args or {}), "businessId": business["_id"]})
    if not page.is_done:
        await ctx.scheduler.run_after(0, path, {**(args or {}), "cursor": page.continue_cursor})
    return len(page.page)
