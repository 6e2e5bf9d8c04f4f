"""Pricing: the business's time-slot rules and the quote for one class (PR1, PR2, PR5).

The quote is the one resolution in ``_quote.py``: the schedule shows it, and booking charges it.
"""

from __future__ import annotations

from typing import Any

from backend import MutationCtx, QueryCtx, mutation, query
from functions._shared.errors import conflict, not_found
from functions._shared.roles import STAFF
from functions._shared.settings import load_settings
from schema import BusinessId, InstanceId, MemberId

from ._model import SlotRuleIn, load_rules, validate
from ._quote import Quote, quote_for


@mutation(tenant="business_id", roles=STAFF)
async def set_rules(ctx: MutationCtx, business_id: BusinessId, rules: list[SlotRuleIn]) -> list[str]:
    """Replace every time-slot rule at once (validated as a set: no ambiguous ties); returns the new rule ids.

    Old rules are soft-deleted, so quotes already stored on bookings keep pointing at a readable rule.
    """
    stored = validate(rules)
    for venue_id in {r.venue_id for r in rules if r.venue_id is not None}:
        if await ctx.db.get(venue_id) is None:
            raise not_found("rules.venueId")
    for old in await load_rules(ctx.db, str(business_id)):
        await ctx.db.delete(old["_id"])
    return [await ctx.db.insert("pricing_rules", {"rule": rule, "position": i}) for i, rule in enumerate(stored)]


@query(tenant="business_id")
async def list_rules(ctx: QueryCtx, business_id: BusinessId) -> list[dict[str, Any]]:
    """The live rules in order, each ``{_id, rule}``."""
    return [{"_id": row["_id"], **row["rule"]} for row in await load_rules(ctx.db, str(business_id))]


@query(tenant="instance_id")
async def quote(ctx: QueryCtx, instance_id: InstanceId, member_id: MemberId | None = None) -> Quote:
    """What booking the class costs now and which level decided each part: instance > time slot >
    template > business default, for the amount and the credit cost alike.

    ``memberId`` must be a member of the business; member-specific surcharges (PR3) apply once
    entitlements exist.
    """
    instance = await ctx.db.get(instance_id)
    assert instance is not None
    if member_id is not None and await ctx.db.get(member_id) is None:
        raise not_found("memberId")
    if instance["status"] == "cancelled":
        raise conflict("instance_cancelled", "the class is cancelled", instanceId=instance_id)
    settings, business = await load_settings(ctx.db, instance["businessId"])
    return await quote_for(ctx, instance, business, settings)
