"""Businesses: the tenants of the platform, and their policies."""

from __future__ import annotations

import re
from typing import Any, Literal

from backend import AppError, MutationCtx, PaginationOpts, QueryCtx, TimeZone, mutation, query
from functions._shared.errors import invalid
from functions._shared.export import ExportPage, export_page
from functions._shared.roles import STAFF
from functions._shared.settings import SNAKE_NAMES, Settings, effective, merge
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
    prevent_overlaps: bool | None = None,
    late_cancel_fee_cents: int | None = None,
    no_show_fee_cents: int | None = None,
    refill_waives_late_cancel: bool | None = None,
    strike_limit: int | None = None,
    strike_window_days: int | None = None,
    suspension_days: int | None = None,
    promotion_grace_minutes: int | None = None,
    offer_minutes: int | None = None,
    check_in_opens_minutes_before: int | None = None,
    attendance_edit_hours: int | None = None,
    expired_credit_grace_days: int | None = None,
) -> dict[str, Any]:
    """Change some policies (each given field changes one); returns the effective settings.

    Bounds and defaults are in ``functions/_shared/settings.py``. ``strikeLimit`` 0 switches strikes off,
    ``waitlistLimit`` 0 means no waitlist, ``offerMinutes`` 0 turns waitlist offers into open booking (W5). Bookings already made keep the cancellation policy they were
    made under (P2). A longer horizon is materialised at once, so classes inside the new booking window exist
    immediately. The gap policy applies to instances generated from now on.
    """
    args = locals()
    changes = {key: args[snake] for snake, key in SNAKE_NAMES.items()}
    business = await ctx.db.get(business_id)
    assert business is not None  # the engine resolved the tenant from it
    before = Settings.of(business)
    updated = merge(business.get("settings"), changes)
    if updated != (business.get("settings") or {}):
        await ctx.db.patch(business_id, {"settings": updated})
    business = {**business, "settings": updated}
    if Settings.of(business).horizon_days > before.horizon_days:
        await extend_business(ctx.db, business, ctx.now)
    return effective(updated)


@query(tenant="business_id", roles=("owner",))
async def export(ctx: QueryCtx, business_id: BusinessId, pagination_opts: PaginationOpts | None = None) -> ExportPage:
    """The business's members, credit lots, bookings and credit ledger, one page at a time (M4; owners).

    Call again with ``continueCursor`` until ``isDone``; each page says which ``part`` its rows are.
    """
    opts = pagination_opts or PaginationOpts(num_items=500)
    return await export_page(ctx.db, opts.num_items, opts.cursor)
