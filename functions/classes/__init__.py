"""Classes: recurring templates, their materialised instances, one-off edits and closures.

Public functions here validate and authorise; the rules live in the private modules beside this one.
"""

from __future__ import annotations

import builtins
from datetime import date, timedelta
from typing import Any

import msgspec

from backend import Instant, LocalDate, LocalTime, MutationCtx, QueryCtx, internal_mutation, mutation, query
from functions._rules.recurrence import parse_local_date
from functions._shared.errors import conflict, invalid, not_found
from functions._shared.fanout import fan_out
from functions._shared.roles import STAFF
from functions._shared.settings import Settings
from functions.pricing._model import load_rules
from schema import BusinessId, ClosureId, InstanceId, MemberId, TemplateId, VenueId

from . import _model as m
from ._closures import check_dates, close, reopen
from ._edit import EditOutcome, apply_edit, check_rrule, end_series
from ._generate import extend_business, generate, local_today, require_a_class
from ._instances import InstanceView, edit_instance, restore, view

Doc = dict[str, Any]
_MAX_RANGE = timedelta(days=92)


class EditResult(msgspec.Struct, rename="camel"):
    """What a template edit did: the series now in force (a new one after a split), the instance counts,
    and the waiting members promoted into seats the edit added."""

    template_id: str
    split: bool
    updated: int
    created: int
    removed: int
    kept_booked: builtins.list[str]
    promoted_booking_ids: builtins.list[str] = msgspec.field(default_factory=list)


class InstanceEdit(msgspec.Struct, rename="camel"):
    """What a one-off edit did beyond the class itself: the waiting members promoted into added seats."""

    promoted_booking_ids: builtins.list[str]


async def _business(ctx: QueryCtx | MutationCtx) -> Doc:
    business: Doc | None = await ctx.db.get(ctx.tenant or "")
    assert business is not None  # the engine resolved the tenant from it
    return business


async def _get(ctx: QueryCtx | MutationCtx, document_id: str, field: str) -> Doc:
    doc: Doc | None = await ctx.db.get(document_id)
    if doc is None:
        raise not_found(field)
    return doc


# -- templates ---------------------------------------------------------------------------------------------


@mutation(tenant="business_id", roles=STAFF)
async def create_template(
    ctx: MutationCtx,
    business_id: BusinessId,
    venue_id: VenueId,
    name: str,
    start_date: LocalDate,
    start_time: LocalTime,
    duration_minutes: int,
    rrule: str,
    capacity: int,
    instructor_id: MemberId | None = None,
    price_cents: int | None = None,
    credit_cost: int | None = None,
) -> TemplateId:
    """Create a recurring class at a venue (RRULE expanded in the venue's wall time) and materialise its
    instances from the start date (or today) up to the business's horizon.

    A ``creditCost`` without ``priceCents`` makes a credit-only class: no drop-in is offered (PR6). A rule
    that yields no class at all is refused (T14)."""
    venue = await m.load_venue(ctx.db, venue_id)
    if not name.strip():
        raise invalid("name", "must not be empty")
    m.check_numbers({"durationMinutes": duration_minutes, "capacity": capacity, "priceCents": price_cents,
                     "creditCost": credit_cost}, venue)
    await m.check_instructor(ctx.db, instructor_id)
    template: Doc = {
        "venueId": venue_id, "name": name.strip(), "startDate": str(start_date), "startTime": str(start_time),
        "durationMinutes": duration_minutes, "rrule": check_rrule(rrule, venue["timezone"], parse_local_date(start_date)),
        "timezone": venue["timezone"], "capacity": capacity, "instructorId": instructor_id, "priceCents": price_cents,
        "creditCost": credit_cost or 1, "creditOnly": price_cents is None and credit_cost is not None,
        "status": "active", "endsAfter": None, "generatedUntil": None, "parentTemplateId": None,
    }
    settings = Settings.of(await _business(ctx))
    require_a_class(template, settings.gap_policy)
    template_id = await ctx.db.insert("class_templates", template)
    await generate(ctx.db, await _get(ctx, template_id, "templateId"), settings, ctx.now)
    return TemplateId(template_id)


