"""The waitlist: order and positions on read (W1), promotion when a seat is released (W2-W4, W8).

``promote`` runs inside the transaction that released the seat, so the release and its promotions commit
together or not at all, and two releases racing for the same waiting entry serialise on the instance row:
exactly one promotion per freed seat, in order.

After the promotion cutoff a freed seat is *offered* (W5): the head of the waitlist holds it for
``offerMinutes`` (never past the class start) and takes it with ``bookings:claim_offer``; a scheduled
``bookings:expire_offer`` passes it on when the offer runs out (``functions/_booking/offers.py``). With
``offerMinutes`` 0 the business chose *open booking* instead (W3): every waiting member gets a
``seat_available`` notice and the first to call ``bookings:book`` takes the seat.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, Literal

from functions._rules.policy import can_auto_promote
from functions._shared.settings import BookingPolicy, Settings, load_settings

from .eligibility import check_window, evaluate
from .model import collect, waitlist_order
from .outbox import notify
from .penalties import waive_for_refill
from .seating import bump, pay, payment_fields, skip_entry, withdraw_clashing_entries

__all__ = ["auto_promotion_open", "make_offers", "positions", "promote", "seat_entry", "waiting"]


async def waiting(db: Any, business_id: str, instance_id: str) -> list[dict[str, Any]]:
    """The waiting entries of one class in promotion order."""
    rows = await collect(db.query("bookings").with_index(
        "by_instance_status", lambda q: q.eq("businessId", business_id).eq("instanceId", instance_id).eq("status", "waitlisted")
    ))
    return waitlist_order(rows)


async def positions(db: Any, business_id: str, instance_id: str) -> dict[str, int]:
    """Booking id → 1-based waitlist position, computed from the order rather than stored."""
    return {row["_id"]: i for i, row in enumerate(await waiting(db, business_id, instance_id), start=1)}


def auto_promotion_open(instance: dict[str, Any], settings: Settings, now: Any) -> bool:
    """Before the cutoff (late-cancel window + grace by default) promotion is automatic (W3, W4)."""
    return can_auto_promote(
        now, instance["startsAt"], settings.late_cancel_minutes, settings.auto_promote_cutoff_minutes,
        settings.promotion_grace_minutes,
    )


async def promote(ctx: Any, instance: dict[str, Any]) -> list[str]:
    """Fill every free seat from the head of the waitlist; returns the promoted booking ids in order.

    Entries that cannot be seated (no credits, an overlap, a suspension) are skipped with the reason
    recorded and keep their place (W2). After the promotion cutoff nobody is promoted: the seat is offered
    to the head of the queue (W5), or with ``offerMinutes`` 0 every waiting member is told a seat is open
    and may take it with ``bookings:book`` (open booking, W3).
    """
    free = instance["capacity"] - instance["booked"]
    if instance["status"] != "scheduled" or free <= 0 or instance["waitlisted"] <= 0:
        return []
    business_id = instance["businessId"]
    settings, business = await load_settings(ctx.db, business_id)
    entries = await waiting(ctx.db, business_id, instance["_id"])
    if not auto_promotion_open(instance, settings, ctx.now):
        if check_window(instance, settings, ctx.now) is not None:
            return []  # booking has closed: nobody can take the seat, so nobody is told about it
        if settings.offer_minutes > 0:
            if instance["startsAt"] > ctx.now:  # a hold ends at the start: none is made after it
                await make_offers(ctx, instance, entries, settings, business)
            return []
        for entry in entries:
            await notify(ctx, business_id, "seat_available", entry["memberId"], bookingId=entry["_id"],
                         instanceId=instance["_id"], startsAt=instance["startsAt"])
        return []
    promoted: list[str] = []
    for entry in entries:
        if free <= 0:
            break
        member = await ctx.db.get(entry["memberId"])
        decision = await _eligible(ctx, instance, entry, member, settings, business)
        if decision is None:
            continue
        await seat_entry(ctx, instance, entry, decision, settings, how="promotion")
        promoted.append(entry["_id"])
        free -= 1
    return promoted


async def _eligible(
    ctx: Any, instance: dict[str, Any], entry: dict[str, Any], member: dict[str, Any] | None, settings: Settings,
    business: dict[str, Any],
) -> Any:
    """The payment decision for seating a waiting entry now, or None (the skip recorded) when it cannot be."""
    if member is None or member.get("status") != "active":
        await skip_entry(ctx, entry, ["member_inactive"])
        return None
    decision = await evaluate(
        ctx, instance, member, settings, business, entry.get("payWith"),
        enforce_window=False, stored_quote=entry.get("quote"), allow_membership=not entry.get("guestName"),
    )
    if not decision.ok:
        await skip_entry(ctx, entry, decision.reasons)
        return None
    return decision


async def make_offers(
    ctx: Any, instance: dict[str, Any], entries: list[dict[str, Any]], settings: Settings, business: dict[str, Any]
) -> list[str]:
    """Hold each free seat for the next eligible waiting entry (W5): the entry becomes ``offered`` and counts
    as a taken seat until it is claimed or expires at ``now + offerMinutes`` or the class start, whichever is
    first. Each offer is an outbox event and schedules its own expiry. Returns the offered booking ids."""
    free = instance["capacity"] - instance["booked"]
    offered: list[str] = []
    for entry in entries:
        if free <= 0:
            break
        decision = await _eligible(ctx, instance, entry, await ctx.db.get(entry["memberId"]), settings, business)
        if decision is None:
            continue
        expires = min(ctx.now + dt.timedelta(minutes=settings.offer_minutes), instance["startsAt"])
        await ctx.db.patch(entry["_id"], {"status": "offered", "offerExpiresAt": expires, "skipReason": None})
        await bump(ctx, instance, booked=1, waitlisted=-1)
        await ctx.scheduler.run_at(expires, "bookings:expire_offer", {"bookingId": entry["_id"]})
        await notify(ctx, instance["businessId"], "waitlist_offered", entry["memberId"], bookingId=entry["_id"],
                     instanceId=instance["_id"], startsAt=instance["startsAt"], expiresAt=expires,
                     guestName=entry.get("guestName"))
        offered.append(entry["_id"])
        free -= 1
    return offered


async def seat_entry(
    ctx: Any, instance: dict[str, Any], entry: dict[str, Any], decision: Any, settings: Settings,
    *, how: Literal["promotion", "claim"], held: bool = False,
) -> None:
    """Turn a waiting entry into a confirmed booking (``source=waitlist``, W9), paid now, under the policy
    in force now (P2): the promotion cutoff guarantees a free-cancel grace under exactly that policy (W4).
    An entry for a class that moved since it joined keeps its free cancel (T7). The seat it takes forgives
    a late cancellation of the same class (P4). ``held``: the seat was already counted by an offer (W5)."""
    business_id = instance["businessId"]
    payment = payment_fields(decision)
    policy = settings.policy()
    if BookingPolicy.from_json(entry.get("policy"), policy).free_cancel:
        policy = replace(policy, free_cancel=True)
    await pay(ctx, business_id, entry["_id"], entry["memberId"], decision, f"waitlist_{how}")
    await ctx.db.patch(entry["_id"], {
        **payment, "status": "confirmed", "source": "waitlist", "skipReason": None, "policy": policy.to_json(),
        "offerExpiresAt": None,
    })
    if not held:
        await bump(ctx, instance, booked=1, waitlisted=-1)
    await notify(ctx, business_id, "waitlist_promoted" if how == "promotion" else "waitlist_claimed", entry["memberId"], bookingId=entry["_id"],
                 instanceId=instance["_id"], startsAt=instance["startsAt"], payWith=payment["payWith"],
                 creditsSpent=payment["creditsSpent"], amountCents=payment["amountCents"])
    await withdraw_clashing_entries(ctx, business_id, {**entry, "status": "confirmed"})
    await waive_for_refill(ctx, instance, entry, settings)
