"""Class templates and instances as rows: occurrence keys, field checks, and the writes every path shares.

An instance's ``occurrenceKey`` names the *slot of its series* it fills (``template|localDate|localTime``), not
where it is now: a cancelled instance, or one moved by a one-off edit, keeps its key, so generation never
fills that slot again (T6, T8, T9). Keys of one template sort by slot date, which lets a single index range
on ``by_occurrence`` find every instance of a template in a window of dates.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from functions._booking.cancellation import cancel_for_studio
from functions._rules.recurrence import Occurrence
from functions._shared.errors import conflict, invalid, not_found

__all__ = [
    "LIMITS",
    "cancel",
    "changed",
    "check_capacity",
    "check_instructor",
    "check_numbers",
    "check_overbook_args",
    "generated_fields",
    "is_booked",
    "key_range",
    "load_venue",
    "new_instance",
    "occurrence_key",
    "slot_date",
]

Doc = dict[str, Any]

#: Inclusive bounds of the numbers a template or instance carries.
LIMITS: dict[str, tuple[int, int]] = {
    "durationMinutes": (1, 1440),
    "capacity": (1, 10_000),
    "priceCents": (0, 100_000_000),
    "creditCost": (1, 100),
}
_INSTRUCTOR_ROLES = ("owner", "admin", "instructor")


def occurrence_key(template_id: str, local_date: date, local_time: time) -> str:
    return f"{template_id}|{local_date.isoformat()}|{local_time.strftime('%H:%M')}"


def key_range(template_id: str, start: date, end: date | None) -> tuple[str, str]:
    """``[low, high)`` over ``occurrenceKey`` covering the template's slots dated ``start``..``end``."""
    high = f"{template_id}|{end.isoformat()}|~" if end is not None else f"{template_id}|~"
    return f"{template_id}|{start.isoformat()}", high


def slot_date(instance: Doc) -> date:
    """The local date of the series slot the instance fills (where it was generated, not where it moved)."""
    key = instance.get("occurrenceKey")
    if key:
        return date.fromisoformat(key.split("|")[1])
    return date.fromisoformat(instance["localDate"])


def is_booked(instance: Doc) -> bool:
    return bool(instance["booked"] or instance["waitlisted"])


def check_numbers(values: dict[str, int | None], venue: Doc | None = None) -> None:
    """Range checks (wire names in ``values``); a class may not hold more people than its venue."""
    for field, value in values.items():
        if value is None or field not in LIMITS:
            continue
        low, high = LIMITS[field]
        if not low <= value <= high:
            raise invalid(field, f"must be between {low} and {high}", min=low, max=high)
    capacity = values.get("capacity")
    if capacity is not None and venue is not None and venue.get("capacity") is not None and capacity > venue["capacity"]:
        raise invalid("capacity", f"is more than the venue holds ({venue['capacity']})", max=venue["capacity"])


def check_capacity(instances: list[Doc], capacity: int, allow_overbook: bool, reason: str | None) -> str | None:
    """Capacity below the seats already taken is refused (C4) unless staff acknowledge the overbooking
    with a reason; returns the reason to record (None when nothing is overbooked)."""
    over = [i["_id"] for i in instances if i["booked"] > capacity]
    if not over:
        return None
    if not allow_overbook:
        raise conflict("capacity_below_booked", "more people are booked than the new capacity: pass "
                       "allowOverbook with an overbookReason to keep them all", instanceIds=over)
    assert reason is not None  # checked with the arguments
    return reason


def check_overbook_args(allow_overbook: bool, reason: str | None) -> str | None:
    """``allowOverbook`` needs a reason members and auditors can read, and a reason needs the flag."""
    if allow_overbook and (reason is None or not reason.strip()):
        raise invalid("overbookReason", "is required with allowOverbook")
    if not allow_overbook and reason is not None:
        raise invalid("allowOverbook", "must be true when an overbookReason is given")
    return reason.strip() if reason is not None else None


async def load_venue(db: Any, venue_id: str, field: str = "venueId") -> Doc:
    venue: Doc | None = await db.get(venue_id)
    if venue is None:
        raise not_found(field)
    return venue


async def check_instructor(db: Any, instructor_id: str | None) -> None:
    """An instructor must be a live member of this business who teaches (instructor, admin or owner)."""
    if instructor_id is None:
        return
    member = await db.get(instructor_id)
    if member is None:
        raise not_found("instructorId")
    if member["role"] not in _INSTRUCTOR_ROLES or member["status"] != "active":
        raise invalid("instructorId", "must be an active instructor, admin or owner", role=member["role"])


def generated_fields(template: Doc, template_id: str, occurrence: Occurrence) -> Doc:
    """What an instance takes from its template and occurrence; template edits re-apply exactly these."""
    return {
        "templateId": template_id,
        "venueId": template["venueId"],
        "name": template["name"],
        "startsAt": occurrence.starts_at,
        "endsAt": occurrence.ends_at,
        "localDate": occurrence.local_date.isoformat(),
        "localTime": occurrence.local_time.strftime("%H:%M"),
        "timezone": occurrence.tz,
        "capacity": template["capacity"],
        "priceCents": template.get("priceCents"),
        "creditCost": template["creditCost"],
        "creditOnly": bool(template.get("creditOnly")),
        "instructorId": template.get("instructorId"),
        "occurrenceKey": occurrence_key(template_id, occurrence.local_date, occurrence.local_time),
    }


def new_instance(business_id: str, template: Doc, template_id: str, occurrence: Occurrence) -> Doc:
    return {
        "businessId": business_id,
        **generated_fields(template, template_id, occurrence),
        "booked": 0,
        "waitlisted": 0,
        "status": "scheduled",
        "cancelReason": None,
        "isException": False,
        "priceOverrideCents": None,
        "creditCostOverride": None,
    }


def changed(instance: Doc, fields: Doc) -> Doc:
    """The subset of ``fields`` that differs from the stored instance (instants compared as instants)."""
    out: Doc = {}
    for key, value in fields.items():
        current = instance.get(key)
        if isinstance(value, datetime) and isinstance(current, datetime):
            if value != current:
                out[key] = value
        elif current != value:
            out[key] = value
    return out


async def cancel(ctx: Any, instance: Doc, reason: str) -> bool:
    """Cancel a scheduled instance; False when it was already cancelled.

    Its bookings and waitlist end in the same transaction with full refunds, no penalties and a notice to
    each member (C7, T6), through the bookings domain.
    """
    if instance["status"] == "cancelled":
        return False
    await cancel_for_studio(ctx, instance, reason)
    await ctx.db.patch(instance["_id"], {"status": "cancelled", "cancelReason": reason})
    return True
