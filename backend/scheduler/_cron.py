"""When cron and interval jobs fire.

Pure and self-contained on purpose: the durable scheduler stores a schedule and
asks it for the next firing after the last one, so the answer must depend on
nothing but the schedule and the instant (no clock, no I/O).

Cron expressions are evaluated in the schedule's local wall time, like cronie /
Vixie cron, so "0 3 * * *" in Europe/London means 03:00 on the clocks there all
year round. Daylight-saving transitions are resolved so that every matching wall
time fires exactly once:

* a wall time skipped by a spring-forward gap fires at the first instant after
  the gap (several skipped times collapse into that one firing);
* a wall time repeated by a fall-back overlap fires only at its first
  occurrence (fold=0).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "parse_cron"]

# The Gregorian calendar repeats every 400 years, so a schedule that has not
# fired within that span never will; parse_cron rejects such schedules up front
# and this bound only guarantees that the search terminates.
_SEARCH_YEARS = 400

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}
_DOW_NAMES = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# Longest each month can be (February in a leap year), for the never-fires check.
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_ITEM = re.compile(r"(?P<base>\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[^/]*))?")


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int] | None
    # Upper bound accepted in the text; day-of-week allows 7 as a second Sunday.
    text_high: int


_FIELDS = (
    _Field("minute", 0, 59, None, 59),
    _Field("hour", 0, 23, None, 23),
    _Field("day-of-month", 1, 31, None, 31),
    _Field("month", 1, 12, _MONTH_NAMES, 12),
    _Field("day-of-week", 0, 6, _DOW_NAMES, 7),
)


class _Spec(NamedTuple):
    """A parsed expression: sorted allowed values per field plus the Vixie star flags."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    # cronie ORs day-of-month and day-of-week only when neither field starts
    # with '*'; otherwise a day must satisfy both.
    day_or: bool


def _value(field: _Field, token: str) -> int:
    if token.isascii() and token.isdigit():
        number = int(token)
    elif field.names is not None and token.upper() in field.names:
        return field.names[token.upper()]
    elif field.names is not None:
        kind = "month" if field.name == "month" else "weekday"
        raise ValueError(f"cron field {field.name!r}: {token!r} is not a number or {kind} name")
    else:
        raise ValueError(f"cron field {field.name!r}: {token!r} is not a number")
    if not field.low <= number <= field.text_high:
        raise ValueError(f"cron field {field.name!r}: {number} is out of range {field.low}-{field.text_high}")
    return number


def _parse_field(field: _Field, text: str) -> tuple[set[int], bool]:
    """Expand one field into its allowed values; also report whether it starts with '*'."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"cron field {field.name!r}: empty list item in {text!r}")
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"cron field {field.name!r}: {item!r} is not a value, range or step")
        base, step_text = match["base"], match["step"]
        if base == "*":
            start, end = field.low, field.high
        elif "-" in base:
            first, last = base.split("-")
            start, end = _value(field, first), _value(field, last)
            if start > end:
                raise ValueError(f"cron field {field.name!r}: range {base} has its start after its end")
        else:
            start = _value(field, base)
            # "5/15" means 5 through the end of the field, every 15 (as croniter and Quartz read it).
            end = max(field.high, start) if step_text is not None else start
        step = 1
        if step_text is not None:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"cron field {field.name!r}: step {step_text!r} must be a positive integer")
            step = int(step_text)
        values.update(range(start, end + 1, step))
    if field.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return values, text.startswith("*")


@functools.lru_cache(maxsize=1024)
def _compile(expression: str) -> _Spec:
    """Parse once per distinct expression; schedules are re-evaluated after every firing."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise ValueError(f"cron expression {expression!r}: unknown macro (known: {', '.join(_MACROS)})")
        text = _MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            "cron expression must have 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {expression!r}"
        )
    (minutes, _), (hours, _), (days, dom_star), (months, _), (weekdays, dow_star) = (
        _parse_field(field, part) for field, part in zip(_FIELDS, parts, strict=True)
    )
    spec = _Spec(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=tuple(sorted(months)),
        weekdays=frozenset(weekdays),
        day_or=not (dom_star or dow_star),
    )
    # With the OR rule any weekday occurs in every month. With AND, some allowed
    # day-of-month must exist in some allowed month; every such date falls on
    # every weekday somewhere in the 400-year cycle.
    if not spec.day_or and not any(
        day <= _MAX_MONTH_DAYS[month - 1] for month in spec.months for day in spec.days
    ):
        raise ValueError("cron schedule never fires")
    return spec


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise ValueError(f"unknown IANA time zone {name!r}") from error


