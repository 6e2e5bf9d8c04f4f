"""Reports: attendance per class and revenue over a span of class starts (R1, R2).

Both are plain queries, so a client subscribed to one sees it change as bookings do. Every read is an index
range bounded by the span: classes through ``by_start``/``by_venue_start``, bookings through
``by_status_start`` once per status, so the rows scanned are the rows reported on, whatever the size of the
rest of the business's history. A span is at most ``MAX_SPAN`` long.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any

import msgspec

from backend import Instant, QueryCtx, query
from functions._booking.model import SEATED, collect
from functions._booking.penalties import in_force
from functions._shared.errors import invalid, not_found
from functions._shared.roles import STAFF, STAFF_AND_INSTRUCTORS
from schema import BusinessId, VenueId

MAX_SPAN = dt.timedelta(days=92)
Doc = dict[str, Any]


def _span(from_: Instant, to: Instant) -> tuple[dt.datetime, dt.datetime]:
    low, high = from_.to_datetime(), to.to_datetime()
    if high <= low:
        raise invalid("to", "must be after from")
    if high - low > MAX_SPAN:
        raise invalid("to", f"a report spans at most {MAX_SPAN.days} days", maxDays=MAX_SPAN.days)
    return low, high


async def _bookings(ctx: QueryCtx, status: str, low: dt.datetime, high: dt.datetime) -> builtins.list[Doc]:
    """Bookings in one status whose class starts in ``[low, high)``: one index range."""
    return await collect(ctx.db.query("bookings").with_index(
        "by_status_start", lambda q: q.eq("status", status).gte("startsAt", low).lt("startsAt", high)
    ))


class ClassAttendance(msgspec.Struct, rename="camel", kw_only=True):
    instance_id: str
    name: str
    venue_id: str
    starts_at: dt.datetime
    local_date: str
    local_time: str
    status: str
    capacity: int
    booked: int  # seated: confirmed, checked in or no-show
    attended: int
    no_shows: int
    late_cancels: int
    waitlist_length: int  # waiting now (entries lapse when the class starts)


class AttendanceReport(msgspec.Struct, rename="camel", kw_only=True):
    classes: builtins.list[ClassAttendance]
    booked: int
    attended: int
    no_shows: int
    late_cancels: int


@query(tenant="business_id", roles=STAFF_AND_INSTRUCTORS)
async def attendance(
    ctx: QueryCtx, business_id: BusinessId, from_: Instant, to: Instant, venue_id: VenueId | None = None
) -> AttendanceReport:
    """Per class starting in ``[from, to)`` (at one venue, or all): seats booked, attended, no-shows, late
    cancellations and the waitlist, with totals (R1)."""
    low, high = _span(from_, to)
    if venue_id is None:
        instances = await collect(ctx.db.query("class_instances").with_index(
            "by_start", lambda q: q.gte("startsAt", low).lt("startsAt", high)))
    else:
        if await ctx.db.get(venue_id, include_deleted=True) is None:
            raise not_found("venueId")
        instances = await collect(ctx.db.query("class_instances").with_index(
            "by_venue_start", lambda q: q.eq("venueId", venue_id).gte("startsAt", low).lt("startsAt", high)))
    counts: dict[str, dict[str, int]] = {i["_id"]: {"booked": 0, "attended": 0, "no_shows": 0, "late_cancels": 0,
                                                     "waiting": 0} for i in instances}
    for status in ("confirmed", "checked_in", "no_show", "cancelled", "waitlisted", "offered"):
        for row in await _bookings(ctx, status, low, high):
            tally = counts.get(row["instanceId"])
            if tally is None:  # a class at another venue
                continue
            if status in SEATED:
                tally["booked"] += 1
            tally["attended"] += status == "checked_in"
            tally["no_shows"] += status == "no_show"
            tally["late_cancels"] += status == "cancelled" and bool(row["late"])
            tally["waiting"] += status in ("waitlisted", "offered")
    classes = [
        ClassAttendance(
            instance_id=i["_id"], name=i["name"], venue_id=i["venueId"], starts_at=i["startsAt"],
            local_date=i["localDate"], local_time=i["localTime"], status=i["status"], capacity=i["capacity"],
            booked=counts[i["_id"]]["booked"], attended=counts[i["_id"]]["attended"],
            no_shows=counts[i["_id"]]["no_shows"], late_cancels=counts[i["_id"]]["late_cancels"],
            waitlist_length=counts[i["_id"]]["waiting"],
        )
        for i in instances
    ]
    return AttendanceReport(
        classes=classes, booked=sum(c.booked for c in classes), attended=sum(c.attended for c in classes),
        no_shows=sum(c.no_shows for c in classes), late_cancels=sum(c.late_cancels for c in classes),
    )


class RevenueReport(msgspec.Struct, rename="camel", kw_only=True):
    currency: str
    dropin_cents: int  # drop-in payments kept: seats taken, and those forfeited by late cancels and no-shows
    credits_spent: int  # credits kept on the same terms
    membership_uses: int
    penalty_fees_cents: int  # late-cancel and no-show fees still charged (not waived or reversed)
    refunded_cents: int  # drop-in payments given back (early cancels, studio cancels, waived penalties)
    refunded_credits: int
    bookings: int  # bookings that paid, kept or refunded


def _kept(row: Doc) -> bool:
    """Whether the booking's payment stays with the studio: a seat taken, or forfeited by a penalty (P3)."""
    return row["status"] in SEATED or (row["status"] == "cancelled" and in_force(row.get("penalty")))


@query(tenant="business_id", roles=STAFF)
async def revenue(ctx: QueryCtx, business_id: BusinessId, from_: Instant, to: Instant) -> RevenueReport:
    """Money and credits for classes starting in ``[from, to)``: drop-in payments, credits and membership
    uses spent, penalty fees, and refunds (R2)."""
    low, high = _span(from_, to)
    business = await ctx.db.get(business_id)
    assert business is not None
    report = RevenueReport(currency=business["currency"], dropin_cents=0, credits_spent=0, membership_uses=0,
                           penalty_fees_cents=0, refunded_cents=0, refunded_credits=0, bookings=0)
    for status in ("confirmed", "checked_in", "no_show", "cancelled", "cancelled_by_studio"):
        for row in await _bookings(ctx, status, low, high):
            pay_with = row.get("payWith")
            kept = _kept(row)
            if pay_with is None or not (kept or row["amountCents"] or row["creditsSpent"]):
                continue  # a waitlist entry that left before it paid anything
            report.bookings += 1
            penalty = row.get("penalty")
            if in_force(penalty):
                report.penalty_fees_cents += int(penalty.get("feeCents") or 0)
            if pay_with == "dropin":
                if kept:
                    report.dropin_cents += row["amountCents"]
                else:
                    report.refunded_cents += row["amountCents"]
            elif pay_with == "credits":
                if kept:
                    report.credits_spent += row["creditsSpent"]
                else:
                    report.refunded_credits += row["creditsSpent"]
            elif pay_with == "membership" and kept:
                report.membership_uses += 1
    return report
