"""Businesses: the tenants of the platform."""

from __future__ import annotations

from typing import Any

from backend import AppError, MutationCtx, QueryCtx, TimeZone, mutation, query
from schema import BusinessId


@mutation
async def create(ctx: MutationCtx, name: str, timezone: TimeZone, currency: str = "USD") -> BusinessId:
    """Create a business; the caller becomes its owner."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise AppError({"code": "unauthenticated"}, "sign in to create a business")
    if not name.strip():
        raise AppError({"code": "invalid", "field": "name"}, "name must not be empty")
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
    """The business with its settings (members only)."""
    return await ctx.db.get(business_id)
