"""Penalties for late cancels and no-shows (P3, P9) and the strike rule that suspends booking (P5)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from .model import collect
from .outbox import notify
from .settings import BookingPolicy, BusinessSettings

__all__ = ["PenaltyKind", "penalty_for", "record_strike"]

PenaltyKind = Literal["late_cancel", "no_show"]


def penalty_for(booking: dict[str, Any], kind: PenaltyKind, policy: BookingPolicy) -> dict[str, Any]:
    """What a late cancel or no-show costs (P3): a pack forfeits its credits, a drop-in keeps its payment.

    An extra fee from the snapshotted policy is added when configured; a no-show never costs less than a
    late cancel. The penalty is a field of the booking, so it exists at most once per booking (P9).
    """
    penalty: dict[str, Any] = {"kind": kind}
    if booking.get("payWith") == "credits":
        penalty.update(forfeit="credits", credits=booking["creditsSpent"])
    else:
        penalty.update(forfeit="payment", amountCents=booking["amountCents"])
    fee = policy.late_cancel_fee_cents
    if kind == "no_show":
        fee = max(fee, policy.no_show_fee_cents)
    if fee > 0:
        penalty["feeCents"] = fee
    return penalty


def is_strike(row: dict[str, Any]) -> bool:
    return row["status"] == "no_show" or (row["status"] == "cancelled" and bool(row["late"]) and bool(row.get("penalty")))


async def record_strike(ctx: Any, business_id: str, member_id: str, settings: BusinessSettings) -> dt.datetime | None:
    """After a penalty: K strikes within D days suspend new bookings for S days (P5); returns the new end."""
    if settings.strike_limit is None:
        return None
    now: dt.datetime = ctx.now
    since = now - dt.timedelta(days=settings.strike_window_days)
    rows = await collect(ctx.db.query("bookings").with_index(
        "by_member_start", lambda q: q.eq("businessId", business_id).eq("memberId", member_id).gte("startsAt", since)
    ))
    strikes = sum(1 for row in rows if is_strike(row))
    if strikes < settings.strike_limit:
        return None
    member = await ctx.db.get(member_id)
    if member is None:
        return None
    until = now + dt.timedelta(days=settings.suspension_days)
    current = member.get("suspendedUntil")
    if current is not None and current >= until:
        return None
    await ctx.db.patch(member_id, {"suspendedUntil": until})
    await notify(ctx, member["businessId"], "account_suspended", member_id, suspendedUntil=until, strikes=strikes)
    return until