@mutation(tenant="template_id", roles=STAFF)
async def update_template(
    ctx: MutationCtx,
    template_id: TemplateId,
    from_date: LocalDate | None = None,
    name: str | None = None,
    venue_id: VenueId | None = None,
    start_time: LocalTime | None = None,
    duration_minutes: int | None = None,
    rrule: str | None = None,
    capacity: int | None = None,
    instructor_id: MemberId | None = None,
    price_cents: int | None = None,
    credit_cost: int | None = None,
    allow_overbook: bool = False,
    overbook_reason: str | None = None,
) -> EditResult:
    """Edit a series "from this date on" (default: all future classes). Editing from a date after the series
    start splits it: the old template ends the day before, a new one carries the change. Cancelled and
    individually edited classes keep their state; booked classes keep their id and bookings, and when they
    move their members may cancel free (T7). Capacity below a class's bookings needs ``allowOverbook`` with
    an ``overbookReason`` (C4); added seats are filled from the waitlist at once (W2)."""
    reason = m.check_overbook_args(allow_overbook, overbook_reason)
    template = await _get(ctx, template_id, "templateId")
    given = {"name": name, "venueId": venue_id, "startTime": start_time, "durationMinutes": duration_minutes,
             "rrule": rrule, "capacity": capacity, "instructorId": instructor_id, "priceCents": price_cents,
             "creditCost": credit_cost}
    changes = {k: (str(v) if k == "startTime" else v) for k, v in given.items() if v is not None}
    if not changes:  # nothing to apply: never split a series for nothing
        return EditResult(str(template_id), False, 0, 0, 0, [])
    first = parse_local_date(from_date) if from_date is not None else None
    outcome: EditOutcome = await apply_edit(ctx, await _business(ctx), template, changes, first, reason)
    return EditResult(outcome.template_id, outcome.split, outcome.updated, outcome.created, outcome.removed,
                      outcome.kept_booked, outcome.promoted)


@mutation(tenant="template_id", roles=STAFF)
async def end_template(ctx: MutationCtx, template_id: TemplateId, after_date: LocalDate) -> int:
    """End the series after ``afterDate``: later classes are cancelled (members notified), nothing is
    deleted (T10). Returns how many classes were cancelled."""
    template = await _get(ctx, template_id, "templateId")
    return await end_series(ctx, template, parse_local_date(after_date))


@mutation(tenant="template_id", roles=STAFF)
async def remove_template(ctx: MutationCtx, template_id: TemplateId) -> None:
    """Soft-delete a series nobody is booked into; with future bookings use end_template instead (T10)."""
    template = await _get(ctx, template_id, "templateId")
    today = local_today(ctx.now, template["timezone"])
    future = [i for i in await _template_instances(ctx, template, today) if i["startsAt"] > ctx.now]
    booked = [i["_id"] for i in future if i["status"] == "scheduled" and m.is_booked(i)]
    if booked:
        raise conflict("template_has_bookings", "classes of this series have bookings: end the series instead",
                       instanceIds=booked)
    for instance in future:
        if instance["status"] == "scheduled":
            await ctx.db.delete(instance["_id"])
    await ctx.db.delete(template_id)


async def _template_instances(ctx: QueryCtx | MutationCtx, template: Doc, start: date) -> builtins.list[Doc]:
    low, high = m.key_range(template["_id"], start, None)
    rows: builtins.list[Doc] = await ctx.db.query("class_instances").with_index(
        "by_occurrence", lambda q: q.gte("occurrenceKey", low).lt("occurrenceKey", high)
    ).collect()
    return rows


@query(tenant="business_id")
async def list_templates(ctx: QueryCtx, business_id: BusinessId, venue_id: VenueId | None = None) -> builtins.list[Doc]:
    """The business's live templates (active and ended), optionally at one venue."""
    if venue_id is None:
        return await ctx.db.query("class_templates").collect()
    return await ctx.db.query("class_templates").with_index("by_venue", lambda q: q.eq("venueId", venue_id)).collect()


@internal_mutation(cross_tenant=True)
async def extend_horizons(
    ctx: MutationCtx, business_id: BusinessId | None = None, cursor: str | None = None
) -> dict[str, int]:
    """Nightly: extend every active template of one business to its rolling horizon; without ``businessId``
    (the cron) schedule one such job per business (``scheduled``), a page at a time.

    Idempotent: running it twice creates nothing the second time.
    """
    if business_id is None:
        scheduled = await fan_out(ctx, "classes:extend_horizons", cursor)
        return {"businesses": scheduled, "templates": 0, "created": 0, "scheduled": scheduled}
    business = await ctx.db.get(business_id)
    if business is None:
        return {"businesses": 0, "templates": 0, "created": 0}
    templates, created = await extend_business(ctx.db, business, ctx.now)
    return {"businesses": 1, "templates": templates, "created": created}


# -- instances ---------------------------------------------------------------------------------------------


