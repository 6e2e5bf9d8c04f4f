"""Expand class templates into dated occurrences in the venue's wall-clock time.

Why this module exists (docs/booking-rules.md T1-T6, T12): ``dateutil.rrule`` repeats the wall-clock part of
``DTSTART`` and re-attaches the tzinfo, emits local times that do not exist, and mixes badly with naive
UNTIL values. Everything here therefore works on venue-local wall time with ``zoneinfo`` and converts to
UTC exactly once per occurrence, so the result never depends on the server's ``TZ``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as _rr

GapPolicy = Literal["skip", "shift"]

_FREQS = {"DAILY": _rr.DAILY, "WEEKLY": _rr.WEEKLY, "MONTHLY": _rr.MONTHLY, "YEARLY": _rr.YEARLY}
_SUB_DAILY = {"HOURLY", "MINUTELY", "SECONDLY"}
_WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_INT_LISTS = {  # part -> (lowest absolute value, highest absolute value, negative allowed)
    "BYMONTH": (1, 12, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYSETPOS": (1, 366, True),
}
_KNOWN = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST", *_INT_LISTS}
_MAX_INTERVAL = 1000
_BYDAY_RE = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL_RE = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class RecurrenceRule:
    """A validated RRULE value. ``until`` is a naive datetime (venue-local), an aware UTC datetime or a date."""

    freq: str
    interval: int = 1
    count: int | None = None
    until: datetime | date | None = None
    byday: tuple[tuple[int | None, int], ...] = ()
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    wkst: int = 0


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One materialisable instance; ``sequence`` is its 0-based position in the recurrence set.

    The sequence counts what COUNT counts (closed dates included, skipped gap times excluded), so adding a
    closure never renumbers the other instances.
    """

    sequence: int
    local_date: date
    local_time: time
    starts_at: datetime
    ends_at: datetime
    tz: str
    shifted: bool = False


# --- parsing helpers -------------------------------------------------------------------------------------


def resolve_zone(tz: str) -> ZoneInfo:
    """Return the IANA zone or raise ValueError, so callers get one exception type for bad input."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def parse_local_date(value: str) -> date:
    """Parse a strict ``YYYY-MM-DD`` (``date.fromisoformat`` alone also accepts ``20250323`` and week dates)."""
    if not _DATE_RE.match(value):
        raise ValueError(f"invalid local date {value!r}: expected YYYY-MM-DD")
    return date.fromisoformat(value)


def parse_local_time(value: str) -> time:
    """Parse a strict 24-hour ``HH:MM`` wall-clock time."""
    if not _TIME_RE.match(value):
        raise ValueError(f"invalid local time {value!r}: expected HH:MM")
    return time.fromisoformat(value)


def parse_instant(value: str) -> datetime:
    """Parse an ISO 8601 instant and normalise it to UTC; naive input is ambiguous and rejected (T12)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"invalid instant {value!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("naive datetime: an offset or Z is required")
    return parsed.astimezone(UTC)


