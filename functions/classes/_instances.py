"""One instance at a time: the schedule view, one-off edits (exceptions, T8), cancel and restore."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from functions._booking.changes import class_moved, seats_added
from functions._rules.recurrence import format_instant, local_to_utc, parse_local_date, parse_local_time
from functions._shared.errors import conflict, invalid
from functions._shared.settings import Settings
from functions.pricing._quote import Warn, resolve

from . import _model as m
from ._generate import closed_dates

__all__ = ["InstanceView", "edit_instance", "restore", "view"]

Doc = dict[str, Any]


class InstanceView(msgspec.Struct, rename="camel"):
    """An instance as the live schedule shows it: UTC instants plus venue-local fields and zone (T13).

    ``priceCents`` and ``creditCost`` are what booking it costs now, exactly what ``bookings:book`` charges
    (``priceSource`` and ``creditSource`` say which level decided each).
    """

    id: str = msgspec.field(name="_id")
    template_id: str | None = None
    venue_id: str = ""
    name: str = ""
    starts_at: str = ""
    ends_at: str = ""
    local_date: str = ""
    local_time: str = ""
    timezone: str = ""
    capacity: int = 0
    booked: int = 0
    waitlisted: int = 0
    status: str = "scheduled"
    cancel_reason: str | None = None
    is_exception: bool = False
    price_cents: int = 0
    credit_cost: int = 1
    price_source: str = "default"
    credit_source: str = "default"
    instructor_id: str | None = None
    dropin: bool = True


def view(instance: Doc, currency: str, settings: Settings, rules: list[Doc], warn: Warn | None = None) -> InstanceView:
    price = resolve(instance, currency, settings, rules, warn)
    return InstanceView(
        id=instance["_id"],
        template_id=instance.get("templateId"),
        venue_id=instance["venueId"],
        name=instance["name"],
        starts_at=format_instant(instance["startsAt"]),
        ends_at=format_instant(instance["endsAt"]),
        local_date=instance["localDate"],
        local_time=instance["localTime"],
        timezone=instance["timezone"],
        capacity=instance["capacity"],
        booked=instance["booked"],
        waitlisted=instance["waitlisted"],
        status=instance["status"],
        cancel_reason=instance.get("cancelReason"),
        is_exception=bool(instance["isException"]),
        price_cents=price.amount_cents,
        credit_cost=price.credit_cost,
        price_source=price.source,
        credit_source=price.credit_source,
        instructor_id=instance.get("instructorId"),
        dropin=price.dropin,
    )


def _require_future(instance: Doc, now: datetime) -> None:
    if instance["status"] == "cancelled":
        raise conflict("instance_cancelled", "the class is cancelled", instanceId=instance["_id"])
    if instance["startsAt"] <= now:
        raise conflict("instance_started", "the class has already started", instanceId=instance["_id"])


async def _require_open(db: Any, instance: Doc, local_date: str) -> None:
    day = parse_local_date(local_date)
    if await closed_dates(db, instance["businessId"], instance["venueId"], day, day):
        raise conflict("date_closed", "the venue is closed that day", localDate=local_date)


async def edit_instance(ctx: Any, instance: Doc, changes: Doc, overbook_reason: str | None = None) -> list[str]:
    """Change one instance; it becomes an exception that template edits leave alone (T8).

    A new local date/time is placed in the instance's zone; a time inside a daylight-saving gap is
    rejected (an explicit edit is never shifted silently), an ambiguous one takes its first occurrence.
    Capacity below the seats taken needs ``overbook_reason`` (C4); seats added are filled from the waitlist
    at once (W2); a move gives every booked member a free cancel and a notice (T7). Returns the ids of the
    bookings promoted.
    """
    db, now = ctx.db, ctx.now
    _require_future(instance, now)
    fields: Doc = {}
    for key in ("name", "capacity", "instructorId"):
        if key in changes:
            fields[key] = changes[key]
    if "priceCents" in changes:
        fields["priceOverrideCents"] = changes["priceCents"]
    if "creditCost" in changes:
        fields["creditCostOverride"] = changes["creditCost"]
    m.check_numbers({k: changes.get(k) for k in m.LIMITS})
    if "name" in changes and not changes["name"].strip():
        raise invalid("name", "must not be empty")
    if "instructorId" in changes:
        await m.check_instructor(db, changes["instructorId"])
    if "capacity" in changes:
        venue = await db.get(instance["venueId"])
        m.check_numbers({"capacity": changes["capacity"]}, venue)
        fields["overbookReason"] = m.check_capacity(
            [instance], changes["capacity"], overbook_reason is not None, overbook_reason)
    if {"localDate", "startTime", "durationMinutes"} & changes.keys():
        local_date: str = changes.get("localDate") or instance["localDate"]
        local_time: str = changes.get("startTime") or instance["localTime"]
        minutes: int = changes.get("durationMinutes") or int((instance["endsAt"] - instance["startsAt"]).total_seconds() // 60)
        starts_at = local_to_utc(parse_local_date(local_date), parse_local_time(local_time), instance["timezone"], "skip")
        if starts_at is None:
            raise invalid("startTime", f"{local_date} {local_time} does not exist in {instance['timezone']} "
                          "(daylight-saving gap)", timezone=instance["timezone"])
        if starts_at <= now:
            raise invalid("startTime", "the class would start in the past")
        if local_date != instance["localDate"]:
            await _require_open(db, instance, local_date)
        fields.update(localDate=local_date, localTime=local_time, startsAt=starts_at,
                      endsAt=starts_at + timedelta(minutes=minutes))
    fields = m.changed(instance, fields)
    if not fields:
        return []
    await db.patch(instance["_id"], {**fields, "isException": True})
    updated = {**instance, **fields, "isException": True}
    if "startsAt" in fields or "endsAt" in fields:
        await class_moved(ctx, updated, sorted(k for k in fields if k != "overbookReason"),
                          updated["startsAt"], updated["endsAt"])
    return await seats_added(ctx, updated) if "capacity" in fields else []


async def restore(db: Any, instance: Doc, now: datetime) -> None:
    """Bring back a cancelled instance: the explicit action T6 asks for a class whose members were refunded."""
    if instance["status"] != "cancelled":
        return
    if instance["startsAt"] <= now:
        raise conflict("instance_started", "the class has already started", instanceId=instance["_id"])
    await _require_open(db, instance, instance["localDate"])
    await db.patch(instance["_id"], {"status": "scheduled", "cancelReason": None, "closureId": None})
