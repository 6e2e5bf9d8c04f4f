"""Memberships: plans a studio sells (unlimited, or N classes a week or month) and the members who hold them.

A membership pays for a booking with ``payWith: "membership"``, and is tried first when ``payWith`` is left
out (F13). Its uses are counted per period of the business's local calendar (F12); the rules for paying and
giving a use back live in ``functions/_booking/membership.py``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from backend import Forbidden, LocalDate, MutationCtx, QueryCtx, mutation, query
from functions._booking.membership import active_on, local_date, period_of, used_in
from functions._booking.model import collect
from functions._booking.outbox import notify
from functions._shared.errors import invalid, not_found
from functions._shared.roles import STAFF
from schema import BusinessId, MemberId, MembershipId, PlanId, VenueId

MAX_PER_PERIOD = 1000
MAX_PRICE_CENTS = 100_000_000


class PlanView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    plan_id: str
    name: str
    kind: str
    period: str
    price_cents: int
    classes_per_period: int | None = None
    venue_ids: list[str] | None = None


class MembershipView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """A membership running today, with its use in the current period (``remaining`` None: unlimited)."""

    membership_id: str
    plan_id: str
    plan_name: str
    kind: str
    period: str
    starts_on: str
    period_starts_on: str
    period_ends_on: str
    used: int
    ends_on: str | None = None
    classes_per_period: int | None = None
    remaining: int | None = None
    venue_ids: list[str] | None = None


def _plan_view(row: dict[str, Any]) -> PlanView:
    return PlanView(plan_id=row["_id"], name=row["name"], kind=row["kind"], period=row["period"],
                    price_cents=row["priceCents"], classes_per_period=row.get("classesPerPeriod"),
                    venue_ids=row.get("venueIds"))


@mutation(tenant="business_id", roles=STAFF)
async def create_plan(
    ctx: MutationCtx,
    business_id: BusinessId,
    name: str,
    kind: Literal["unlimited", "limited"],
    period: Literal["week", "month"],
    price_cents: int,
    classes_per_period: int | None = None,
    venue_ids: list[VenueId] | None = None,
) -> PlanId:
    """A plan: ``unlimited`` classes, or ``limited`` to ``classesPerPeriod`` a ``week`` or ``month``,
    optionally only at some venues (staff)."""
    if not name.strip():
        raise invalid("name", "must not be empty")
    if not 0 <= price_cents <= MAX_PRICE_CENTS:
        raise invalid("priceCents", f"must be between 0 and {MAX_PRICE_CENTS}", min=0, max=MAX_PRICE_CENTS)
    if kind == "limited":
        if classes_per_period is None or not 1 <= classes_per_period <= MAX_PER_PERIOD:
            raise invalid("classesPerPeriod", f"a limited plan needs between 1 and {MAX_PER_PERIOD} classes per period",
                          min=1, max=MAX_PER_PERIOD)
    elif classes_per_period is not None:
        raise invalid("classesPerPeriod", "an unlimited plan has no limit per period")
    venues: list[str] | None = None
    if venue_ids:
        venues = []
        for i, venue_id in enumerate(venue_ids):
            venue = await ctx.db.get(venue_id)
            if venue is None:
                raise not_found(f"venueIds[{i}]")
            if venue["_id"] not in venues:
                venues.append(venue["_id"])
    plan_id = await ctx.db.insert("membership_plans", {
        "name": name.strip(), "kind": kind, "period": period, "priceCents": price_cents,
        "classesPerPeriod": classes_per_period, "venueIds": venues,
    })
    return PlanId(plan_id)


@query(tenant="business_id")
async def list_plans(ctx: QueryCtx, business_id: BusinessId) -> list[PlanView]:
    """The business's plans by name (every member may see what the studio sells)."""
    return [_plan_view(row) for row in await collect(ctx.db.query("membership_plans").with_index("by_name"))]


@mutation(tenant="business_id", roles=STAFF)
async def assign(
    ctx: MutationCtx,
    business_id: BusinessId,
    member_id: MemberId,
    plan_id: PlanId,
    starts_on: LocalDate,
    ends_on: LocalDate | None = None,
) -> MembershipId:
    """Give a member a plan from ``startsOn`` to ``endsOn`` (inclusive local dates; open-ended without it)."""
    member = await ctx.db.get(member_id)
    if member is None:
        raise not_found("memberId")
    plan = await ctx.db.get(plan_id)
    if plan is None:
        raise not_found("planId")
    if ends_on is not None and str(ends_on) < str(starts_on):
        raise invalid("endsOn", "must not be before startsOn", startsOn=str(starts_on))
    business_id_, member_id_ = member["businessId"], member["_id"]  # plain str: they go into JSON rows
    membership_id = await ctx.db.insert("memberships", {
        "memberId": member_id_, "planId": plan["_id"], "startsOn": str(starts_on),
        "endsOn": None if ends_on is None else str(ends_on),
    })
    await notify(ctx, business_id_, "membership_assigned", member_id_, membershipId=membership_id,
                 planId=plan["_id"], startsOn=str(starts_on), endsOn=None if ends_on is None else str(ends_on))
    return MembershipId(membership_id)


async def _whose(ctx: QueryCtx, member_id: str) -> dict[str, Any]:
    """Customers read their own memberships and their dependants'; staff read anyone's."""
    caller = ctx.member
    assert caller is not None
    if member_id == caller["_id"]:
        return caller
    member = await ctx.db.get(member_id)
    if member is None:
        raise not_found("memberId")
    if caller["role"] not in STAFF and member.get("ownerId") != caller["_id"]:
        raise Forbidden("customers may only see their own memberships")
    return member


@query(tenant="business_id")
async def for_member(ctx: QueryCtx, business_id: BusinessId, member_id: MemberId) -> list[MembershipView]:
    """The member's memberships running today (business-local), each with ``used``/``remaining`` in the
    current period and the period's bounds."""
    member = await _whose(ctx, member_id)
    business = await ctx.db.get(business_id)
    assert business is not None
    today = local_date(ctx.now, business["timezone"])
    rows = await collect(ctx.db.query("memberships").with_index(
        "by_member_start", lambda q: q.eq("memberId", member["_id"]).lte("startsOn", today.isoformat())
    ))
    views: list[MembershipView] = []
    for row in rows:
        if not active_on(row, today):
            continue
        plan = await ctx.db.get(row["planId"], include_deleted=True)
        if plan is None:
            continue
        period = period_of(plan["period"], today)
        used, _ = await used_in(ctx.db, business["_id"], row["_id"], period)
        limit = plan.get("classesPerPeriod") if plan["kind"] == "limited" else None
        views.append(MembershipView(
            membership_id=row["_id"], plan_id=plan["_id"], plan_name=plan["name"], kind=plan["kind"],
            period=plan["period"], starts_on=row["startsOn"], ends_on=row.get("endsOn"),
            period_starts_on=period.starts_on.isoformat(), period_ends_on=period.ends_on.isoformat(), used=used,
            classes_per_period=limit, remaining=None if limit is None else max(0, limit - used),
            venue_ids=plan.get("venueIds"),
        ))
    return views