def format_instant(dt: datetime) -> str:
    """Format an aware instant as UTC with a ``Z`` suffix; sub-second precision is kept only when present."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("naive datetime: an offset or Z is required")
    utc = dt.astimezone(UTC)
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond == 0:
        return base + "Z"
    if utc.microsecond % 1000 == 0:
        return f"{base}.{utc.microsecond // 1000:03d}Z"
    return f"{base}.{utc.microsecond:06d}Z"


def local_to_utc(
    local_date: date, local_time: time, tz: str, gap_policy: GapPolicy = "skip"
) -> datetime | None:
    """Convert a venue-local wall time to UTC.

    Ambiguous times (fall back) resolve to the first occurrence, fold=0 (T4). A time inside a spring-forward
    gap returns None under ``"skip"`` and moves forward by the gap under ``"shift"`` (T3): fold=0 applies the
    offset from before the transition, which is exactly that shift.
    """
    if gap_policy not in ("skip", "shift"):
        raise ValueError(f"unknown gap policy {gap_policy!r}: expected 'skip' or 'shift'")
    utc, exists = _resolve(datetime.combine(local_date, local_time), resolve_zone(tz))
    return utc if exists or gap_policy == "shift" else None


def start_of_local_day(local_date: date, tz: str) -> datetime:
    """The first instant of a local day in UTC (midnight, or the transition when midnight is in a gap)."""
    utc, _ = _resolve(datetime.combine(local_date, time(0)), resolve_zone(tz))
    return utc


def _resolve(naive: datetime, zone: ZoneInfo) -> tuple[datetime, bool]:
    """UTC instant for a wall time (fold=0) and whether that wall time exists (the round trip agrees)."""
    utc = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return utc, utc.astimezone(zone).replace(tzinfo=None) == naive.replace(tzinfo=None, fold=0)


# --- RRULE validation ------------------------------------------------------------------------------------


def _int(name: str, raw: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[+-]?\d+", raw):
        raise ValueError(f"{name} must be an integer, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _int_list(name: str, raw: str) -> tuple[int, ...]:
    low, high, signed = _INT_LISTS[name]
    values = []
    for item in raw.split(","):
        value = _int(name, item, -high if signed else low, high)
        if abs(value) < low:
            raise ValueError(f"{name} values must be between {low} and {high} (or negative), got {value}")
        values.append(value)
    return tuple(values)


def _parse_until(raw: str) -> datetime | date:
    match = _UNTIL_RE.match(raw)
    if not match:
        raise ValueError(f"invalid UNTIL {raw!r}: expected YYYYMMDD, YYYYMMDDTHHMMSS or YYYYMMDDTHHMMSSZ")
    day_part, time_part, zulu = match.groups()
    try:
        if time_part is None:
            return datetime.strptime(day_part, "%Y%m%d").date()
        parsed = datetime.strptime(day_part + time_part, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise ValueError(f"invalid UNTIL {raw!r}: not a real date or time") from exc
    return parsed.replace(tzinfo=UTC) if zulu else parsed


def parse_rrule(value: str) -> RecurrenceRule:
    """Parse and check an RRULE *value* (``FREQ=...;...``) against RFC 5545 and what a class template needs."""
    text = value.strip().upper()
    text = text.removeprefix("RRULE:")
    if not text:
        raise ValueError("empty RRULE")
    if "DTSTART" in text:
        raise ValueError(
            "DTSTART is not allowed in the RRULE value: the template's local date and time are the start"
        )
    if any(ch in text for ch in ":\r\n") or " " in text:
        raise ValueError(
            "expected a single RRULE value such as FREQ=WEEKLY;BYDAY=MO, not iCalendar properties"
        )
    parts: dict[str, str] = {}
    for part in text.strip(";").split(";"):
        name, sep, raw = part.partition("=")
        if not sep or not raw:
            raise ValueError(f"malformed RRULE part {part!r}: expected NAME=VALUE")
        if name in _SUB_DAILY or name in ("BYHOUR", "BYMINUTE", "BYSECOND"):
            raise ValueError(f"{name} is not supported: a class template has one local start time per day")
        if name not in _KNOWN:
            raise ValueError(f"unsupported RRULE part {name!r}")
        if name in parts:
            raise ValueError(f"RRULE part {name} given twice")
        parts[name] = raw
    freq = parts.get("FREQ")
    if freq is None:
        raise ValueError("FREQ is required")
    if freq in _SUB_DAILY:
        raise ValueError(f"FREQ={freq} is not supported: a class template has one local start time per day")
    if freq not in _FREQS:
        raise ValueError(f"unknown FREQ {freq!r}: expected one of DAILY, WEEKLY, MONTHLY, YEARLY")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("COUNT and UNTIL must not both be given (RFC 5545)")
    lists = {name.lower(): _int_list(name, parts[name]) for name in _INT_LISTS if name in parts}
    byday: list[tuple[int | None, int]] = []
    for token in parts["BYDAY"].split(",") if "BYDAY" in parts else ():
        match = _BYDAY_RE.match(token)
        if not match:
            raise ValueError(f"invalid BYDAY entry {token!r}")
        n = None if match.group(1) is None else _int("BYDAY ordinal", match.group(1), -53, 53)
        if n == 0:
            raise ValueError("BYDAY ordinal must not be 0")
        if n is not None and freq not in ("MONTHLY", "YEARLY"):
            raise ValueError("BYDAY ordinals such as 1MO are only valid with FREQ=MONTHLY or YEARLY")
        byday.append((n, _WEEKDAYS[match.group(2)]))
    if "bymonthday" in lists and freq == "WEEKLY":
        raise ValueError("BYMONTHDAY must not be used with FREQ=WEEKLY (RFC 5545)")
    if "byyearday" in lists and freq != "YEARLY":
        raise ValueError("BYYEARDAY is only valid with FREQ=YEARLY here")
    if "byweekno" in lists and freq != "YEARLY":
        raise ValueError("BYWEEKNO is only valid with FREQ=YEARLY (RFC 5545)")
    if "bysetpos" in lists and not (byday or len(lists) > 1):
        raise ValueError("BYSETPOS needs another BYxxx part to select from (RFC 5545)")
    wkst = parts.get("WKST", "MO")
    if wkst not in _WEEKDAYS:
        raise ValueError(f"invalid WKST {wkst!r}")
    return RecurrenceRule(
        freq=freq,
        interval=_int("INTERVAL", parts.get("INTERVAL", "1"), 1, _MAX_INTERVAL),
        count=_int("COUNT", parts["COUNT"], 1, 10**9) if "COUNT" in parts else None,
        until=_parse_until(parts["UNTIL"]) if "UNTIL" in parts else None,
        byday=tuple(byday),
        bymonth=lists.get("bymonth", ()),
        bymonthday=lists.get("bymonthday", ()),
        byyearday=lists.get("byyearday", ()),
        byweekno=lists.get("byweekno", ()),
        bysetpos=lists.get("bysetpos", ()),
        wkst=_WEEKDAYS[wkst],
    )


def validate_rrule(value: str, start_date: date | None = None) -> RecurrenceRule:
    """Parse the rule and, given a start date, reject rules that can never produce an occurrence.

    dateutil searches an empty rule (e.g. ``BYMONTH=2;BYMONTHDAY=30``) year by year up to 9999, which takes
    seconds; catching it here keeps expansion fast. Open-ended rules are fine: the window bounds output.
    """
    rule = parse_rrule(value)
    months = [m for m in rule.bymonth] or list(range(1, 13))
    if rule.bymonthday and all(abs(d) > _DAYS_IN_MONTH[m - 1] for d in rule.bymonthday for m in months):
        raise ValueError("BYMONTHDAY never falls in the selected months, so the rule has no occurrences")
    if start_date is not None and not _has_occurrence(rule, start_date):
        raise ValueError("the rule never produces an occurrence from the start date")
    return rule


def normalize_rrule(value: str, tz: str) -> str:
    """Canonical RRULE string with UNTIL in UTC (T12): a naive UNTIL is venue-local, a date-only one is that
    whole local day (through its last second)."""
    rule = validate_rrule(value)
    parts = [f"FREQ={rule.freq}"]
    if rule.interval != 1:
        parts.append(f"INTERVAL={rule.interval}")
    if rule.count is not None:
        parts.append(f"COUNT={rule.count}")
    if rule.until is not None:
        parts.append("UNTIL=" + _until_utc(rule.until, resolve_zone(tz)).strftime("%Y%m%dT%H%M%SZ"))
    names = {v: k for k, v in _WEEKDAYS.items()}
    if rule.byday:
        parts.append("BYDAY=" + ",".join(f"{'' if n is None else n}{names[d]}" for n, d in rule.byday))
    for name in ("BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"):
        values: tuple[int, ...] = getattr(rule, name.lower())
        if values:
            parts.append(f"{name}=" + ",".join(str(v) for v in values))
    if rule.wkst != 0:
        parts.append(f"WKST={names[rule.wkst]}")
    return ";".join(parts)


def _until_utc(until: datetime | date, zone: ZoneInfo) -> datetime:
    if isinstance(until, datetime):
        return until if until.tzinfo is not None else _resolve(until, zone)[0]
    next_day = _resolve(datetime.combine(until + timedelta(days=1), time(0)), zone)[0]
    return next_day - timedelta(seconds=1)


def _dateutil_rule(rule: RecurrenceRule, dtstart: datetime) -> Iterator[datetime]:
    """The rule without COUNT/UNTIL (applied by the caller, after the gap policy). WKST is always passed:
    dateutil's default is the process-global ``calendar.firstweekday()``."""
    kwargs: dict[str, Any] = {"freq": _FREQS[rule.freq], "interval": rule.interval, "wkst": rule.wkst}
    if rule.byday:
        kwargs["byweekday"] = [_rr.weekday(d, n) for n, d in rule.byday]
    for name in ("bymonth", "bymonthday", "byyearday", "byweekno", "bysetpos"):
        if getattr(rule, name):
            kwargs[name] = list(getattr(rule, name))
    generated: Iterator[datetime] = iter(_rr.rrule(dtstart=dtstart, **kwargs))
    return generated


