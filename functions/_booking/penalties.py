"""Penalties for late cancels and no-shows (P3, P9), their waiver when the seat is refilled (P4), and the
strike rule that suspends booking (P5)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from functions._shared.settings import BookingPolicy, Settings

from .model import collect
from .outbox import notify
from .refunds import refund_booking

__all__ = [
    "PenaltyKind", "in_force", "is_strike", "penalty_for", "record_strike", "spare_refills", "waive_for_refill",
    "waived",
]

PenaltyKind = Literal["late_cancel", "no_show"]


def penalty_for(booking: dict[str, Any], kind: PenaltyKind, policy: BookingPolicy) -> dict[str, Any]:
    """What a late cancel or no-show costs (P3): a pack forfeits its credits, a drop-in keeps its payment.

    An extra fee from the snapshotted policy is added when configured; a no-show never costs less than a
    late cancel. The penalty is a field of the booking, so it exists at most once per booking (P9).
    """
    penalty: dict[str, Any] = {"kind": kind}
    if booking.get("payWith") == "credits":
        penalty.update(forfeit="credits", credits=booking["creditsSpent"])
    elif booking.get("payWith") == "membership":
        penalty.update(forfeit="membership_use", membershipId=booking.get("membershipId"))
    else:
        penalty.update(forfeit="payment", amountCents=booking["amountCents"])
    fee = policy.late_cancel_fee_cents
    if kind == "no_show":
        fee = max(fee, policy.no_show_fee_cents)
    if fee > 0:
        penalty["feeCents"] = fee
    return penalty


def in_force(penalty: Any) -> bool:
    """A penalty that still costs the member something (not removed, not waived)."""
    return isinstance(penalty, dict) and bool(penalty) and not penalty.get("waived")


def is_strike(row: dict[str, Any]) -> bool:
    return row["status"] == "no_show" or (row["status"] == "cancelled" and bool(row["late"]) and in_force(row.get("penalty")))


def _waivable(row: dict[str, Any], settings: Settings) -> bool:
    penalty = row.get("penalty")
    if not (row["late"] and in_force(penalty) and penalty.get("kind") == "late_cancel"):
        return False
    return BookingPolicy.from_json(row.get("policy"), settings.policy()).refill_waives_late_cancel


async def _cancelled(ctx: Any, instance: dict[str, Any]) -> list[dict[str, Any]]:
    return await collect(ctx.db.query("bookings").with_index(
        "by_instance_status",
        lambda q: q.eq("businessId", instance["businessId"]).eq("instanceId", instance["_id"]).eq("status", "cancelled"),
    ))


def waived(penalty: dict[str, Any], refill_id: str, refund: dict[str, Any]) -> dict[str, Any]:
    """The penalty as kept on the booking once forgiven: what it was, why and by whom it was lifted."""
    return {**penalty, "waived": "seat_refilled", "refilledBy": refill_id, "refund": refund}


async def spare_refills(ctx: Any, instance: dict[str, Any], promoted: list[str]) -> list[str]:
    """Of the bookings just promoted into this class, those that have not forgiven anyone yet (in order)."""
    if not promoted:
        return []
    used = {(r.get("penalty") or {}).get("refilledBy") for r in await _cancelled(ctx, instance)}
    return [booking_id for booking_id in promoted if booking_id not in used]


async def waive_for_refill(
    ctx: Any, instance: dict[str, Any], refill: dict[str, Any], settings: Settings
) -> str | None:
    """A waiting member just took a seat of this class: the oldest late cancellation still paying a penalty
    is forgiven (P4) — its credits go back to their lots, its payment is queued for refund, its fee is
    reversed. One refill forgives one cancellation. Returns the forgiven booking's id.

    A cancellation whose seat is refilled in its own transaction is forgiven by ``cancel_booking`` before
    anything is charged (see ``spare_refills``), so it is never charged and then reversed.
    """
    business_id = instance["businessId"]
    pending = [r for r in await _cancelled(ctx, instance) if _waivable(r, settings)]
    if not pending:
        return None
    row = min(pending, key=lambda r: (r["cancelledAt"], r["_id"]))
    refund = await refund_booking(ctx, row, "late_cancel_waived")
    penalty = waived(row["penalty"], refill["_id"], refund)
    await ctx.db.patch(row["_id"], {"penalty": penalty})
    await notify(ctx, business_id, "penalty_waived", row["memberId"], bookingId=row["_id"],
                 instanceId=instance["_id"], reason="seat_refilled", refund=refund)
    if penalty.get("feeCents"):
        await notify(ctx, business_id, "fee_reversed", row["memberId"], bookingId=row["_id"],
                     feeCents=penalty["feeCents"], penaltyKind="late_cancel", reason="seat_refilled")
    return str(row["_id"])


async def record_strike(ctx: Any, business_id: str, member_id: str, settings: Settings) -> dt.datetime | None:
    """After a penalty: K strikes within D days suspend new bookings for S days (P5); returns the new end.

    A penalty waived later (P4) stops counting from then on; a suspension it helped cause stays.
    """
    if not settings.strike_limit:  # 0: strikes are off
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
