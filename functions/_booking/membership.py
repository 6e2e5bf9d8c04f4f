"""Memberships as a way to pay: which membership covers a class, its use per period, and giving a use back
(F5, F12-F14).

A period is a week (Monday to Sunday) or a calendar month of the business's local calendar, and a class
counts in the period that holds its local start date, not the day it was booked (F5). Uses are counted in
one ``membership_usage`` row per (membership, period): a booking that takes the last use reads and writes
that row, so two bookings racing for it cannot both commit (the loser is retried and finds none left).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from functions._rules.recurrence import resolve_zone

from .model import collect

__all__ = ["Cover", "Period", "covering", "find_cover", "local_date", "period_of", "release", "take_use", "used_in"]


@dataclass(frozen=True, slots=True)
class Period:
    """One usage period: ``[starts_on, ends_on]`` local dates, both inclusive."""

    starts_on: dt.date
    ends_on: dt.date


def period_of(kind: str, day: dt.date) -> Period:
    """The week (ISO, from Monday) or calendar month that holds ``day``."""
    if kind == "week":
        start = day - dt.timedelta(days=day.weekday())
        return Period(start, start + dt.timedelta(days=6))
    start = day.replace(day=1)
    following = (start + dt.timedelta(days=32)).replace(day=1)
    return Period(start, following - dt.timedelta(days=1))


def local_date(instant: dt.datetime, tz: str) -> dt.date:
    return instant.astimezone(resolve_zone(tz)).date()


def usage_key(membership_id: str, period: Period) -> str:
    return f"{membership_id}|{period.starts_on.isoformat()}"


async def used_in(db: Any, business_id: str, membership_id: str, period: Period) -> tuple[int, dict[str, Any] | None]:
    """Uses counted in ``period`` and the counter row (None before the first use)."""
    key = usage_key(membership_id, period)
    row: dict[str, Any] | None = await db.query("membership_usage").with_index(
        "by_usage_key", lambda q: q.eq("businessId", business_id).eq("usageKey", key)
    ).first()
    return (0 if row is None else int(row["used"])), row


def active_on(membership: dict[str, Any], day: dt.date) -> bool:
    """Whether the membership runs on local ``day`` (both ends inclusive)."""
    iso = day.isoformat()
    return membership["startsOn"] <= iso and (membership.get("endsOn") is None or iso <= membership["endsOn"])


def covers_venue(plan: dict[str, Any], venue_id: str) -> bool:
    venues = plan.get("venueIds")
    return not venues or venue_id in venues


async def covering(db: Any, business_id: str, member_id: str, day: dt.date) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The member's memberships running on ``day`` with their plans, oldest start first."""
    rows = await collect(db.query("memberships").with_index(
        "by_member_start",
        lambda q: q.eq("businessId", business_id).eq("memberId", member_id).lte("startsOn", day.isoformat()),
    ))
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for row in rows:
        if not active_on(row, day):
            continue
        plan = await db.get(row["planId"])
        if plan is not None:
            found.append((row, plan))
    return found


@dataclass(slots=True)
class Cover:
    """The outcome of looking for a membership to pay for a class: ``membership`` when one can, else why not."""

    membership: dict[str, Any] | None = None
    period: Period | None = None
    reason: str | None = None  # no_membership | membership_limit_reached
    details: dict[str, Any] | None = None


async def find_cover(db: Any, business: dict[str, Any], member_id: str, instance: dict[str, Any]) -> Cover:
    """The first membership that covers the class and has a use left in the class's period (unlimited
    plans first, then limited ones in start order); otherwise the reason none can pay (F9)."""
    day = local_date(instance["startsAt"], business["timezone"])
    options = [(m, p) for m, p in await covering(db, business["_id"], member_id, day)
               if covers_venue(p, instance["venueId"])]
    options.sort(key=lambda mp: (mp[1]["kind"] != "unlimited", mp[0]["startsOn"], mp[0]["_id"]))
    full: list[tuple[dict[str, Any], Period, int]] = []
    for membership, plan in options:
        period = period_of(plan["period"], day)
        if plan["kind"] == "unlimited":
            return Cover(membership, period)
        used, _ = await used_in(db, business["_id"], membership["_id"], period)
        if used < int(plan["classesPerPeriod"] or 0):
            return Cover(membership, period)
        full.append((membership, period, used))
    if not full:
        return Cover(reason="no_membership")
    membership, period, used = min(full, key=lambda f: f[1].ends_on)
    return Cover(reason="membership_limit_reached", details={
        "membershipId": membership["_id"], "periodEndsOn": period.ends_on.isoformat(), "used": used,
    })


async def take_use(ctx: Any, business_id: str, membership_id: str, period: Period) -> str:
    """Count one use in the period (the counter row is created by the first use); returns the counter's key.

    Unlimited plans are counted too, so ``memberships:for_member`` and the reports can show their use.
    """
    used, row = await used_in(ctx.db, business_id, membership_id, period)
    key = usage_key(membership_id, period)
    if row is None:
        await ctx.db.insert("membership_usage", {
            "businessId": business_id, "membershipId": membership_id, "periodStart": period.starts_on.isoformat(),
            "used": 1, "usageKey": key,
        })
    else:
        await ctx.db.patch(row["_id"], {"used": used + 1})
    return key


async def release(ctx: Any, booking: dict[str, Any]) -> dict[str, Any]:
    """Give back the use a booking took (an in-policy cancel, a studio cancel, a waived penalty), in the
    period it was counted in (the class may have moved since)."""
    key = booking.get("usageKey")
    row = None if key is None else await ctx.db.query("membership_usage").with_index(
        "by_usage_key", lambda q: q.eq("businessId", booking["businessId"]).eq("usageKey", key)
    ).first()
    if row is None or int(row["used"]) <= 0:
        return {"membershipUses": 0}
    await ctx.db.patch(row["_id"], {"used": int(row["used"]) - 1})
    await ctx.db.patch(booking["_id"], {"usageKey": None})  # released once, whoever asks again
    return {"membershipUses": 1, "membershipId": booking.get("membershipId")}
