"""Booking states, roles, the waitlist order and the shapes returned to clients.

A booking row is *active* (it holds ``active_key`` and so blocks a second booking of the same member for the
same class, C2) in every status but the terminal cancelled/withdrawn ones. Waitlist order is
``(priority, joinedAt, _id)`` and a position is computed on read, never stored (W1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from backend import AppError
from functions._rules.recurrence import format_instant

__all__ = [
    "ACTIVE",
    "ATTENDANCE_ROLES",
    "STAFF_ROLES",
    "BookingView",
    "active_key",
    "booking_view",
    "collect",
    "plain",
    "refuse",
    "waitlist_order",
]

STAFF_ROLES = ("owner", "admin")
ATTENDANCE_ROLES = ("owner", "admin", "instructor")

Status = Literal[
    "confirmed", "waitlisted", "offered", "cancelled", "cancelled_by_studio", "checked_in", "no_show", "withdrawn",
]
#: ``offered``: a waiting entry holding a freed seat until it claims it or the offer expires (W5).
ACTIVE: frozenset[str] = frozenset({"confirmed", "waitlisted", "offered", "checked_in", "no_show"})
SEATED: frozenset[str] = frozenset({"confirmed", "checked_in", "no_show"})


async def collect(query: Any, hint: int = 256) -> list[dict[str, Any]]:
    """Every row of an index range; one round trip when there are at most ``hint`` (``collect`` opens a cursor)."""
    rows: list[dict[str, Any]] = await query.take(hint)
    if len(rows) < hint:
        return rows
    everything: list[dict[str, Any]] = await query.collect()
    return everything


def active_key(member_id: str, instance_id: str) -> str:
    return f"{member_id}|{instance_id}"


def waitlist_order(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries in promotion order: tier, then join time, then id so equal instants still order stably (W1)."""
    return sorted(entries, key=lambda e: (e["priority"], e["joinedAt"], e["_id"]))


def plain(value: Any) -> Any:
    """JSON-ready: instants as ISO strings, ``None`` members of objects dropped."""
    if isinstance(value, dt.datetime):
        return format_instant(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def refuse(reasons: Sequence[str], message: str, **details: Any) -> AppError:
    """A booking refusal with machine-readable reasons (F9); ``details`` are camelCase extras."""
    data: dict[str, Any] = {"code": "booking_refused", "reasons": list(reasons)}
    data.update(plain(details))
    return AppError(data, message)


class BookingView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """One booking or waitlist entry as clients see it; ``position`` only on waiting entries (1 = next)."""

    booking_id: str
    instance_id: str
    member_id: str
    status: str
    source: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    joined_at: dt.datetime
    credits_spent: int
    amount_cents: int
    late: bool
    pay_with: str | None = None
    position: int | None = None
    penalty: dict[str, Any] | None = None
    cancelled_at: dt.datetime | None = None
    checked_in_at: dt.datetime | None = None
    reason: str | None = None
    skip_reason: str | None = None
    class_name: str | None = None
    member_name: str | None = None
    guest_name: str | None = None
    membership_id: str | None = None
    offer_expires_at: dt.datetime | None = None


def booking_view(
    row: dict[str, Any], *, position: int | None = None, class_name: str | None = None, member_name: str | None = None
) -> BookingView:
    return BookingView(
        booking_id=row["_id"],
        instance_id=row["instanceId"],
        member_id=row["memberId"],
        status=row["status"],
        source=row["source"],
        starts_at=row["startsAt"],
        ends_at=row["endsAt"],
        joined_at=row["joinedAt"],
        credits_spent=row["creditsSpent"],
        amount_cents=row["amountCents"],
        late=row["late"],
        pay_with=row.get("payWith"),
        position=position,
        penalty=row.get("penalty"),
        cancelled_at=row.get("cancelledAt"),
        checked_in_at=row.get("checkedInAt"),
        reason=row.get("reason"),
        skip_reason=row.get("skipReason"),
        class_name=class_name,
        member_name=member_name,
        guest_name=row.get("guestName"),
        membership_id=row.get("membershipId"),
        offer_expires_at=row.get("offerExpiresAt"),
    )