def _has_occurrence(rule: RecurrenceRule, start_date: date) -> bool:
    """Probe emptiness cheaply: the Gregorian calendar repeats every 400 years, so a rule repeats every
    400*INTERVAL years; searching one such period near year 9999 answers for the whole rule."""
    period = 400 * rule.interval
    shift = max(0, (MAXYEAR - period - start_date.year) // period) * period
    probe = datetime.combine(start_date.replace(year=start_date.year + shift), time(12))
    return next(_dateutil_rule(rule, probe), None) is not None


# --- expansion -------------------------------------------------------------------------------------------


def expand_occurrences(
    *,
    start_date: date,
    local_time: time,
    duration_minutes: int,
    rrule: str,
    tz: str,
    from_date: date,
    to_date: date,
    closed_dates: Collection[date] = frozenset(),
    gap_policy: GapPolicy = "skip",
) -> list[Occurrence]:
    """Occurrences whose local date lies in [from_date, to_date], in start order.

    COUNT counts every recurrence-set member from ``start_date``: closed dates count (like EXDATE, closing
    a day removes that class and does not extend the series); gap times skipped under ``"skip"`` do not
    (T3). A shifted time that would leave its local date is skipped too (e.g. Pacific/Apia 2011-12-30).
    """
    if duration_minutes <= 0:
        raise ValueError("duration_minutes must be positive")
    if from_date > to_date:
        raise ValueError("from_date must not be after to_date")
    if gap_policy not in ("skip", "shift"):
        raise ValueError(f"unknown gap policy {gap_policy!r}: expected 'skip' or 'shift'")
    zone = resolve_zone(tz)
    rule = validate_rrule(rrule, start_date)
    until = None if rule.until is None else _until_utc(rule.until, zone)
    duration = timedelta(minutes=duration_minutes)
    dtstart = datetime.combine(start_date, local_time.replace(tzinfo=None, fold=0), tzinfo=zone)
    result: list[Occurrence] = []
    sequence = 0
    for generated in _dateutil_rule(rule, dtstart):
        if generated.date() > to_date or (rule.count is not None and sequence >= rule.count):
            break
        starts_at, exists = _resolve(generated.replace(tzinfo=None), zone)
        if until is not None and starts_at > until:
            break
        local = starts_at.astimezone(zone)
        if not exists and (gap_policy == "skip" or local.date() != generated.date()):
            continue
        if from_date <= local.date() <= to_date and local.date() not in closed_dates:
            result.append(
                Occurrence(
                    sequence=sequence,
                    local_date=local.date(),
                    local_time=local.time().replace(fold=0),
                    starts_at=starts_at,
                    ends_at=starts_at + duration,
                    tz=tz,
                    shifted=not exists,
                )
            )
        sequence += 1
    return result
