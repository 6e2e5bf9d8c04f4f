"""Attendance: check-in, no-show marks by staff and by the after-class job (P1, P6, P9, W10).

A no-show is a confirmed booking neither checked in nor cancelled once ``startsAt + grace`` has passed; the
job looks only at classes that have ended, and only at ``confirmed`` rows, so it never marks a checked-in
member and re-running it charges nothing twice. Staff may correct a mark either way within the edit window
after class; the reversal removes the penalty (P6). Every change is an audited write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from backend import AppError
from functions._rules.policy import is_no_show
from functions._shared.settings import BookingPolicy, Settings, load_settings

from .model import plain
from .offers import expire
from .outbox import notify
from .penalties import penalty_for, record_strike
from .seating import bump

__all__ = ["check_in", "lapse_waitlist", "mark_due", "mark_no_show"]


def _refuse(code: str, message: str, booking: dict[str, Any], **extra: Any) -> AppError:
    return AppError(plain({"code": code, "bookingId": booking["_id"], "status": booking["status"], **extra}), message)


def _edit_deadline(booking: dict[str, Any], settings: Settings) -> dt.datetime:
    ends: dt.datetime = booking["endsAt"]
    return ends + dt.timedelta(hours=settings.attendance_edit_hours)


async def check_in(ctx: Any, booking: dict[str, Any]) -> dict[str, Any]:
    """Confirmed → checked in; a no-show mark is reversed (and its penalty removed) inside the edit window."""
    settings, _ = await load_settings(ctx.db, booking["businessId"])
    now: dt.datetime = ctx.now
    if booking["status"] == "checked_in":
        return {"status": "checked_in", "checkedInAt": booking["checkedInAt"]}
    if booking["status"] not in ("confirmed", "no_show"):
        raise _refuse("not_checkable", f"a booking that is {booking['status']} cannot be checked in", booking)
    opens = booking["startsAt"] - dt.timedelta(minutes=settings.check_in_opens_minutes_before)
    if now < opens:
        raise _refuse("check_in_not_open", "check-in has not opened yet", booking, opensAt=opens)
    deadline = _edit_deadline(booking, settings)
    if now >= deadline:
        raise _refuse("attendance_locked", "attendance can no longer be changed", booking, lockedAt=deadline)
    reversed_penalty = booking.get("penalty") if booking["status"] == "no_show" else None
    await ctx.db.patch(booking["_id"], {"status": "checked_in", "checkedInAt": now, "penalty": None})
    if reversed_penalty and reversed_penalty.get("feeCents"):
        await notify(ctx, booking["businessId"], "fee_reversed", booking["memberId"], bookingId=booking["_id"],
                     feeCents=reversed_penalty["feeCents"], penaltyKind="no_show")
    return {"status": "checked_in", "checkedInAt": now}


async def mark_no_show(ctx: Any, booking: dict[str, Any], *, by_job: bool = False) -> dict[str, Any]:
    """Confirmed (or, as a staff correction, checked in) → no-show with the P3 penalty of its policy."""
    settings, _ = await load_settings(ctx.db, booking["businessId"])
    now: dt.datetime = ctx.now
    if booking["status"] == "no_show":
        return {"status": "no_show", "penalty": booking.get("penalty")}
    if booking["status"] not in ("confirmed", "checked_in"):
        raise _refuse("not_markable", f"a booking that is {booking['status']} cannot be a no-show", booking)
    policy = BookingPolicy.from_json(booking.get("policy"), settings.policy())
    # Nobody is a no-show before start + grace (P1): a member arriving a few minutes late is not absent.
    possible_at = booking["startsAt"] + dt.timedelta(minutes=policy.no_show_grace_minutes)
    if now < possible_at:
        raise _refuse("no_show_too_early", "a no-show can be recorded only once the grace period after the "
                      "start has passed", booking, startsAt=booking["startsAt"], possibleAt=possible_at,
                      graceMinutes=policy.no_show_grace_minutes)
    if not by_job and now >= _edit_deadline(booking, settings):
        raise _refuse("attendance_locked", "attendance can no longer be changed", booking)
    penalty = penalty_for(booking, "no_show", policy)
    await ctx.db.patch(booking["_id"], {"status": "no_show", "checkedInAt": None, "penalty": penalty})
    await notify(ctx, booking["businessId"], "no_show_recorded", booking["memberId"], bookingId=booking["_id"],
                 instanceId=booking["instanceId"], penalty=penalty)
    if penalty.get("feeCents"):
        await notify(ctx, booking["businessId"], "fee_charged", booking["memberId"], bookingId=booking["_id"],
                     feeCents=penalty["feeCents"], penaltyKind="no_show")
    await record_strike(ctx, booking["businessId"], booking["memberId"], settings)
    return {"status": "no_show", "penalty": penalty}


async def mark_due(ctx: Any, business_id: str, limit: int) -> list[str]:
    """Mark the no-shows of one business's ended classes; at most ``limit`` per run, oldest first."""
    now: dt.datetime = ctx.now
    rows = await ctx.db.query("bookings").with_index(
        "by_status_start", lambda q: q.eq("businessId", business_id).eq("status", "confirmed").lt("startsAt", now)
    ).take(limit)
    settings, _ = await load_settings(ctx.db, business_id)
    marked: list[str] = []
    for row in rows:
        if row["endsAt"] > now:
            continue
        policy = BookingPolicy.from_json(row.get("policy"), settings.policy())
        if is_no_show(now, row["startsAt"], policy.no_show_grace_minutes, checked_in=False, cancelled=False):
            await mark_no_show(ctx, row, by_job=True)
            marked.append(row["_id"])
    return marked


async def lapse_waitlist(ctx: Any, business_id: str, limit: int) -> list[str]:
    """Waitlist entries and offers of classes that have started end as ``withdrawn``/``lapsed_at_start``
    (W5, W9, W10)."""
    now: dt.datetime = ctx.now
    rows = await ctx.db.query("bookings").with_index(
        "by_status_start", lambda q: q.eq("businessId", business_id).eq("status", "waitlisted").lte("startsAt", now)
    ).take(limit)
    lapsed: list[str] = []
    for row in rows:
        await ctx.db.patch(row["_id"], {
            "status": "withdrawn", "activeKey": None, "cancelledAt": now, "reason": "lapsed_at_start",
        })
        instance = await ctx.db.get(row["instanceId"])
        if instance is not None:
            await bump(ctx, instance, waitlisted=-1)
        await notify(ctx, business_id, "waitlist_lapsed", row["memberId"], bookingId=row["_id"],
                     instanceId=row["instanceId"])
        lapsed.append(row["_id"])
    offered = await ctx.db.query("bookings").with_index(
        "by_status_start", lambda q: q.eq("businessId", business_id).eq("status", "offered").lte("startsAt", now)
    ).take(limit)
    for row in offered:  # an offer's hold ends at the start (W5); its own expiry job normally got there first
        if await expire(ctx, row):
            lapsed.append(row["_id"])
    return lapsed
