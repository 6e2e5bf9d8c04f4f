"""Closures: holiday and maintenance days keyed by venue-local date, never by instant (T6).

Adding a closure cancels what is scheduled on those local dates in one step and records the closure on each
class it cancelled. Lifting it brings back the classes it alone cancelled that nobody was booked into, and
lets generation fill dates that never had an instance; a class whose members were refunded comes back only
through ``classes:restore_instance``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from functions._shared.errors import invalid
from functions._shared.settings import Settings

from . import _model as m
from ._generate import closed_dates, generate

__all__ = ["MAX_DAYS", "close", "reopen"]

Doc = dict[str, Any]
MAX_DAYS = 366
# Every local date lies within these bounds of its UTC date (offsets run from UTC-12 to UTC+14).
_EARLIEST_OFFSET, _LATEST_OFFSET = timedelta(hours=14), timedelta(hours=12)


def check_dates(from_date: date, to_date: date, reason: str) -> None:
    if to_date < from_date:
        raise invalid("toDate", "must not be before fromDate")
    if (to_date - from_date).days >= MAX_DAYS:
        raise invalid("toDate", f"a closure spans at most {MAX_DAYS} days", max=MAX_DAYS)
    if not reason.strip():
        raise invalid("reason", "must not be empty: members see it on the cancelled classes")


async def instances_on(db: Any, venue_id: str | None, from_date: date, to_date: date) -> list[Doc]:
    """Instances whose venue-local date is in ``from_date``..``to_date``, read through a start-time range."""
    low = datetime.combine(from_date, time(0), UTC) - _EARLIEST_OFFSET
    high = datetime.combine(to_date + timedelta(days=1), time(0), UTC) + _LATEST_OFFSET
    if venue_id is None:
        query = db.query("class_instances").with_index("by_start", lambda q: q.gte("startsAt", low).lt("startsAt", high))
    else:
        query = db.query("class_instances").with_index(
            "by_venue_start", lambda q: q.eq("venueId", venue_id).gte("startsAt", low).lt("startsAt", high)
        )
    first, last = from_date.isoformat(), to_date.isoformat()
    rows: list[Doc] = await query.filter(lambda i: first <= i["localDate"] <= last).collect()
    return rows


async def close(ctx: Any, venue_id: str | None, from_date: date, to_date: date, reason: str) -> tuple[str, int]:
    """Record the closure and cancel every scheduled class on those dates that has not started."""
    closure_id: str = await ctx.db.insert(
        "closures",
        {"venueId": venue_id, "fromDate": from_date.isoformat(), "toDate": to_date.isoformat(), "reason": reason.strip()},
    )
    cancelled = 0
    for instance in await instances_on(ctx.db, venue_id, from_date, to_date):
        if instance["startsAt"] > ctx.now and await m.cancel(ctx, instance, f"closed: {reason.strip()}"):
            await ctx.db.patch(instance["_id"], {"closureId": closure_id})
            cancelled += 1
    return closure_id, cancelled


async def _had_bookings(db: Any, instance: Doc) -> bool:
    """Whether the cancellation ended somebody's booking or waitlist place (those members were refunded)."""
    found = await db.query("bookings").with_index(
        "by_instance_status",
        lambda q: q.eq("businessId", instance["businessId"]).eq("instanceId", instance["_id"]).eq("status", "cancelled_by_studio"),
    ).first()
    return found is not None


async def _restore_cancelled(db: Any, closure: Doc, now: datetime) -> int:
    """Bring back the classes this closure cancelled, when nothing else keeps them cancelled (T6).

    Left cancelled: classes that have started, classes cancelled for another reason or by a closure still in force,
    classes no longer on the closure's dates (moved), dates another closure still covers, and classes
    whose members were refunded (bringing those back is the explicit ``classes:restore_instance``).
    """
    first, last = date.fromisoformat(closure["fromDate"]), date.fromisoformat(closure["toDate"])
    restored = 0
    for instance in await instances_on(db, closure["venueId"], first, last):
        cause = instance.get("closureId")
        if instance["status"] != "cancelled" or cause is None:
            continue
        if cause != closure["_id"] and await db.get(cause) is not None:
            continue  # cancelled by a closure still in force
        # (cancelled by a closure lifted earlier while this one still covered the date: this one was the last)
        if instance["startsAt"] <= now or await _had_bookings(db, instance):
            continue
        day = date.fromisoformat(instance["localDate"])
        if await closed_dates(db, instance["businessId"], instance["venueId"], day, day):
            continue
        await db.patch(instance["_id"], {"status": "scheduled", "cancelReason": None, "closureId": None})
        restored += 1
    return restored


async def reopen(db: Any, business: Doc, closure: Doc, now: datetime) -> int:
    """Lift a closure; returns how many classes came back: restored ones plus never-generated ones."""
    await db.delete(closure["_id"])
    restored = await _restore_cancelled(db, closure, now)
    settings = Settings.of(business)
    if closure["venueId"] is None:
        templates = await db.query("class_templates").with_index("by_status", lambda q: q.eq("status", "active")).collect()
    else:
        templates = await (
            db.query("class_templates")
            .with_index("by_venue", lambda q: q.eq("venueId", closure["venueId"]))
            .filter(lambda t: t["status"] == "active")
            .collect()
        )
    start = date.fromisoformat(closure["fromDate"])
    created = 0
    for template in templates:
        created += await generate(db, template, settings, now, start=start, incremental=False)
    return restored + created
