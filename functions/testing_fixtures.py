"""Internal fixtures for tests: members, class instances and settings without going through the admin API.

Internal and cross-tenant, so no client can reach them; tests call them with ``allow_internal=True``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from backend import Instant, MutationCtx, NotFound, internal_mutation
from functions._rules.recurrence import resolve_zone
from functions._shared.settings import DEFAULTS
from schema import BusinessId, InstanceId, MemberId


@internal_mutation(cross_tenant=True)
async def add_member(
    ctx: MutationCtx, business_id: BusinessId, subject: str, role: str = "customer", name: str | None = None
) -> MemberId:
    """An active member of the business."""
    member_id = await ctx.db.insert("members", {
        "businessId": str(business_id), "subject": subject, "role": role, "status": "active", "name": name or subject,
        "email": None,
    })
    return MemberId(member_id)


@internal_mutation(cross_tenant=True)
async def add_instance(
    ctx: MutationCtx,
    business_id: BusinessId,
    starts_at: Instant,
    duration_minutes: int = 60,
    capacity: int = 10,
    credit_cost: int | None = None,
    price_cents: int | None = None,
    timezone: str = "UTC",
    name: str = "Class",
) -> InstanceId:
    """A venue and one scheduled class instance in it, with empty counters.

    ``priceCents`` is the class's own price (the template level); ``creditCost`` is set on the instance
    itself (its override), so it applies whether or not the class has a price.
    """
    start = starts_at.to_datetime().astimezone(dt.UTC)
    local = start.astimezone(resolve_zone(timezone))
    venue_id = await ctx.db.insert("venues", {
        "businessId": str(business_id), "name": f"{name} venue", "timezone": timezone, "capacity": None,
    })
    instance_id = await ctx.db.insert("class_instances", {
        "businessId": str(business_id), "templateId": None, "venueId": venue_id, "name": name,
        "startsAt": start, "endsAt": start + dt.timedelta(minutes=duration_minutes),
        "localDate": local.date().isoformat(), "localTime": local.strftime("%H:%M"), "timezone": timezone,
        "capacity": capacity, "booked": 0, "waitlisted": 0, "status": "scheduled", "cancelReason": None,
        "priceCents": price_cents, "creditCost": credit_cost or 1, "instructorId": None, "isException": False,
        "occurrenceKey": None, "priceOverrideCents": None, "creditCostOverride": credit_cost,
    })
    return InstanceId(instance_id)


@internal_mutation(cross_tenant=True)
async def set_settings(ctx: MutationCtx, business_id: BusinessId, settings: dict[str, Any]) -> None:
    """Merge ``settings`` into the business's stored settings (None removes a key), unchecked but only
    under names that are settings, so a misspelt key fails the test instead of doing nothing."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"not settings: {unknown}")
    business = await ctx.db.get(business_id)
    if business is None:
        raise NotFound("$.args.businessId: not found")
    merged = {**(business.get("settings") or {}), **settings}
    await ctx.db.patch(business_id, {"settings": {k: v for k, v in merged.items() if v is not None}})


@internal_mutation(cross_tenant=True)
async def patch_instance(ctx: MutationCtx, instance_id: InstanceId, fields: dict[str, Any]) -> None:
    """Change an instance's fields directly (capacity, prices), as an admin edit would."""
    await ctx.db.patch(instance_id, fields)
