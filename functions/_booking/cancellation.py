"""Cancelling: by the member (P1-P3, P8), and by the studio (C7, P7).

A member's cancellation is judged on absolute time against the policy snapshotted on the booking (P1, P2).
Early: the credit goes back to the very lot it came from (F3). Late: the penalty of the entitlement type
(P3), forgiven when a waiting member takes the seat (P4). Either way the seat is released and the waitlist
promoted in the same transaction (W2, W8).
"""

from __future__ import annotations

from typing import Any

from backend import AppError
from functions._rules.policy import classify_cancellation
from functions._shared.settings import BookingPolicy, load_settings

from .model import ACTIVE, SEATED, collect
from .offers import release_offer
from .outbox import notify
from .penalties import in_force, penalty_for, record_strike, spare_refills, waived
from .refunds import refund_booking
from .seating import bump
from .waitlist import promote

__all__ = ["cancel_booking", "cancel_for_studio"]


async def cancel_booking(
    ctx: Any, booking: dict[str, Any], *, reason: str | None, waive_penalty: bool
) -> dict[str, Any]:
    """Cancel one booking or waitlist entry; returns ``{status, late, penalty, refund, promoted}``."""
    status = booking["status"]
    business_id = booking["businessId"]
    if status not in ("confirmed", "waitlisted", "offered"):
        raise AppError({"code": "not_cancellable", "status": status, "bookingId": booking["_id"]},
                       f"a booking that is {status} cannot be cancelled")
    instance = await ctx.db.get(booking["instanceId"])
    if instance is None:
        raise AppError({"code": "not_found", "instanceId": booking["instanceId"]}, "the class no longer exists")
    base = {"activeKey": None, "cancelledAt": ctx.now, "reason": reason}
    if status == "offered":  # declining an offer: the held seat goes to the next person (W5)
        await release_offer(ctx, booking, "cancelled", reason or "offer_declined", "offer_declined")
        return {"status": "cancelled", "late": False, "penalty": None, "refund": None, "promoted": [],
                "penaltyWaived": None}
    if status == "waitlisted":
        await ctx.db.patch(booking["_id"], {**base, "status": "cancelled", "late": False})
        await bump(ctx, instance, waitlisted=-1)
        await notify(ctx, business_id, "waitlist_left", booking["memberId"], bookingId=booking["_id"],
                     instanceId=instance["_id"])
        return {"status": "cancelled", "late": False, "penalty": None, "refund": None, "promoted": [],
                "penaltyWaived": None}
    # The instance row is the one every concurrent seat change writes: write it first, so a transaction
    # that is going to lose the race waits on its lock and fails before doing the rest of the work.
    await bump(ctx, instance, booked=-1)
    settings, _ = await load_settings(ctx.db, business_id)
    policy = BookingPolicy.from_json(booking.get("policy"), settings.policy())
    late = classify_cancellation(ctx.now, booking["startsAt"], policy.late_cancel_minutes) == "late"
    penalty: dict[str, Any] | None = None
    refund: dict[str, Any] | None = None
    # A class moved after booking carries ``policy.freeCancel`` (T7): leaving it never costs anything.
    if late and not waive_penalty and not policy.free_cancel:
        penalty = penalty_for(booking, "late_cancel", policy)
    else:
        refund = await refund_booking(ctx, booking, "cancelled")
    promoted = await promote(ctx, instance)
    forgiven: str | None = None
    if penalty is not None and policy.refill_waives_late_cancel:
        # The seat was refilled at once by a promotion not already spent on an older late cancel: the
        # penalty is lifted before anything is charged (P4).
        spare = await spare_refills(ctx, instance, promoted)
        if spare:
            refund = await refund_booking(ctx, booking, "late_cancel_waived")
            penalty, forgiven = waived(penalty, spare[0], refund), "seat_refilled"
    await ctx.db.patch(booking["_id"], {**base, "status": "cancelled", "late": late, "penalty": penalty})
    charged = penalty if in_force(penalty) else None
    await notify(ctx, business_id, "booking_cancelled", booking["memberId"], bookingId=booking["_id"],
                 instanceId=instance["_id"], late=late, penalty=charged, refund=refund, penaltyWaived=forgiven)
    if charged is not None:
        if charged.get("feeCents"):
            await notify(ctx, business_id, "fee_charged", booking["memberId"], bookingId=booking["_id"],
                         feeCents=charged["feeCents"], penaltyKind="late_cancel")
        await record_strike(ctx, business_id, booking["memberId"], settings)
    return {"status": "cancelled", "late": late, "penalty": charged, "refund": refund, "promoted": promoted,
            "penaltyWaived": forgiven}


async def cancel_for_studio(ctx: Any, instance: dict[str, Any], reason: str) -> int:
    """The studio cancels a class: every active booking and waitlist entry ends with a full refund (C7, P7).

    Never a penalty; each member is notified. The instance's own status is the caller's to set.
    Returns how many bookings and entries were ended.
    """
    ended = 0
    business_id, instance_id = instance["businessId"], instance["_id"]
    for status in sorted(ACTIVE):
        rows = await collect(ctx.db.query("bookings").with_index(
            "by_instance_status",
            lambda q, s=status: q.eq("businessId", business_id).eq("instanceId", instance_id).eq("status", s),
        ))
        for row in rows:
            refund = await refund_booking(ctx, row, "cancelled_by_studio") if row["status"] in SEATED else None
            await ctx.db.patch(row["_id"], {
                "status": "cancelled_by_studio", "activeKey": None, "cancelledAt": ctx.now, "reason": reason,
                "late": False, "penalty": None,
            })
            await notify(ctx, instance["businessId"], "class_cancelled", row["memberId"], bookingId=row["_id"],
                         instanceId=instance["_id"], reason=reason, refund=refund)
            ended += 1
    if instance["booked"] or instance["waitlisted"]:
        await ctx.db.patch(instance["_id"], {"booked": 0, "waitlisted": 0})
        instance.update(booked=0, waitlisted=0)
    return ended
