"""Materialise a template's occurrences as instance rows on a rolling horizon (T1-T6, T11).

Generation is idempotent: an occurrence is inserted only when no live instance of the template already
fills that slot date (whatever happened to it since: cancelled, moved, edited). The window starts at the
template's start date or today in the venue's zone, whichever is later, and ends at now + ``horizonDays``
(or the series' last day). Closed dates are never generated.

Every read here names ``businessId`` explicitly, so the same code runs inside one tenant's function and in
the cross-tenant nightly job.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from functions._rules.recurrence import (
    Occurrence,
    expand_occurrences,
    parse_local_date,
    parse_local_time,
    parse_rrule,
    resolve_zone,
)
from functions._shared.errors import invalid
from functions._shared.settings import GapPolicy, Settings

from ._model import Doc, key_range, new_instance, slot_date

__all__ = [
    "closed_dates",
    "expand",
    "extend_business",
    "first_occurrence_from",
    "generate",
    "horizon_end",
    "local_today",
    "mark_generated",
    "require_a_class",
    "template_slots",
]


def local_today(now: datetime, tz: str) -> date:
    return now.astimezone(resolve_zone(tz)).date()


def horizon_end(now: datetime, tz: str, horizon_days: int) -> date:
    """The last local date to materialise: the venue-local date of now + ``horizon_days``."""
    return (now + timedelta(days=horizon_days)).astimezone(resolve_zone(tz)).date()


def expand(
    template: Doc, start: date, end: date, gap_policy: GapPolicy, closed: Collection[date] = frozenset()
) -> list[Occurrence]:
    """The template's occurrences dated ``start``..``end`` (COUNT counted from the series start)."""
    last = template.get("endsAfter")
    if last is not None:
        end = min(end, parse_local_date(last))
    if start > end:
        return []
    return expand_occurrences(
        start_date=parse_local_date(template["startDate"]),
        local_time=parse_local_time(template["startTime"]),
        duration_minutes=template["durationMinutes"],
        rrule=template["rrule"],
        tz=template["timezone"],
        from_date=start,
        to_date=end,
        closed_dates=closed,
        gap_policy=gap_policy,
    )


def first_occurrence_from(template: Doc, start: date, gap_policy: GapPolicy) -> Occurrence | None:
    """The first occurrence on or after ``start``, searching ever wider windows (monthly and yearly rules)."""
    for days in (62, 800, 4000):
        found = expand(template, start, start + timedelta(days=days), gap_policy)
        if found:
            return found[0]
    return None


def require_a_class(template: Doc, gap_policy: GapPolicy) -> None:
    """Refuse a series that can never hold a single class (T14): an UNTIL before the start date, or a
    COUNT used up by dates the gap policy skips. Such a template would be accepted and stay empty."""
    start = parse_local_date(template["startDate"])
    if first_occurrence_from(template, start, gap_policy) is not None:
        return
    until = parse_rrule(template["rrule"]).until
    until_day = until.date() if isinstance(until, datetime) else until
    if until_day is not None and until_day < start:
        raise invalid("rrule", f"UNTIL ({until_day.isoformat()}) is before startDate ({start.isoformat()}): "
                      "the series would have no class", startDate=start.isoformat())
    raise invalid("rrule", "the series would produce no class at all (its dates fall in a daylight-saving "
                  f"gap that the {gap_policy!r} gap policy skips, or the rule never matches)", gapPolicy=gap_policy)


async def closed_dates(db: Any, business_id: str, venue_id: str, start: date, end: date) -> set[date]:
    """Local dates in ``start``..``end`` closed at the venue or business-wide (T6)."""
    if start > end:
        return set()
    closures = await (
        db.query("closures")
        .with_index("by_to", lambda q: q.eq("businessId", business_id).gte("toDate", start.isoformat()))
        .filter(lambda c: c["fromDate"] <= end.isoformat() and c["venueId"] in (None, venue_id))
        .collect()
    )
    dates: set[date] = set()
    for closure in closures:
        day = max(parse_local_date(closure["fromDate"]), start)
        last = min(parse_local_date(closure["toDate"]), end)
        while day <= last:
            dates.add(day)
            day += timedelta(days=1)
    return dates


async def template_slots(db: Any, business_id: str, template_id: str, start: date, end: date | None) -> list[Doc]:
    """Live instances of the template whose series slot is dated ``start``..``end`` (None: no end)."""
    low, high = key_range(template_id, start, end)
    rows: list[Doc] = await (
        db.query("class_instances")
        .with_index("by_occurrence", lambda q: q.eq("businessId", business_id).gte("occurrenceKey", low).lt("occurrenceKey", high))
        .collect()
    )
    return rows


@dataclass(frozen=True, slots=True)
class Window:
    start: date
    end: date


def window(template: Doc, settings: Settings, now: datetime, start: date | None = None) -> Window:
    """Where generation should look: from the later of series start, today and ``start``; to the horizon."""
    tz = template["timezone"]
    lower = max(parse_local_date(template["startDate"]), local_today(now, tz))
    if start is not None:
        lower = max(lower, start)
    upper = horizon_end(now, tz, settings.horizon_days)
    if template.get("endsAfter") is not None:
        upper = min(upper, parse_local_date(template["endsAfter"]))
    return Window(lower, upper)


async def generate(
    db: Any, template: Doc, settings: Settings, now: datetime, *, start: date | None = None, incremental: bool = True
) -> int:
    """Insert the missing instances of an active template; returns how many were created.

    ``incremental`` starts after ``generatedUntil`` (the nightly job); otherwise the whole window is
    checked again (after a closure is lifted, dates skipped before are filled in).
    """
    if template["status"] != "active":
        return 0
    business_id, template_id = template["businessId"], template["_id"]
    if incremental and template.get("generatedUntil"):
        after = parse_local_date(template["generatedUntil"]) + timedelta(days=1)
        start = after if start is None else max(start, after)
    span = window(template, settings, now, start)
    created = 0
    if span.start <= span.end:
        closed = await closed_dates(db, business_id, template["venueId"], span.start, span.end)
        occurrences = expand(template, span.start, span.end, settings.gap_policy, closed)
        filled = {slot_date(i) for i in await template_slots(db, business_id, template_id, span.start, span.end)}
        for occurrence in occurrences:
            if occurrence.local_date not in filled:
                await db.insert("class_instances", new_instance(business_id, template, template_id, occurrence))
                created += 1
    await mark_generated(db, template, span.end)
    return created


async def mark_generated(db: Any, template: Doc, until: date | None) -> None:
    """Record how far the series is materialised (``until``; None: unchanged); a series whose last day is
    covered becomes ``ended``, so the nightly job stops visiting it."""
    changes: Doc = {}
    previous = template.get("generatedUntil")
    if until is not None and (previous is None or parse_local_date(previous) < until):
        changes["generatedUntil"] = template["generatedUntil"] = until.isoformat()
    done, last = template.get("generatedUntil"), template.get("endsAfter")
    covered = done is not None and last is not None and parse_local_date(done) >= parse_local_date(last)
    if covered and template["status"] == "active":
        changes["status"] = template["status"] = "ended"
    if changes:
        await db.patch(template["_id"], changes)


async def extend_business(db: Any, business: Doc, now: datetime) -> tuple[int, int]:
    """Extend every active template of one business to its horizon: (templates seen, instances created)."""
    settings = Settings.of(business)
    templates = await (
        db.query("class_templates")
        .with_index("by_status", lambda q: q.eq("businessId", business["_id"]).eq("status", "active"))
        .collect()
    )
    created = 0
    for template in templates:
        created += await generate(db, template, settings, now)
    return len(templates), created
