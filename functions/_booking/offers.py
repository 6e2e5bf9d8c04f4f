"""Waitlist offers after the promotion cutoff (W5): claiming a held seat, and the expiry that passes it on.

An offer is a waiting entry in status ``offered`` with ``offerExpiresAt``; its seat is already counted in
the class's ``booked``, so nobody else can take it. A claim is a conditional change of that one row (still
``offered``, not yet expired) inside the SERIALIZABLE transaction: two claims of one offer both write the
row, so only one commits and the other, retried, finds it claimed. The expiry job does nothing to an offer
that was claimed, declined or already expired, so it may run late or twice.
"""

from __future__ import annotations

from typing import Any

from backend import AppError
from functions._shared.settings import load_settings

from .eligibility import evaluate
from .model import plain, refuse
from .outbox import notify
from .seating import bump
from .waitlist import promote, seat_entry

__all__ = ["claim", "expire"]


async def claim(ctx: Any, booking: dict[str, Any]) -> dict[str, Any]:
    """Take the held seat: paid now like a promotion, under the policy in force now (W4, W9)."""
    if booking["status"] != "offered":
        raise AppError(plain({"code": "not_offered", "bookingId": booking["_id"], "status": booking["status"]}),
                       f"there is no open offer on this booking (it is {booking['status']})")
    expires = booking["offerExpiresAt"]
    if ctx.now >= expires or ctx.now >= booking["startsAt"]:
        raise AppError(plain({"code": "offer_expired", "bookingId": booking["_id"], "expiredAt": expires}),
                       "the offer has expired")
    instance = await ctx.db.get(booking["instanceId"])
    member = await ctx.db.get(booking["memberId"])
    if instance is None or member is None:
        raise AppError({"code": "not_offered", "bookingId": booking["_id"]}, "the class or member is gone")
    settings, business = await load_settings(ctx.db, instance["businessId"])
    decision = await evaluate(ctx, instance, member, settings, business, booking.get("payWith"),
                              enforce_window=False, stored_quote=booking.get("quote"),
                              allow_membership=not booking.get("guestName"))
    if not decision.ok:  # the offer stands until it expires: the member may still fix this (buy credits)
        raise refuse(decision.reasons, "the seat cannot be claimed: " + ", ".join(decision.reasons),
                     bookingId=booking["_id"], **decision.details)
    await seat_entry(ctx, instance, booking, decision, settings, how="claim", held=True)
    membership = decision.membership
    return {"bookingId": booking["_id"], "status": "confirmed", "payWith": decision.pay_with,
            "membershipId": None if membership is None else membership["_id"]}


async def release_offer(ctx: Any, booking: dict[str, Any], status: str, reason: str, kind: str) -> dict[str, Any] | None:
    """End an offer (declined, expired or lapsed at the start): the held seat goes back and, before the
    start, to the next person waiting. Returns the instance."""
    await ctx.db.patch(booking["_id"], {
        "status": status, "activeKey": None, "cancelledAt": ctx.now, "reason": reason, "offerExpiresAt": None,
    })
    instance: dict[str, Any] | None = await ctx.db.get(booking["instanceId"])
    if instance is None:
        return None
    await bump(ctx, instance, booked=-1)
    await notify(ctx, booking["businessId"], kind, booking["memberId"], bookingId=booking["_id"],
                 instanceId=instance["_id"], reason=reason)
    if instance["startsAt"] > ctx.now:
        await promote(ctx, instance)
    return instance


async def expire(ctx: Any, booking: dict[str, Any]) -> bool:
    """The offer's time is up (or the class has started): pass the seat on. False when there was nothing
    to expire (claimed, declined, or not due yet)."""
    if booking["status"] != "offered":
        return False
    started = ctx.now >= booking["startsAt"]
    if ctx.now < booking["offerExpiresAt"] and not started:
        return False
    reason = "lapsed_at_start" if started else "offer_expired"
    await release_offer(ctx, booking, "withdrawn", reason, "offer_expired")
    return True
