"""Editing a series: "this and following" splits, ending a series, and re-applying a template (T7-T10).

An edit from ``fromDate`` never touches instances of earlier slots. From ``fromDate`` on, each existing
instance is matched to the edited series' occurrence on the same slot date:

* frozen instances (cancelled, one-off exceptions, already started) keep every field; they only join the
  edited series so it never generates that date again (T8, T9);
* other instances take the new fields in place, keeping their id and bookings (T7); members of a booked
  class that moved are notified and may cancel free; seats added are filled from the waitlist (W2), and
  capacity below a class's bookings needs an explicit overbooking reason (C4);
* an instance whose date left the series is soft-deleted if nobody booked it, else kept and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from functions._booking.changes import class_moved, seats_added
from functions._rules.recurrence import normalize_rrule, parse_local_date, parse_rrule, validate_rrule
from functions._shared.errors import invalid
from functions._shared.settings import Settings

from . import _model as m
from ._generate import (
    closed_dates,
    expand,
    first_occurrence_from,
    horizon_end,
    local_today,
    mark_generated,
    require_a_class,
    template_slots,
)

__all__ = ["EDITABLE", "EditOutcome", "apply_edit", "check_rrule", "end_series"]

Doc = dict[str, Any]
EDITABLE = (
    "name", "venueId", "startTime", "durationMinutes", "rrule", "capacity", "instructorId", "priceCents", "creditCost",
    "creditOnly",
)
_TIME_FIELDS = ("startsAt", "endsAt", "venueId")


@dataclass
class EditOutcome:
    template_id: str
    split: bool
    updated: int = 0
    created: int = 0
    removed: int = 0
    kept_booked: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)


def check_rrule(rrule: str, tz: str, start: date) -> str:
    """Normalise (UNTIL to UTC, T12) and reject rules without any occurrence from ``start``."""
    try:
        normalized = normalize_rrule(rrule, tz)
        validate_rrule(normalized, start)
    except ValueError as error:
        raise invalid("rrule", str(error)) from None
    return normalized


async def _merge(db: Any, template: Doc, changes: Doc) -> Doc:
    """The template with ``changes`` applied and checked (venue zone follows a venue change)."""
    merged = {**template, **changes}
    venue = await m.load_venue(db, merged["venueId"])
    merged["timezone"] = venue["timezone"]
    if "instructorId" in changes:
        await m.check_instructor(db, changes["instructorId"])
    m.check_numbers({k: merged.get(k) for k in m.LIMITS}, venue)
    # A credit cost without a price sells the class for credits only (PR6); a price brings the drop-in back.
    if "priceCents" in changes:
        merged["creditOnly"] = False
    elif "creditCost" in changes and merged.get("priceCents") is None:
        merged["creditOnly"] = True
    merged["creditOnly"] = bool(merged.get("creditOnly"))
    if not str(merged["name"]).strip():
        raise invalid("name", "must not be empty")
    return merged


def _continue_count(template: Doc, sequence: int) -> str:
    """The old rule for the later half of a split: COUNT becomes what the earlier half has not used."""
    count = parse_rrule(template["rrule"]).count
    if count is None:
        return str(template["rrule"])
    return re.sub(r"COUNT=\d+", f"COUNT={count - sequence}", template["rrule"])


async def apply_edit(
    ctx: Any, business: Doc, template: Doc, changes: Doc, from_date: date | None, overbook_reason: str | None = None
) -> EditOutcome:
    """Edit the series from ``from_date`` (default: today, or the series start if later)."""
    db, now = ctx.db, ctx.now
    settings = Settings.of(business)
    today = local_today(now, template["timezone"])
    start = parse_local_date(template["startDate"])
    first_day = from_date if from_date is not None else max(today, start)
    if first_day < today:
        raise invalid("fromDate", "must not be in the past: earlier classes are history", today=today.isoformat())
    if template.get("endsAfter") is not None and first_day > parse_local_date(template["endsAfter"]):
        raise invalid("fromDate", "is after the series' last day", endsAfter=template["endsAfter"])
    merged = await _merge(db, template, changes)
    split = first_day > start
    if split:
        if "rrule" in changes:
            new_start = first_day
            rrule = check_rrule(changes["rrule"], merged["timezone"], new_start)
        else:
            first = first_occurrence_from(template, first_day, settings.gap_policy)
            if first is None:
                raise invalid("fromDate", "the series has no occurrence on or after it")
            new_start, rrule = first.local_date, _continue_count(template, first.sequence)
        target = {k: merged[k] for k in (*EDITABLE, "timezone", "endsAfter")}
        target.update(startDate=new_start.isoformat(), rrule=rrule, status="active", generatedUntil=None,
                      parentTemplateId=template["_id"], businessId=template["businessId"])
        if "rrule" in changes:
            require_a_class(target, settings.gap_policy)  # T14
        target["_id"] = await db.insert("class_templates", {k: v for k, v in target.items() if k != "_id"})
        last_old = (first_day - timedelta(days=1)).isoformat()
        await db.patch(template["_id"], {"endsAfter": last_old})
        await mark_generated(db, {**template, "endsAfter": last_old}, None)
    else:
        if "rrule" in changes:
            merged["rrule"] = check_rrule(changes["rrule"], merged["timezone"], start)
            require_a_class(merged, settings.gap_policy)  # T14
        updates = {k: merged[k] for k in (*EDITABLE, "timezone") if merged[k] != template.get(k)}
        if updates:
            await db.patch(template["_id"], updates)
        target = merged
    outcome = EditOutcome(template_id=target["_id"], split=split)
    await _reapply(ctx, template, target, settings, first_day, outcome, overbook_reason)
    return outcome


async def _reapply(
    ctx: Any, old: Doc, target: Doc, settings: Settings, first_day: date, outcome: EditOutcome,
    overbook_reason: str | None,
) -> None:
    """Match the old series' instances from ``first_day`` to the edited series and fill the gaps."""
    db, now = ctx.db, ctx.now
    business_id, target_id = old["businessId"], target["_id"]
    existing = await template_slots(db, business_id, old["_id"], first_day, None)
    end = horizon_end(now, target["timezone"], settings.horizon_days)
    last_slot = max([end, *(m.slot_date(i) for i in existing)])
    occurrences = {o.local_date: o for o in expand(target, first_day, last_slot, settings.gap_policy)}
    closed = await closed_dates(db, business_id, target["venueId"], first_day, last_slot)
    filled: set[date] = set()
    resized: list[Doc] = []
    for instance in existing:
        day = m.slot_date(instance)
        occurrence = occurrences.get(day)
        frozen = instance["status"] == "cancelled" or instance["isException"] or instance["startsAt"] <= now
        if frozen:
            if occurrence is not None:
                key = m.occurrence_key(target_id, occurrence.local_date, occurrence.local_time)
                if (instance["occurrenceKey"], instance["templateId"]) != (key, target_id):
                    await db.patch(instance["_id"], {"templateId": target_id, "occurrenceKey": key})
                filled.add(day)
            continue
        if occurrence is not None and day not in closed:
            fields = m.changed(instance, m.generated_fields(target, target_id, occurrence))
            if "capacity" in fields:
                resized.append(instance)
                fields["overbookReason"] = overbook_reason if instance["booked"] > fields["capacity"] else None
                fields = m.changed(instance, fields)
            if fields:
                await db.patch(instance["_id"], fields)
                outcome.updated += 1
                updated = {**instance, **fields}
                if any(k in fields for k in _TIME_FIELDS):
                    await class_moved(ctx, updated, sorted(k for k in fields if k != "overbookReason"),
                                      occurrence.starts_at, occurrence.ends_at)
                if "capacity" in fields:
                    outcome.promoted += await seats_added(ctx, updated)
            filled.add(day)
        elif m.is_booked(instance):
            outcome.kept_booked.append(instance["_id"])
        else:
            await db.delete(instance["_id"])
            outcome.removed += 1
    m.check_capacity(resized, target["capacity"], overbook_reason is not None, overbook_reason)
    first_new = max(first_day, local_today(now, target["timezone"]))
    for day, occurrence in sorted(occurrences.items()):
        if first_new <= day <= end and day not in filled and day not in closed:
            await db.insert("class_instances", m.new_instance(business_id, target, target_id, occurrence))
            outcome.created += 1
    await mark_generated(db, target, end)


async def end_series(ctx: Any, template: Doc, after: date) -> int:
    """End the series after ``after``: later instances that have not started are cancelled, never deleted
    (T10). The series ends now, or once it is materialised up to its new last day."""
    last = template.get("endsAfter")
    if last is not None and parse_local_date(last) <= after:
        after = parse_local_date(last)
    cancelled = 0
    db = ctx.db
    for instance in await template_slots(db, template["businessId"], template["_id"], after + timedelta(days=1), None):
        if instance["startsAt"] > ctx.now and await m.cancel(ctx, instance, "series ended"):
            cancelled += 1
    await db.patch(template["_id"], {"endsAfter": after.isoformat()})
    await mark_generated(db, {**template, "endsAfter": after.isoformat()}, None)
    return cancelled
