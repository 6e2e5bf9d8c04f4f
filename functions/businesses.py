"""Businesses: the tenants of the platform, and their policies."""

from __future__ import annotations

import re
from typing import Any, Literal

from backend import AppError, MutationCtx, QueryCtx, TimeZone, mutation, query
from functions._shared.errors import invalid
from functions._shared.roles import STAFF
from functions._shared.settings import Settings, effective, merge
from functions.classes._generate import extend_business
from schema import BusinessId

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@mutation
async def create(ctx: MutationCtx, name: str, timezone: TimeZone, currency: str = "USD") -> BusinessId:
    """Create a business; the caller becomes its owner (an active ``owner`` membership)."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise AppError({"code": "unauthenticated"}, "sign in to create a business")
    if not name.strip():
        raise invalid("name", "must not be empty")
    if not _CURRENCY.match(currency):
        raise invalid("currency", "must be an ISO 4217 code such as 'GBP'")
    business_id = await ctx.db.insert(
        "businesses", {"name": name.strip(), "timezone": str(timezone), "currency": currency, "settings": {}}
    )
    await ctx.db.insert(
        "members",
        {"businessId": business_id, "subject": identity.subject, "role": "owner", "status": "active",
         "name": identity.name, "email": identity.email},
    )
    return BusinessId(business_id)


@query(tenant="business_id")
async def get(ctx: QueryCtx, business_id: BusinessId) -> dict[str, Any] | None:
    """The business with its settings, defaults filled in (members only)."""
    business = await ctx.db.get(business_id)
    if business is None:
        return None
    return {**business, "settings": effective(business.get("settings"))}


@mutation(tenant="business_id", roles=STAFF)
async def update_settings(
    ctx: MutationCtx,
    business_id: BusinessId,
    booking_opens_days_before: int | None = None,
    booking_closes_minutes_before: int | None = None,
    late_cancel_minutes: int | None = None,
    auto_promote_cutoff_minutes: int | None = None,
    waitlist_limit: int | None = None,
    no_show_grace_minutes: int | None = None,
    horizon_days: int | None = None,
    gap_policy: Literal["skip", "shift"] | None = None,
    default_price_cents: int | None = None,
    default_credit_cost: int | None = None,
) -> dict[str, Any]:
    """Change some policies (each given field changes one); returns the effective settings.

    A longer horizon is materialised at once, so classes inside the new booking window exist immediately.
    The gap policy applies to instances generated from now on; existing instances are left as they are.
    """
    business = await ctx.db.get(business_id)
    assert business is not None  # the engine resolved the tenant from it
    before = Settings.of(business)
    changes = {
        "bookingOpensDaysBefore": booking_opens_days_before,
        "bookingClosesMinutesBefore": booking_closes_minutes_before,
        "lateCancelMinutes": late_cancel_minutes,
        "autoPromoteCutoffMinutes": auto_promote_cutoff_minutes,
        "waitlistLimit": waitlist_limit,
        "noShowGraceMinutes": no_show_grace_minutes,
        "horizonDays": horizon_days,
        "gapPolicy": gap_policy,
        "defaultPriceCents": default_price_cents,
        "defaultCreditCost": default_credit_cost,
    }
    updated = merge(business.get("settings"), changes)
    if updated != (business.get("settings") or {}):
        await ctx.db.patch(business_id, {"settings": updated})
    business = {**business, "settings": updated}
    if Settings.of(business).horizon_days > before.horizon_days:
        await extend_business(ctx.db, business, ctx.now)
    return effective(updated)
