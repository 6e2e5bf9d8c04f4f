"""Venues: the places classes happen; each has its own IANA time zone (T1)."""

from __future__ import annotations

import builtins
from typing import Any

from backend import MutationCtx, QueryCtx, TimeZone, mutation, query
from functions._shared.errors import conflict, invalid, not_found
from functions._shared.roles import STAFF
from schema import BusinessId, VenueId

_MAX_CAPACITY = 10_000


def _check(name: str | None, capacity: int | None) -> None:
    if name is not None and not name.strip():
        raise invalid("name", "must not be empty")
    if capacity is not None and not 1 <= capacity <= _MAX_CAPACITY:
        raise invalid("capacity", f"must be between 1 and {_MAX_CAPACITY}", min=1, max=_MAX_CAPACITY)


async def _active_templates(ctx: MutationCtx, venue_id: str) -> builtins.list[dict[str, Any]]:
    return await (
        ctx.db.query("class_templates")
        .with_index("by_venue", lambda q: q.eq("venueId", venue_id))
        .filter(lambda t: t["status"] == "active")
        .take(1)
    )


@mutation(tenant="business_id", roles=STAFF)
async def create(
    ctx: MutationCtx,
    business_id: BusinessId,
    name: str,
    timezone: TimeZone | None = None,
    capacity: int | None = None,
) -> VenueId:
    """Add a venue; its time zone defaults to the business's."""
    _check(name, capacity)
    business = await ctx.db.get(business_id)
    assert business is not None
    venue_id = await ctx.db.insert(
        "venues", {"name": name.strip(), "timezone": str(timezone or business["timezone"]), "capacity": capacity}
    )
    return VenueId(venue_id)


@mutation(tenant="venue_id", roles=STAFF)
async def update(
    ctx: MutationCtx,
    venue_id: VenueId,
    name: str | None = None,
    timezone: TimeZone | None = None,
    capacity: int | None = None,
) -> None:
    """Rename, resize or re-zone a venue.

    The time zone can only change while no active template runs there: its instances were placed in the old
    zone's wall time, and moving them silently would shift every booked class.
    """
    _check(name, capacity)
    venue = await ctx.db.get(venue_id)
    if venue is None:
        raise not_found("venueId")
    changes: dict[str, Any] = {}
    if name is not None and name.strip() != venue["name"]:
        changes["name"] = name.strip()
    if capacity is not None and capacity != venue["capacity"]:
        changes["capacity"] = capacity
    if timezone is not None and str(timezone) != venue["timezone"]:
        if await _active_templates(ctx, venue_id):
            raise conflict(
                "venue_has_schedule", "end the venue's class series before changing its time zone", venueId=venue_id
            )
        changes["timezone"] = str(timezone)
    if changes:
        await ctx.db.patch(venue_id, changes)


@mutation(tenant="venue_id", roles=STAFF)
async def remove(ctx: MutationCtx, venue_id: VenueId) -> None:
    """Soft-delete a venue that no longer has an active class series."""
    venue = await ctx.db.get(venue_id)
    if venue is None:
        raise not_found("venueId")
    if await _active_templates(ctx, venue_id):
        raise conflict("venue_has_schedule", "end the venue's class series before removing it", venueId=venue_id)
    await ctx.db.delete(venue_id)


@query(tenant="business_id")
async def list(ctx: QueryCtx, business_id: BusinessId) -> builtins.list[dict[str, Any]]:
    """The business's venues by name."""
    return await ctx.db.query("venues").with_index("by_name").collect()
