"""Taking a seat: a new booking, a place on the waitlist, or a waiting member claiming a free seat.

The caller (``bookings:book``) has already decided who acts for whom; everything about the seat itself is
here: the queue first when a seat is free (W2), one active booking per member and class (C2), every reason
at once when the booking is refused (F9), and the waitlist limit (W11), all against the instance row's
counters in one SERIALIZABLE transaction (C1).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from functions._shared.settings import Settings, load_settings

from . import offers
from .eligibility import PayWith, evaluate
from .model import active_key, refuse
from .outbox import notify
from .seating import bump, pay, payment_fields, withdraw_clashing_entries
from .waitlist import auto_promotion_open, positions, promote, seat_entry

__all__ = ["BookResult", "GuestSeat", "book_with_guest", "guest_key", "take_seat"]

#: Longest guest name accepted.
MAX_GUEST_NAME = 200


def guest_key(member_id: str, instance_id: str, guest_name: str) -> str:
    """A guest's ``activeKey``: one live seat per booker, class and guest name (C2 for guests)."""
    return f"{active_key(member_id, instance_id)}|guest|{guest_name.casefold()}"


class GuestSeat(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """The guest's own booking row: a seat, or a place on the waitlist, of its own (G2)."""

    booking_id: str
    status: Literal["confirmed", "waitlisted"]
    guest_name: str
    position: int | None = None
    pay_with: str | None = None


class BookResult(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    booking_id: str
    #: confirmed or waitlisted; when only a guest was added, the booker's own (still active) status
    status: Literal["confirmed", "waitlisted", "offered", "checked_in"]
    position: int | None = None
    reasons: list[str] | None = None
    pay_with: str | None = None  # membership | credits | dropin: how the seat was paid (F13)
    membership_id: str | None = None
    guest: GuestSeat | None = None


async def take_seat(
    ctx: Any, instance: dict[str, Any], member: dict[str, Any], pay_with: PayWith | None,
    override_reason: str | None, *, on_behalf: bool, guest_name: str | None = None,
) -> BookResult:
    """Book ``member`` (or, with ``guest_name``, a guest paid by them) into the scheduled ``instance``:
    confirmed while seats are free, else waitlisted."""
    instance_id = instance["_id"]
    settings, business = await load_settings(ctx.db, instance["businessId"])
    promoted: list[str] = []
    free = instance["capacity"] - instance["booked"]
    if free > 0 and instance["waitlisted"] > 0 and (
        auto_promotion_open(instance, settings, ctx.now) or settings.offer_minutes > 0
    ):
        # A seat released without a promotion or offer (e.g. capacity raised elsewhere) goes to the queue
        # first (W2, W5).
        promoted = await promote(ctx, instance)
    key = active_key(member["_id"], instance_id) if guest_name is None else guest_key(member["_id"], instance_id, guest_name)
    existing = await ctx.db.query("bookings").with_index("by_active_key", lambda q: q.eq("activeKey", key)).first()
    free = instance["capacity"] - instance["booked"]
    if existing is not None:
        if existing["_id"] in promoted:
            return BookResult(booking_id=existing["_id"], status="confirmed")
        if existing["status"] == "waitlisted" and free > 0:
            return await _claim(ctx, instance, member, existing, settings, business)
        if existing["status"] == "offered":  # booking again is taking the held seat (W5)
            claimed = await offers.claim(ctx, existing)
            return BookResult(booking_id=existing["_id"], status="confirmed", pay_with=claimed["payWith"],
                              membership_id=claimed["membershipId"])
        raise refuse(["already_booked"], "already booked for this class", bookingId=existing["_id"],
                     status=existing["status"])
    decision = await evaluate(ctx, instance, member, settings, business, pay_with,
                              enforce_window=override_reason is None, allow_membership=guest_name is None)
    limit = settings.waitlist_limit
    if free <= 0 and instance["waitlisted"] >= limit:
        decision.reasons.append("waitlist_full")
        decision.details["waitlistLimit"] = limit
    if not decision.ok:
        raise refuse(decision.reasons, "the booking cannot be made: " + ", ".join(decision.reasons),
                     **decision.details)
    source = "staff" if on_behalf or override_reason is not None else "self"
    row: dict[str, Any] = {
        "instanceId": instance_id, "memberId": member["_id"], "source": source, "policy": settings.policy().to_json(),
        "priority": 0, "joinedAt": ctx.now, "startsAt": instance["startsAt"], "endsAt": instance["endsAt"],
        "activeKey": key, "late": False, "reason": override_reason, "guestName": guest_name,
    }
    if free > 0:
        booking_id = await ctx.db.insert("bookings", {**row, **payment_fields(decision), "status": "confirmed"})
        await pay(ctx, instance["businessId"], booking_id, member["_id"], decision, "booking")
        await bump(ctx, instance, booked=1)
        await notify(ctx, instance["businessId"], "booking_confirmed", member["_id"], bookingId=booking_id,
                     instanceId=instance_id, startsAt=instance["startsAt"], payWith=decision.pay_with,
                     guestName=guest_name)
        await withdraw_clashing_entries(ctx, instance["businessId"], {**row, "_id": booking_id})
        return _confirmed(booking_id, decision)
    booking_id = await ctx.db.insert("bookings", {
        **row, "status": "waitlisted", "payWith": pay_with, "creditsSpent": 0, "amountCents": 0,
        "quote": decision.quote,
    })
    await bump(ctx, instance, waitlisted=1)
    position = (await positions(ctx.db, instance["businessId"], instance_id))[booking_id]
    await notify(ctx, instance["businessId"], "waitlist_joined", member["_id"], bookingId=booking_id,
                 instanceId=instance_id, position=position, guestName=guest_name)
    return BookResult(booking_id=booking_id, status="waitlisted", position=position, reasons=["class_full"])


async def _claim(
    ctx: Any, instance: dict[str, Any], member: dict[str, Any], entry: dict[str, Any], settings: Settings,
    business: dict[str, Any],
) -> BookResult:
    """A waiting member takes a free seat (open booking after the promotion cutoff, W3)."""
    decision = await evaluate(ctx, instance, member, settings, business, entry.get("payWith"),
                              enforce_window=False, stored_quote=entry.get("quote"),
                              allow_membership=not entry.get("guestName"))
    if not decision.ok:
        raise refuse(decision.reasons, "the seat cannot be claimed: " + ", ".join(decision.reasons),
                     bookingId=entry["_id"], **decision.details)
    await seat_entry(ctx, instance, entry, decision, settings, how="claim")
    return _confirmed(entry["_id"], decision)


def _confirmed(booking_id: str, decision: Any) -> BookResult:
    membership = decision.membership
    return BookResult(booking_id=booking_id, status="confirmed", pay_with=decision.pay_with,
                      membership_id=None if membership is None else membership["_id"])


async def book_with_guest(
    ctx: Any, instance: dict[str, Any], member: dict[str, Any], pay_with: PayWith | None,
    override_reason: str | None, guest_name: str, *, on_behalf: bool,
) -> BookResult:
    """The booker's seat (unless they already have one in this class) and one more for a guest, each a row of
    its own that takes a seat or a waitlist place in turn (G2). The guest is paid by the booker with
    credits or a drop-in; a membership is personal and never pays for a guest."""
    existing = await ctx.db.query("bookings").with_index(
        "by_active_key", lambda q: q.eq("activeKey", active_key(member["_id"], instance["_id"]))
    ).first()
    if existing is None:
        own = await take_seat(ctx, instance, member, pay_with, override_reason, on_behalf=on_behalf)
    else:
        own = BookResult(booking_id=existing["_id"], status=existing["status"])
    guest_pay: PayWith | None = pay_with if pay_with in ("credits", "dropin") else None
    seat = await take_seat(ctx, instance, member, guest_pay, override_reason, on_behalf=on_behalf,
                           guest_name=guest_name)
    own.guest = GuestSeat(booking_id=seat.booking_id, status="confirmed" if seat.status == "confirmed" else "waitlisted",
                          guest_name=guest_name, position=seat.position, pay_with=seat.pay_with)
    return own