@query(tenant="business_id")
async def list_instances(
    ctx: QueryCtx, business_id: BusinessId, from_: Instant, to: Instant, venue_id: VenueId | None = None
) -> builtins.list[InstanceView]:
    """The live schedule between two instants, in start order, read through one (business, start) range."""
    low, high = from_.to_datetime(), to.to_datetime()
    if high <= low:
        raise invalid("to", "must be after from")
    if high - low > _MAX_RANGE:
        raise invalid("to", f"a schedule read spans at most {_MAX_RANGE.days} days", maxDays=_MAX_RANGE.days)
    if venue_id is None:
        query_ = ctx.db.query("class_instances").with_index("by_start", lambda q: q.gte("startsAt", low).lt("startsAt", high))
    else:
        if await ctx.db.get(venue_id, include_deleted=True) is None:  # a removed venue keeps its history
            raise not_found("venueId")
        query_ = ctx.db.query("class_instances").with_index(
            "by_venue_start", lambda q: q.eq("venueId", venue_id).gte("startsAt", low).lt("startsAt", high)
        )
    instances = await query_.collect()
    business = await _business(ctx)
    settings, rules = Settings.of(business), await load_rules(ctx.db, business["_id"])
    return [view(i, business["currency"], settings, rules, ctx.log.warn) for i in instances]


@mutation(tenant="instance_id", roles=STAFF)
async def cancel_instance(ctx: MutationCtx, instance_id: InstanceId, reason: str) -> bool:
    """Cancel one class (members notified); it stays cancelled through every later edit (T9).
    False when it was already cancelled."""
    if not reason.strip():
        raise invalid("reason", "must not be empty: members see it")
    instance = await _get(ctx, instance_id, "instanceId")
    if instance["endsAt"] <= ctx.now:
        raise conflict("instance_finished", "the class is over", instanceId=instance_id)
    return await m.cancel(ctx, instance, reason.strip())


@mutation(tenant="instance_id", roles=STAFF)
async def restore_instance(ctx: MutationCtx, instance_id: InstanceId) -> None:
    """Explicitly bring back a cancelled class (not on a closed date, not after it started)."""
    await restore(ctx.db, await _get(ctx, instance_id, "instanceId"), ctx.now)


@mutation(tenant="instance_id", roles=STAFF)
async def update_instance(
    ctx: MutationCtx,
    instance_id: InstanceId,
    local_date: LocalDate | None = None,
    start_time: LocalTime | None = None,
    duration_minutes: int | None = None,
    capacity: int | None = None,
    instructor_id: MemberId | None = None,
    price_cents: int | None = None,
    credit_cost: int | None = None,
    name: str | None = None,
    allow_overbook: bool = False,
    overbook_reason: str | None = None,
) -> InstanceEdit:
    """Change one class only; it becomes an exception that later template edits leave alone (T8).

    Capacity below the seats already taken is refused unless ``allowOverbook`` comes with an
    ``overbookReason`` (C4); added seats go to the waitlist at once (W2); a new time lets every booked
    member cancel free and notifies them (T7).
    """
    reason = m.check_overbook_args(allow_overbook, overbook_reason)
    given = {"localDate": local_date, "startTime": start_time, "durationMinutes": duration_minutes,
             "capacity": capacity, "instructorId": instructor_id, "priceCents": price_cents,
             "creditCost": credit_cost, "name": name}
    changes = {k: (str(v) if k in ("localDate", "startTime") else v) for k, v in given.items() if v is not None}
    promoted = await edit_instance(ctx, await _get(ctx, instance_id, "instanceId"), changes, reason)
    return InstanceEdit(promoted)


# -- closures ----------------------------------------------------------------------------------------------


class ClosureResult(msgspec.Struct, rename="camel"):
    closure_id: str
    cancelled: int


@mutation(tenant="business_id", roles=STAFF)
async def add_closure(
    ctx: MutationCtx,
    business_id: BusinessId,
    from_date: LocalDate,
    to_date: LocalDate,
    reason: str,
    venue_id: VenueId | None = None,
) -> ClosureResult:
    """Close a venue (or every venue) on local dates: scheduled classes then are cancelled with the reason,
    and generation never creates classes on them (T6)."""
    first, last = parse_local_date(from_date), parse_local_date(to_date)
    check_dates(first, last, reason)
    if venue_id is not None:
        await m.load_venue(ctx.db, venue_id)
    closure_id, cancelled = await close(ctx, venue_id, first, last, reason)
    return ClosureResult(closure_id, cancelled)


@mutation(tenant="closure_id", roles=STAFF)
async def remove_closure(ctx: MutationCtx, closure_id: ClosureId) -> int:
    """Lift a closure. The classes it alone cancelled come back when they have not started and nobody was
    booked into them (refunded classes come back only through ``restore_instance``, T6); dates that never
    had a class are generated. Returns how many classes came back, restored and generated."""
    closure = await _get(ctx, closure_id, "closureId")
    return await reopen(ctx.db, await _business(ctx), closure, ctx.now)


@query(tenant="business_id")
async def list_closures(ctx: QueryCtx, business_id: BusinessId, from_date: LocalDate) -> builtins.list[Doc]:
    """Closures that end on or after ``fromDate``, by end date."""
    return await ctx.db.query("closures").with_index("by_to", lambda q: q.gte("toDate", str(from_date))).collect()
