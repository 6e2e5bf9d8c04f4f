"""Bookings: book a seat or join the waitlist, cancel, attendance, rosters.

Every seat decision reads and writes the class instance's ``booked``/``waitlisted`` counters inside one
SERIALIZABLE transaction (the engine retries conflicts), with the ``active_key`` unique index as the
backstop for one active booking per member and class (C1, C2). Refusals are ``AppError``s with
``{"code": "booking_refused", "reasons": [...], ...}`` (F9); notifications go to ``outbox`` in the same
transaction (M7).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from backend import (
    AppError,
    Forbidden,
    Instant,
    MutationCtx,
    NotFound,
    QueryCtx,
    internal_mutation,
    mutation,
    query,
)
from functions._booking import attendance, cancellation, offers
from functions._booking.booking import MAX_GUEST_NAME, BookResult, book_with_guest, take_seat
from functions._booking.model import (
    ATTENDANCE_ROLES,
    STAFF_ROLES,
    BookingView,
    booking_view,
    collect,
    refuse,
)
from functions._booking.waitlist import positions, waiting
from functions._shared.fanout import fan_out
from schema import BookingId, BusinessId, InstanceId, MemberId


async def _member_for(ctx: MutationCtx | QueryCtx, member_id: str | None) -> tuple[dict[str, Any], bool]:
    """The member acted for, and whether staff act for someone else. Besides staff, a member may act for
    their own dependants (G1); that is not a staff action."""
    caller = ctx.member
    assert caller is not None
    if member_id is None or member_id == caller["_id"]:
        return caller, False
    staff = caller["role"] in STAFF_ROLES
    member = await ctx.db.get(member_id)
    if member is not None and member.get("ownerId") == caller["_id"]:
        return member, False
    if not staff:
        raise Forbidden("only staff may act for another member (or a member for their own dependants)")
    if member is None:
        raise NotFound("$.args.memberId: not found")
    return member, True


async def _answers_for(ctx: MutationCtx | QueryCtx, member_id: str) -> bool:
    """Whether the caller is ``member_id`` or owns that dependant."""
    caller = ctx.member
    assert caller is not None
    if member_id == caller["_id"]:
        return True
    member = await ctx.db.get(member_id, include_deleted=True)
    return member is not None and member.get("ownerId") == caller["_id"]


@mutation(tenant="instance_id")
async def book(
    ctx: MutationCtx,
    instance_id: InstanceId,
    member_id: MemberId | None = None,
    pay_with: Literal["membership", "credits", "dropin"] | None = None,
    override_reason: str | None = None,
    guest_name: str | None = None,
) -> BookResult:
    """Take a seat, or a place on the waitlist when the class is full.

    ``memberId`` books for someone else (staff). Without ``payWith`` a membership that covers the class
    pays, else credits (F13); ``dropin`` records the quoted price. The result's ``payWith`` says which paid. Staff may pass ``overrideReason`` to book outside
    the booking window (B3, B6: an explicit, audited override). A member already waiting for this class
    who finds a free seat claims it.

    ``memberId`` may also name one of the caller's dependants (G1). ``guestName`` books one more seat for a
    guest, paid by the booker with credits or a drop-in (G2): the result's ``guest`` is that seat (or
    waitlist place); the booker's own seat is booked too unless they already have one.
    """
    member, on_behalf = await _member_for(ctx, member_id)
    caller = ctx.member
    assert caller is not None
    if override_reason is not None and (caller["role"] not in STAFF_ROLES or not override_reason.strip()):
        raise Forbidden("only staff may override the booking window, and only with a reason")
    if member.get("status") != "active":
        raise refuse(["member_inactive"], "the member is not active", memberId=member["_id"])
    instance = await ctx.db.get(instance_id)
    if instance is None:
        raise NotFound("$.args.instanceId: not found")
    instance_id = instance["_id"]  # a plain str from here on (ids travel into JSON audit rows)
    if instance["status"] != "scheduled":
        raise refuse(["class_cancelled"], "the class is cancelled", instanceId=instance_id)
    if guest_name is not None:
        name = guest_name.strip()
        if not name or len(name) > MAX_GUEST_NAME:
            raise AppError({"code": "invalid_argument", "field": "guestName", "max": MAX_GUEST_NAME},
                           f"$.args.guestName: must not be empty and at most {MAX_GUEST_NAME} characters")
        return await book_with_guest(ctx, instance, member, pay_with, override_reason, name, on_behalf=on_behalf)
    return await take_seat(ctx, instance, member, pay_with, override_reason, on_behalf=on_behalf)


@mutation(tenant="booking_id")
async def cancel(
    ctx: MutationCtx, booking_id: BookingId, reason: str | None = None, waive_penalty: bool = False
) -> dict[str, Any]:
    """Cancel a booking or leave the waitlist; always allowed before the class ends, even when late (P8).

    Returns ``{status, late, penalty, refund, promotedBookingIds, penaltyWaived}``. The freed seat goes to
    the waitlist in this same transaction (W2); when a waiting member takes it, a late penalty is forgiven
    (``penaltyWaived: "seat_refilled"``, P4). Staff may cancel anyone's booking and may waive the penalty.
    """
    caller = ctx.member
    assert caller is not None
    booking = await ctx.db.get(booking_id)
    if booking is None:
        raise NotFound("$.args.bookingId: not found")
    staff = caller["role"] in STAFF_ROLES
    if not staff and not await _answers_for(ctx, booking["memberId"]):
        raise NotFound("$.args.bookingId: not found")
    if waive_penalty and not staff:
        raise Forbidden("only staff may waive a penalty")
    if not staff and booking["status"] == "confirmed" and ctx.now >= booking["endsAt"]:
        # After the class a cancellation would only turn a no-show into a cheaper late cancel (P3).
        raise AppError({"code": "not_cancellable", "status": booking["status"], "bookingId": booking["_id"],
                        "reason": "class_ended"}, "the class is over; it can no longer be cancelled")
    result = await cancellation.cancel_booking(ctx, booking, reason=reason, waive_penalty=waive_penalty)
    return {"status": result["status"], "late": result["late"], "penalty": result["penalty"],
            "refund": result["refund"], "promotedBookingIds": result["promoted"],
            "penaltyWaived": result["penaltyWaived"]}


@mutation(tenant="booking_id")
async def claim_offer(ctx: MutationCtx, booking_id: BookingId) -> dict[str, Any]:
    """Take the seat a waitlist offer holds (W5): ``{bookingId, status: "confirmed", payWith, membershipId}``.

    Refused with ``offer_expired`` once the offer ran out or the class started, ``not_offered`` when there is
    no open offer (e.g. already claimed). The member, their owner (dependants) or staff may claim.
    """
    caller = ctx.member
    assert caller is not None
    booking = await ctx.db.get(booking_id)
    if booking is None or (caller["role"] not in STAFF_ROLES and not await _answers_for(ctx, booking["memberId"])):
        raise NotFound("$.args.bookingId: not found")
    return await offers.claim(ctx, booking)


@internal_mutation(cross_tenant=True)
async def expire_offer(ctx: MutationCtx, booking_id: BookingId) -> bool:
    """Scheduled when an offer is made: at its expiry (or the class start) the seat passes to the next
    person waiting. Does nothing to an offer already claimed or declined."""
    booking = await ctx.db.get(booking_id)
    if booking is None:
        return False
    return await offers.expire(ctx, booking)


@mutation(tenant="booking_id", roles=ATTENDANCE_ROLES)
async def check_in(ctx: MutationCtx, booking_id: BookingId) -> dict[str, Any]:
    """Mark the member present; also reverses a no-show mark within the edit window (P6)."""
    booking = await ctx.db.get(booking_id)
    if booking is None:
        raise NotFound("$.args.bookingId: not found")
    return await attendance.check_in(ctx, booking)


@mutation(tenant="booking_id", roles=ATTENDANCE_ROLES)
async def mark_no_show(ctx: MutationCtx, booking_id: BookingId) -> dict[str, Any]:
    """Mark a booking as a no-show once start + the grace of its policy has passed (P1); the penalty follows
    its policy (P3)."""
    booking = await ctx.db.get(booking_id)
    if booking is None:
        raise NotFound("$.args.bookingId: not found")
    return await attendance.mark_no_show(ctx, booking)


@internal_mutation(cross_tenant=True)
async def mark_no_shows_due(
    ctx: MutationCtx, limit: int = 500, business_id: BusinessId | None = None, cursor: str | None = None
) -> dict[str, int]:
    """The after-class job: no-shows for ended classes (P1, P9) and lapsed waitlist entries (W10).

    Safe to run any number of times: it only looks at rows still ``confirmed``/``waitlisted``, at most
    ``limit`` of each, so a backlog drains over successive runs. With ``businessId`` it does one business's
    work; without (the cron) it schedules one such job per business (``scheduled``), a page at a time.
    """
    if business_id is None:
        scheduled = await fan_out(ctx, "bookings:mark_no_shows_due", cursor, {"limit": limit})
        return {"marked": 0, "lapsed": 0, "scheduled": scheduled}
    if await ctx.db.get(business_id) is None:
        return {"marked": 0, "lapsed": 0}
    marked = len(await attendance.mark_due(ctx, business_id, limit))
    lapsed = len(await attendance.lapse_waitlist(ctx, business_id, limit))
    return {"marked": marked, "lapsed": lapsed}


@internal_mutation(cross_tenant=True)
async def cancel_instance_for_studio(ctx: MutationCtx, instance_id: InstanceId, reason: str) -> int:
    """The studio cancels a class: bookings end with full refunds and no penalties (C7); returns how many."""
    instance = await ctx.db.get(instance_id)
    if instance is None:
        raise NotFound("$.args.instanceId: not found")
    ended = await cancellation.cancel_for_studio(ctx, instance, reason)
    await ctx.db.patch(instance["_id"], {"status": "cancelled", "cancelReason": reason})
    return ended


def _instance_status(instance_id: str, status: str) -> Any:
    return lambda q: q.eq("instanceId", instance_id).eq("status", status)


class Roster(msgspec.Struct, rename="camel", kw_only=True):
    instance_id: str
    status: str
    capacity: int
    booked: int
    waitlisted: int
    attendees: list[BookingView]
    waitlist: list[BookingView]


@query(tenant="instance_id", roles=ATTENDANCE_ROLES)
async def for_instance(ctx: QueryCtx, instance_id: InstanceId) -> Roster:
    """The class roster: seated members (and seats held by an offer, W5), then the waitlist in order with
    positions (W1)."""
    instance = await ctx.db.get(instance_id)
    if instance is None:
        raise NotFound("$.args.instanceId: not found")
    seated: list[dict[str, Any]] = []
    for status in ("confirmed", "offered", "checked_in", "no_show"):
        seated += await collect(ctx.db.query("bookings").with_index(
            "by_instance_status", _instance_status(instance["_id"], status)
        ))
    seated.sort(key=lambda r: (r["joinedAt"], r["_id"]))
    names: dict[str, str | None] = {}

    async def name(member_id: str) -> str | None:
        if member_id not in names:
            member = await ctx.db.get(member_id, include_deleted=True)
            names[member_id] = None if member is None else member.get("name") or member.get("email")
        return names[member_id]

    attendees = [booking_view(r, member_name=await name(r["memberId"])) for r in seated]
    queue = [
        booking_view(r, position=i, member_name=await name(r["memberId"]))
        for i, r in enumerate(await waiting(ctx.db, instance["businessId"], instance["_id"]), start=1)
    ]
    return Roster(instance_id=instance["_id"], status=instance["status"], capacity=instance["capacity"],
                  booked=instance["booked"], waitlisted=instance["waitlisted"], attendees=attendees, waitlist=queue)


@query(tenant="business_id")
async def mine(
    ctx: QueryCtx,
    business_id: BusinessId,
    from_: Instant | None = None,
    to: Instant | None = None,
    include_ended: bool = False,
    member_id: MemberId | None = None,
) -> list[BookingView]:
    """The caller's bookings and waitlist entries by class start, waiting ones with their position (guests'
    seats included, with ``guestName``).

    ``from``/``to`` bound the class start (``[from, to)``); cancelled and withdrawn rows are left out
    unless ``includeEnded``. ``memberId`` reads one of the caller's dependants instead (G1).
    """
    member = ctx.member
    assert member is not None
    if member_id is not None and member_id != member["_id"]:
        dependant = await ctx.db.get(member_id)
        if dependant is None or dependant.get("ownerId") != member["_id"]:
            raise NotFound("$.args.memberId: not found")
        member = dependant
    low = None if from_ is None else from_.to_datetime()
    high = None if to is None else to.to_datetime()

    def bounds(q: Any) -> Any:
        q = q.eq("memberId", member["_id"])
        if low is not None:
            q = q.gte("startsAt", low)
        if high is not None:
            q = q.lt("startsAt", high)
        return q

    rows = await collect(ctx.db.query("bookings").with_index("by_member_start", bounds))
    views: list[BookingView] = []
    for row in rows:
        if row["status"] in ("cancelled", "cancelled_by_studio", "withdrawn") and not include_ended:
            continue
        instance = await ctx.db.get(row["instanceId"], include_deleted=True)
        position = (await positions(ctx.db, row["businessId"], row["instanceId"])).get(row["_id"]) if row["status"] == "waitlisted" else None
        views.append(booking_view(row, position=position, class_name=None if instance is None else instance["name"]))
    return views
