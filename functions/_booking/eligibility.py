"""Can this member take a seat in this class, and how would they pay? One answer for every path (B6, F5).

Self-booking, staff booking and waitlist promotion all ask here, so a rule cannot be enforced on one path and
forgotten on another. The answer lists every reason that applies (F9), not just the first one found.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from functions._rules.policy import Offset, booking_window, window_status
from functions._shared.settings import Settings
from functions.pricing._quote import quote_for

from .ledger import Entitlement, Lot, check_credits
from .membership import Period, find_cover
from .model import SEATED, collect

__all__ = ["Decision", "check_window", "evaluate", "overlapping"]

#: The longest class the overlap search looks back for; a longer one would be missed by the range read.
MAX_CLASS = dt.timedelta(hours=24)

PayWith = Literal["membership", "credits", "dropin"]


@dataclass(slots=True)
class Decision:
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    pay_with: PayWith | None = None
    plan: list[tuple[Lot, int]] | None = None
    quote: dict[str, Any] | None = None
    membership: dict[str, Any] | None = None
    period: Period | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons


def check_window(instance: dict[str, Any], settings: Settings, now: dt.datetime) -> dict[str, Any] | None:
    """None inside ``[opensAt, closesAt)`` (B1, B4, B5); otherwise the bounds to report."""
    window = booking_window(
        instance["startsAt"], instance["endsAt"], instance["timezone"],
        opens_before=Offset(settings.booking_opens_days_before, "days"),
        closes_before=Offset(settings.booking_closes_minutes_before, "minutes"),
    )
    status = window_status(now, window)
    if status == "open":
        return None
    if status == "not_yet_open":
        return {"opensAt": window.opens_at, "closesAt": window.closes_at}
    return {"closesAt": window.closes_at}


async def overlapping(
    db: Any, business_id: str, member_id: str, starts_at: dt.datetime, ends_at: dt.datetime, statuses: frozenset[str]
) -> list[dict[str, Any]]:
    """The member's bookings in ``statuses`` whose ``[startsAt, endsAt)`` meets the given span (C5, W7)."""
    rows = await collect(db.query("bookings").with_index(
        "by_member_start",
        lambda q: q.eq("businessId", business_id).eq("memberId", member_id).gt("startsAt", starts_at - MAX_CLASS).lt("startsAt", ends_at),
    ))
    # A guest's seat is booked under the booker's id but is not the booker's own time (G2).
    return [r for r in rows if r["status"] in statuses and r["endsAt"] > starts_at and not r.get("guestName")]


async def evaluate(
    ctx: Any,
    instance: dict[str, Any],
    member: dict[str, Any],
    settings: Settings,
    business: dict[str, Any],
    pay_with: PayWith | None,
    *,
    enforce_window: bool,
    stored_quote: dict[str, Any] | None = None,
    allow_membership: bool = True,
) -> Decision:
    """Every reason this member cannot be seated now, or the payment plan when they can.

    ``allow_membership`` False (a guest's seat, G2) leaves memberships out of the payment."""
    decision = Decision()
    now: dt.datetime = ctx.now
    if enforce_window:
        bounds = check_window(instance, settings, now)
        if bounds is not None:
            decision.reasons.append("outside_booking_window")
            decision.details.update(bounds)
    suspended = member.get("suspendedUntil")
    if suspended is not None and suspended > now:
        decision.reasons.append("account_suspended")
        decision.details["suspendedUntil"] = suspended
    if settings.prevent_overlaps:
        clashes = [
            r for r in await overlapping(db=ctx.db, business_id=member["businessId"], member_id=member["_id"], starts_at=instance["startsAt"],
                                         ends_at=instance["endsAt"], statuses=SEATED)
            if r["instanceId"] != instance["_id"]
        ]
        if clashes:
            decision.reasons.append("overlaps_existing_booking")
            decision.details["overlapsBookingIds"] = [r["_id"] for r in clashes]
    await _payment(ctx, decision, instance, member, business, settings, pay_with, stored_quote, allow_membership)
    return decision


async def _payment(
    ctx: Any, decision: Decision, instance: dict[str, Any], member: dict[str, Any], business: dict[str, Any],
    settings: Settings, pay_with: PayWith | None, stored_quote: dict[str, Any] | None, allow_membership: bool,
) -> None:
    """How the class is paid: what ``pay_with`` asks for; without it a membership that covers the class, then
    credits (F13); a drop-in only when asked for, since it takes money.

    A waiting entry keeps the quote it was given when it joined: a later price change never reprices it (PR1).
    """
    price = stored_quote if stored_quote else (await quote_for(ctx, instance, business, settings)).to_json()
    decision.quote = price
    dropin_offered = price.get("dropin", True) is not False
    if pay_with == "dropin":
        if not dropin_offered:  # a credit-only class (PR6)
            decision.reasons.append("dropin_not_offered")
            return
        decision.pay_with = "dropin"
        return
    cover = None
    if allow_membership and pay_with in (None, "membership"):
        cover = await find_cover(ctx.db, business, member["_id"], instance)
        if cover.membership is not None:
            decision.pay_with, decision.membership, decision.period = "membership", cover.membership, cover.period
            return
        if pay_with == "membership" or cover.reason == "membership_limit_reached":
            assert cover.reason is not None
            decision.reasons.append(cover.reason)
            decision.details.update(cover.details or {})
        if pay_with == "membership":
            return
    credits: Entitlement = await check_credits(
        ctx.db, member["businessId"], member["_id"], ctx.now, instance["startsAt"], int(price.get("creditCost") or 1)
    )
    if credits.plan is not None:
        # Credits pay when no membership can; a full membership is then no reason to refuse.
        decision.reasons = [r for r in decision.reasons if r != "membership_limit_reached"]
        decision.pay_with, decision.plan = "credits", credits.plan
        return
    assert credits.reason is not None
    decision.reasons.append(credits.reason)
    decision.details.update({k: v for k, v in credits.details().items() if v is not None})
    if pay_with is None and dropin_offered:
        decision.details["dropinPriceCents"] = price["amountCents"]
