"""Putting a member in a seat: pay, move the instance's counters, withdraw clashing waitlist entries.

``class_instances.booked`` and ``waitlisted`` are the counters every seat decision reads and writes in the
same SERIALIZABLE transaction; two transactions that both take the last seat both write that row, so only
one commits and the other is retried against the new count (C1).
"""

from __future__ import annotations

from typing import Any

from . import ledger
from .eligibility import Decision, overlapping
from .membership import take_use
from .outbox import notify

__all__ = ["bump", "pay", "payment_fields", "skip_entry", "withdraw_clashing_entries"]


async def bump(ctx: Any, instance: dict[str, Any], *, booked: int = 0, waitlisted: int = 0) -> None:
    """Move the counters and keep the caller's copy of the row in step."""
    changes: dict[str, int] = {}
    if booked:
        changes["booked"] = instance["booked"] + booked
    if waitlisted:
        changes["waitlisted"] = instance["waitlisted"] + waitlisted
    if not changes:
        return
    if changes.get("booked", 0) < 0 or changes.get("waitlisted", 0) < 0:
        raise RuntimeError(f"instance {instance['_id']}: counters would go negative ({changes})")
    if changes.get("booked", 0) > instance["capacity"]:
        raise RuntimeError(f"instance {instance['_id']}: booked would exceed capacity ({changes})")
    await ctx.db.patch(instance["_id"], changes)
    instance.update(changes)


def payment_fields(decision: Decision) -> dict[str, Any]:
    """The booking fields a payment decision settles, known before the booking row exists."""
    if decision.pay_with == "membership":
        assert decision.membership is not None
        return {"payWith": "membership", "membershipId": decision.membership["_id"], "creditsSpent": 0,
                "amountCents": 0, "quote": decision.quote}
    if decision.pay_with == "credits":
        assert decision.plan is not None
        return {"payWith": "credits", "membershipId": None, "creditsSpent": sum(n for _, n in decision.plan),
                "amountCents": 0, "quote": decision.quote}
    assert decision.pay_with == "dropin" and decision.quote is not None
    return {"payWith": "dropin", "membershipId": None, "creditsSpent": 0,
            "amountCents": decision.quote["amountCents"], "quote": decision.quote}


async def pay(ctx: Any, business_id: str, booking_id: str, member_id: str, decision: Decision, reason: str) -> None:
    """Spend the planned credits or count the membership use for a booking (a drop-in is settled outside:
    its quote is on the booking)."""
    if decision.pay_with == "credits":
        assert decision.plan is not None
        await ledger.consume(ctx, business_id, member_id, booking_id, decision.plan, reason)
    elif decision.pay_with == "membership":
        assert decision.membership is not None and decision.period is not None
        key = await take_use(ctx, business_id, decision.membership["_id"], decision.period)
        await ctx.db.patch(booking_id, {"usageKey": key})


async def withdraw_clashing_entries(ctx: Any, business_id: str, seated: dict[str, Any]) -> list[str]:
    """The member's other waitlist entries that overlap the class they now sit in are withdrawn (W7).

    A guest's seat withdraws nothing: the booker is not the one sitting in it (G2)."""
    if seated.get("guestName"):
        return []
    entries = await overlapping(ctx.db, business_id, seated["memberId"], seated["startsAt"], seated["endsAt"],
                                frozenset({"waitlisted"}))
    withdrawn: list[str] = []
    for entry in entries:
        if entry["_id"] == seated["_id"]:
            continue
        await ctx.db.patch(entry["_id"], {
            "status": "withdrawn", "activeKey": None, "cancelledAt": ctx.now, "reason": "overlapping_booking",
        })
        other = await ctx.db.get(entry["instanceId"])
        if other is not None:
            await bump(ctx, other, waitlisted=-1)
        await notify(ctx, business_id, "waitlist_withdrawn", entry["memberId"], bookingId=entry["_id"],
                     instanceId=entry["instanceId"], reason="overlapping_booking", seatedBookingId=seated["_id"])
        withdrawn.append(entry["_id"])
    return withdrawn


async def skip_entry(ctx: Any, entry: dict[str, Any], reasons: list[str]) -> None:
    """Record why a waiting entry was passed over for a seat; it keeps its place for the next one (W2)."""
    reason = reasons[0]
    if entry.get("skipReason") == reason:
        return
    await ctx.db.patch(entry["_id"], {"skipReason": reason})
    await notify(ctx, entry["businessId"], "promotion_skipped", entry["memberId"], bookingId=entry["_id"],
                 instanceId=entry["instanceId"], reasons=reasons)
