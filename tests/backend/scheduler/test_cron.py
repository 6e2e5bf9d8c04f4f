"""Cron parsing and next-firing computation, including DST gaps and overlaps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from backend.scheduler._cron import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    _compile,
    parse_cron,
)


def z(text: str) -> datetime:
    """An aware UTC instant from 'YYYY-MM-DDTHH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, after: str, count: int = 1, timezone: str = "UTC") -> list[datetime]:
    schedule = parse_cron(expression, timezone)
    out: list[datetime] = []
    instant = z(after)
    for _ in range(count):
        instant = schedule.next_after(instant)
        out.append(instant)
    return out


# --- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("60 * * * *", "cron field 'minute': 60 is out of range 0-59"),
        ("-1 * * * *", "cron field 'minute': '-1' is not a value, range or step"),
        ("MON * * * *", "cron field 'minute': 'MON' is not a number"),
        ("0 24 * * *", "cron field 'hour': 24 is out of range 0-23"),
        ("0 5-1 * * *", "cron field 'hour': range 5-1 has its start after its end"),
        ("0 0 0 * *", "cron field 'day-of-month': 0 is out of range 1-31"),
        ("0 0 32 * *", "cron field 'day-of-month': 32 is out of range 1-31"),
        ("0 0 1,,2 * *", "cron field 'day-of-month': empty list item in '1,,2'"),
        ("0 0 * 13 *", "cron field 'month': 13 is out of range 1-12"),
        ("0 0 * 0 *", "cron field 'month': 0 is out of range 1-12"),
        ("0 0 * FOO *", "cron field 'month': 'FOO' is not a number or month name"),
        ("0 0 * * 8", "cron field 'day-of-week': 8 is out of range 0-7"),
        ("0 0 * * FUN", "cron field 'day-of-week': 'FUN' is not a number or weekday name"),
        ("0 0 * * SAT-SUN", "cron field 'day-of-week': range SAT-SUN has its start after its end"),
        ("*/0 * * * *", "cron field 'minute': step '0' must be a positive integer"),
        ("0 */x * * *", "cron field 'hour': step 'x' must be a positive integer"),
        ("0 0 */ * *", "cron field 'day-of-month': step '' must be a positive integer"),
        ("0 0 * 1/2/3 *", "cron field 'month': '1/2/3' is not a value, range or step"),
        ("0 0 * *", "cron expression must have 5 fields"),
        ("0 0 * * * *", "cron expression must have 5 fields"),
        ("", "cron expression must have 5 fields"),
        ("@reboot", "unknown macro"),
    ],
)
def test_parse_errors_name_field_and_rule(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_cron(expression)
    assert message in str(excinfo.value)


def test_unknown_time_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone 'Mars/Olympus_Mons'"):
        parse_cron("0 0 * * *", "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        parse_cron("0 0 * * *", "../etc/passwd")
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        parse_cron("0 0 * * *", "")


def test_field_expansion() -> None:
    spec = _compile("1-30/5 */6 5/10 JAN-mar,dec 1-5")
    assert spec.minutes == (1, 6, 11, 16, 21, 26)
    assert spec.hours == (0, 6, 12, 18)
    assert spec.days == frozenset({5, 15, 25})
    assert spec.months == (1, 2, 3, 12)
    assert spec.weekdays == frozenset({1, 2, 3, 4, 5})
    assert _compile("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})
    assert _compile("0 0 * * 7").weekdays == _compile("0 0 * * SUN").weekdays == frozenset({0})
    assert _compile("0 0 * * 7/2").weekdays == frozenset({0})


def test_parse_normalises_whitespace_and_keeps_zone() -> None:
    schedule = parse_cron("  0   3 *  * * ", "Europe/London")
    assert schedule == CronSchedule("0 3 * * *", "Europe/London")
    assert schedule.expression == "0 3 * * *"
    assert schedule.timezone == "Europe/London"


# --- plain UTC schedules -------------------------------------------------------


def test_every_fifteen_minutes() -> None:
    assert fires("*/15 * * * *", "2025-01-01T10:07:30", 3) == [
        z("2025-01-01T10:15"),
        z("2025-01-01T10:30"),
        z("2025-01-01T10:45"),
    ]
    # Strictly after: an exact firing instant yields the next one, and sub-minute
    # offsets never produce a firing in the past.
    assert fires("*/15 * * * *", "2025-01-01T10:15") == [z("2025-01-01T10:30")]
    assert parse_cron("*/15 * * * *").next_after(z("2025-01-01T10:15") + timedelta(microseconds=1)) == z(
        "2025-01-01T10:30"
    )
    assert fires("*/15 * * * *", "2025-12-31T23:50") == [z("2026-01-01T00:00")]


def test_range_with_step() -> None:
    assert fires("1-30/5 * * * *", "2025-01-01T10:26", 2) == [z("2025-01-01T11:01"), z("2025-01-01T11:06")]


def test_input_in_another_zone_is_the_same_instant() -> None:
    tokyo = datetime(2025, 1, 1, 19, 7, tzinfo=ZoneInfo("Asia/Tokyo"))  # 10:07Z
    result = parse_cron("*/15 * * * *").next_after(tokyo)
    assert result == z("2025-01-01T10:15")
    assert result.tzinfo is UTC


def test_naive_instant_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_cron("* * * * *").next_after(datetime(2025, 1, 1))


def test_weekday_names() -> None:
    # 2025-06-06 is a Friday.
    assert fires("0 9 * * MON-FRI", "2025-06-06T09:00", 2) == [z("2025-06-09T09:00"), z("2025-06-10T09:00")]
    assert fires("0 12 * * sat,Sun", "2025-06-06T00:00", 3) == [
        z("2025-06-07T12:00"),
        z("2025-06-08T12:00"),
        z("2025-06-14T12:00"),
    ]


def test_zero_and_seven_are_both_sunday() -> None:
    assert fires("0 0 * * 7", "2025-06-02T00:00") == [z("2025-06-08T00:00")]
    assert fires("0 0 * * 0", "2025-06-02T00:00") == [z("2025-06-08T00:00")]


def test_month_names() -> None:
    assert fires("0 0 1 JAN,jul *", "2025-02-01T00:00", 2) == [z("2025-07-01T00:00"), z("2026-01-01T00:00")]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # The 1st of the month OR any Monday; 2025-06-01 is a Sunday, 2025-07-01 a Tuesday.
    assert fires("0 0 1 * MON", "2025-06-01T00:00", 2) == [z("2025-06-02T00:00"), z("2025-06-09T00:00")]
    assert fires("0 0 1 * MON", "2025-06-30T00:00") == [z("2025-07-01T00:00")]


def test_star_field_means_and_like_cronie() -> None:
    # A field starting with '*' turns the OR into AND: Mondays that are the 1st/11th/21st/31st.
    assert fires("0 0 */10 * MON", "2025-06-01T00:00", 3) == [
        z("2025-07-21T00:00"),
        z("2025-08-11T00:00"),
        z("2025-09-01T00:00"),
    ]


def test_macros() -> None:
    assert fires("@hourly", "2025-01-01T10:07") == [z("2025-01-01T11:00")]
    assert fires("@weekly", "2025-06-02T00:00") == [z("2025-06-08T00:00")]
    assert _compile("@daily") == _compile("@midnight") == _compile("0 0 * * *")
    assert fires("@yearly", "2025-06-02T00:00") == [z("2026-01-01T00:00")]


# --- rare and impossible dates ---------------------------------------------------


def test_leap_day() -> None:
    assert fires("0 0 29 2 *", "2025-01-01T00:00", 2) == [z("2028-02-29T00:00"), z("2032-02-29T00:00")]
    # 2100 is not a leap year: the gap is eight years.
    assert fires("0 0 29 2 *", "2096-03-01T00:00") == [z("2104-02-29T00:00")]


def test_leap_day_on_a_sunday_is_found_decades_away() -> None:
    # '*/7' starts with '*', so this is Feb 29 AND Sunday: 40 years apart across 2100.
    assert fires("0 0 29 2 */7", "2088-03-01T00:00") == [z("2128-02-29T00:00")]


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 */2"])
def test_impossible_schedule_raises(expression: str) -> None:
    with pytest.raises(ValueError, match="cron schedule never fires"):
        parse_cron(expression)


def test_impossible_day_with_weekday_or_still_fires() -> None:
    # Feb 30 OR Monday: the Mondays of February.
    assert fires("0 0 30 2 MON", "2025-01-01T00:00") == [z("2025-02-03T00:00")]


# --- daylight saving -------------------------------------------------------------


def test_london_daily_0300_across_march_change() -> None:
    # Clocks go forward at 01:00Z on 2025-03-30.
    assert fires("0 3 * * *", "2025-03-28T12:00", 3, "Europe/London") == [
        z("2025-03-29T03:00"),
        z("2025-03-30T02:00"),
        z("2025-03-31T02:00"),
    ]


def test_london_daily_0300_across_october_change() -> None:
    # Clocks go back at 01:00Z on 2025-10-26.
    assert fires("0 3 * * *", "2025-10-24T12:00", 3, "Europe/London") == [
        z("2025-10-25T02:00"),
        z("2025-10-26T03:00"),
        z("2025-10-27T03:00"),
    ]


def test_new_york_gap_fires_once_at_end_of_gap() -> None:
    # 02:00-03:00 EST does not exist on 2025-03-09; 03:00 EDT is 07:00Z.
    assert fires("30 2 * * *", "2025-03-08T00:00", 3, "America/New_York") == [
        z("2025-03-08T07:30"),
        z("2025-03-09T07:00"),
        z("2025-03-10T06:30"),
    ]


def test_new_york_gap_collapses_several_times_into_one_firing() -> None:
    # 02:00, 02:15, 02:30 and 02:45 are all skipped: one firing at 03:00 EDT.
    assert fires("*/15 2 * * *", "2025-03-09T05:00", 2, "America/New_York") == [
        z("2025-03-09T07:00"),
        z("2025-03-10T06:00"),
    ]
    # A job at 03:00 itself coincides with the end of the gap and still fires once.
    assert fires("*/30 2-3 * * *", "2025-03-09T05:00", 3, "America/New_York") == [
        z("2025-03-09T07:00"),
        z("2025-03-09T07:30"),
        z("2025-03-10T06:00"),
    ]


def test_new_york_overlap_fires_once_at_first_occurrence() -> None:
    # 01:00-02:00 happens twice on 2025-11-02: 05:00-06:00Z (EDT) then 06:00-07:00Z (EST).
    assert fires("30 1 * * *", "2025-11-01T00:00", 3, "America/New_York") == [
        z("2025-11-01T05:30"),
        z("2025-11-02T05:30"),
        z("2025-11-03T06:30"),
    ]
    schedule = parse_cron("30 1 * * *", "America/New_York")
    # Asked from inside the second pass (01:00 EST) it does not fire again that night.
    assert schedule.next_after(z("2025-11-02T06:00")) == z("2025-11-03T06:30")
    assert schedule.next_after(z("2025-11-02T05:59")) == z("2025-11-03T06:30")


def test_new_york_overlap_every_half_hour() -> None:
    assert fires("*/30 1-2 * * *", "2025-11-02T04:00", 5, "America/New_York") == [
        z("2025-11-02T05:00"),  # 01:00 EDT
        z("2025-11-02T05:30"),  # 01:30 EDT
        z("2025-11-02T07:00"),  # 02:00 EST; 01:00 and 01:30 EST are repeats and are skipped
        z("2025-11-02T07:30"),
        z("2025-11-03T06:00"),
    ]


def test_sydney_across_october_change() -> None:
    # 02:00 AEST (+10) jumps to 03:00 AEDT (+11) on 2025-10-05, i.e. 16:00Z on the 4th.
    assert fires("0 9 * * *", "2025-10-03T12:00", 3, "Australia/Sydney") == [
        z("2025-10-03T23:00"),
        z("2025-10-04T22:00"),
        z("2025-10-05T22:00"),
    ]
    assert fires("30 2 * * *", "2025-10-03T12:00", 3, "Australia/Sydney") == [
        z("2025-10-03T16:30"),
        z("2025-10-04T16:00"),
        z("2025-10-05T15:30"),
    ]


def test_sydney_across_april_change() -> None:
    # 03:00 AEDT falls back to 02:00 AEST on 2025-04-06 (16:00Z on the 5th).
    assert fires("30 2 * * *", "2025-04-04T12:00", 3, "Australia/Sydney") == [
        z("2025-04-04T15:30"),
        z("2025-04-05T15:30"),
        z("2025-04-06T16:30"),
    ]


def test_lord_howe_half_hour_gap() -> None:
    # Lord Howe moves from +10:30 to +11 at 02:00 local on 2025-10-05 (15:30Z on the 4th).
    assert fires("15 2 * * *", "2025-10-04T00:00", 2, "Australia/Lord_Howe") == [
        z("2025-10-04T15:30"),
        z("2025-10-05T15:15"),
    ]


# --- cross-check against a minute-by-minute reference -----------------------------


def _reference_firings(expression: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    """Walk UTC minutes: fire on a matching first-occurrence wall time, or at the end of a gap containing one."""
    spec = _compile(expression)
    zone = ZoneInfo(timezone)

    def matches(wall: datetime) -> bool:
        weekday = wall.isoweekday() % 7
        in_days, in_weekdays = wall.day in spec.days, weekday in spec.weekdays
        day_ok = (in_days or in_weekdays) if spec.day_or else (in_days and in_weekdays)
        return (
            wall.minute in spec.minutes and wall.hour in spec.hours and wall.month in spec.months and day_ok
        )

    firings = []
    instant = start
    previous_wall = (instant - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None, fold=0)
    while instant <= end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        skipped = []
        step = previous_wall + timedelta(minutes=1)
        while step < wall:
            skipped.append(step)
            step += timedelta(minutes=1)
        if (matches(wall) and local.fold == 0) or any(matches(w) for w in skipped):
            firings.append(instant)
        previous_wall = wall
        instant += timedelta(minutes=1)
    return firings


@pytest.mark.parametrize(
    ("timezone", "start"),
    [
        ("America/New_York", "2025-03-08T18:00"),
        ("America/New_York", "2025-11-01T18:00"),
        ("Europe/London", "2025-03-29T12:00"),
        ("Europe/London", "2025-10-25T12:00"),
        ("Australia/Sydney", "2025-10-04T00:00"),
        ("Australia/Sydney", "2025-04-05T00:00"),
        ("Australia/Lord_Howe", "2025-04-05T00:00"),
        ("Australia/Lord_Howe", "2025-10-04T00:00"),
        ("Asia/Kolkata", "2025-06-06T00:00"),
    ],
)
def test_matches_minute_by_minute_reference(timezone: str, start: str) -> None:
    """Each window spans a transition; probe from every firing and from random points in between."""
    begin = z(start)
    end = begin + timedelta(days=2)
    rng = random.Random(f"{timezone}{start}")
    expressions = [
        "*/15 * * * *",
        "30 2 * * *",
        "0 1-3 * * *",
        "*/7 1,2 * * *",
        "0 * * * *",
        "59 1 * * *",
        "0,20,40 2 * * 0,6",
    ]
    for expression in expressions:
        schedule = parse_cron(expression, timezone)
        firings = _reference_firings(expression, timezone, begin, end)
        assert firings, expression
        probes = [begin, *firings[:-1]]
        probes += [begin + timedelta(seconds=rng.randrange(0, 86400)) for _ in range(20)]
        for probe in probes:
            expected = next((f for f in firings if f > probe), None)
            if expected is not None:
                assert schedule.next_after(probe) == expected, (expression, probe)


# --- intervals and serialisation ------------------------------------------------


def test_interval_adds_real_seconds_across_dst() -> None:
    new_york = ZoneInfo("America/New_York")
    schedule = IntervalSchedule(3600)
    result = schedule.next_after(datetime(2025, 3, 9, 1, 30, tzinfo=new_york))  # 06:30Z
    assert result == z("2025-03-09T07:30")
    assert result.tzinfo is UTC
    assert IntervalSchedule(0.5).next_after(z("2025-01-01T00:00")) == z("2025-01-01T00:00") + timedelta(
        milliseconds=500
    )


@pytest.mark.parametrize("seconds", [0, -1.0, float("inf"), float("nan")])
def test_interval_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        IntervalSchedule(seconds)


def test_interval_rejects_naive_instant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        IntervalSchedule(1).next_after(datetime(2025, 1, 1))


def test_schedules_round_trip_through_msgspec() -> None:
    schedules: list[Schedule] = [parse_cron("0 3 * * *", "Europe/London"), IntervalSchedule(90.0)]
    encoded = msgspec.json.encode(schedules)
    assert msgspec.json.decode(encoded, type=list[Schedule]) == schedules
    assert b'"type":"cron"' in encoded and b'"type":"interval"' in encoded
    # A stored schedule is validated again on load.
    with pytest.raises(msgspec.ValidationError, match="out of range"):
        msgspec.json.decode(b'{"type":"cron","expression":"0 24 * * *"}', type=Schedule)
    with pytest.raises(msgspec.ValidationError, match="unknown IANA time zone"):
        msgspec.json.decode(b'{"type":"cron","expression":"0 0 * * *","timezone":"Nowhere"}', type=Schedule)


def test_schedules_are_hashable() -> None:
    assert len({parse_cron("0 0 * * *"), parse_cron("0  0 * * *"), IntervalSchedule(1)}) == 2