def _next_local(spec: _Spec, start: datetime, last_year: int) -> datetime | None:
    """First matching naive wall time at or after ``start``, skipping whole months, days and hours."""
    year, month, day, hour, minute = start.year, start.month, start.day, start.hour, start.minute
    while year <= last_year:
        if month > 12:
            year, month = year + 1, 1
            continue
        index = bisect_left(spec.months, month)
        if index == len(spec.months):
            year, month, day, hour, minute = year + 1, spec.months[0], 1, 0, 0
            continue
        if spec.months[index] != month:
            month, day, hour, minute = spec.months[index], 1, 0, 0

        weekday, month_days = calendar.monthrange(year, month)
        matched = None
        for candidate in range(day, month_days + 1):
            # calendar counts Monday as 0; cron counts Sunday as 0.
            cron_weekday = (weekday + candidate) % 7
            in_days = candidate in spec.days
            in_weekdays = cron_weekday in spec.weekdays
            if (in_days or in_weekdays) if spec.day_or else (in_days and in_weekdays):
                matched = candidate
                break
        if matched is None:
            month, day, hour, minute = month + 1, 1, 0, 0
            continue
        if matched != day:
            day, hour, minute = matched, 0, 0

        index = bisect_left(spec.hours, hour)
        if index == len(spec.hours):
            day, hour, minute = day + 1, 0, 0
            continue
        if spec.hours[index] != hour:
            hour, minute = spec.hours[index], 0

        index = bisect_left(spec.minutes, minute)
        if index == len(spec.minutes):
            hour, minute = hour + 1, 0
            continue
        return datetime(year, month, day, hour, spec.minutes[index])
    return None


def _resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a local wall time fires at: its first occurrence, or the end of a gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # Skipped wall time. Per PEP 495, fold=0 reads it with the offset before the
    # transition and fold=1 with the offset after, so the transition instant
    # lies between the two readings; bisect to the whole second.
    low = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = math.ceil(first.timestamp())
    before = datetime.fromtimestamp(low, UTC).astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _require_aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instant must be a timezone-aware datetime")
    return instant.astimezone(UTC)


class CronSchedule(msgspec.Struct, frozen=True, tag="cron"):
    """A cron expression in an IANA time zone; serialisable so durable crons can store it.

    Validated on construction (and on msgspec decode), so a stored schedule
    that loads is one that fires. Build it with ``parse_cron``.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _compile(self.expression)
        _zone(self.timezone)

    def next_after(self, instant: datetime) -> datetime:
        """First firing strictly after ``instant``, as an aware UTC datetime.

        Matching is done on local wall time; strictness lets the scheduler pass
        the previous firing and never get it back.
        """
        after = _require_aware(instant)
        spec = _compile(self.expression)
        zone = _zone(self.timezone)
        cursor = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0, fold=0)
        last_year = min(cursor.year + _SEARCH_YEARS, datetime.max.year - 1)
        # Resolution is monotonic in wall time, so scanning forward from the
        # instant's own wall time only skips candidates that fire at or before
        # it: the current minute, or the second pass through an overlap.
        while True:
            wall = _next_local(spec, cursor, last_year)
            if wall is None:
                raise ValueError("cron schedule never fires")
            firing = _resolve(wall, zone)
            if firing > after:
                return firing
            cursor = wall + timedelta(minutes=1)


class IntervalSchedule(msgspec.Struct, frozen=True, tag="interval"):
    """A fixed period in real (UTC) seconds, unaffected by wall-clock changes."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"interval seconds must be a positive finite number, got {self.seconds!r}")

    def next_after(self, instant: datetime) -> datetime:
        """``instant + seconds`` as an aware UTC datetime.

        Converted to UTC first: adding to a zoned datetime would do wall-clock
        arithmetic and land an hour off across a DST change.
        """
        return _require_aware(instant) + timedelta(seconds=self.seconds)


Schedule: TypeAlias = CronSchedule | IntervalSchedule


def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Validate a 5-field cron expression and zone, raising ValueError naming the bad field."""
    return CronSchedule(" ".join(expression.split()), timezone)
