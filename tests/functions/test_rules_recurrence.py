"""Recurrence expansion rules T1-T6 and T12 from docs/booking-rules.md, with exact UTC instants."""

from __future__ import annotations

import calendar
import os
import time as time_module
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from functions._rules.recurrence import (
    GapPolicy,
    Occurrence,
    expand_occurrences,
    format_instant,
    local_to_utc,
    normalize_rrule,
    parse_instant,
    parse_local_date,
    parse_local_time,
    parse_rrule,
    start_of_local_day,
    validate_rrule,
)

NY = "America/New_York"
LONDON = "Europe/London"
SYDNEY = "Australia/Sydney"


def expand(
    start: date,
    at: time,
    rule: str,
    tz: str,
    *,
    duration: int = 60,
    gap_policy: GapPolicy = "skip",
    closed: Collection[date] = frozenset(),
    window: tuple[date, date] = (date(1990, 1, 1), date(2030, 12, 31)),
) -> list[Occurrence]:
    return expand_occurrences(
        start_date=start,
        local_time=at,
        duration_minutes=duration,
        rrule=rule,
        tz=tz,
        from_date=window[0],
        to_date=window[1],
        closed_dates=closed,
        gap_policy=gap_policy,
    )


def starts(occurrences: list[Occurrence]) -> list[str]:
    return [format_instant(o.starts_at) for o in occurrences]


def local_dates(occurrences: list[Occurrence]) -> list[str]:
    return [o.local_date.isoformat() for o in occurrences]


@pytest.fixture
def process_tz() -> Iterator[None]:
    """Restore the process TZ after a test that changes it."""
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time_module.tzset()


# --- T1, T2: wall-clock expansion, independent of the server zone ----------------------------------------


def test_weekly_london_class_stays_at_nine_local_across_bst() -> None:
    occ = expand(date(2025, 3, 23), time(9), "FREQ=WEEKLY;COUNT=3", LONDON)
    assert starts(occ) == ["2025-03-23T09:00:00Z", "2025-03-30T08:00:00Z", "2025-04-06T08:00:00Z"]
    assert [o.local_time for o in occ] == [time(9)] * 3
    assert [o.sequence for o in occ] == [0, 1, 2]
    assert {o.tz for o in occ} == {LONDON}
    assert occ[1].starts_at.tzinfo is UTC
    assert format_instant(occ[1].ends_at) == "2025-03-30T09:00:00Z"


def test_result_is_identical_under_los_angeles_and_utc_process_tz(process_tz: None) -> None:
    results = []
    for server_tz in ("America/Los_Angeles", "UTC"):
        os.environ["TZ"] = server_tz
        time_module.tzset()
        results.append(expand(date(2025, 3, 23), time(9), "FREQ=WEEKLY;BYDAY=SU;COUNT=3", LONDON))
    assert results[0] == results[1]
    assert starts(results[0]) == ["2025-03-23T09:00:00Z", "2025-03-30T08:00:00Z", "2025-04-06T08:00:00Z"]


def test_sydney_weekly_class_moves_utc_when_dst_starts_in_october() -> None:
    occ = expand(date(2025, 9, 28), time(9), "FREQ=WEEKLY;BYDAY=SU;COUNT=3", SYDNEY)
    assert starts(occ) == ["2025-09-27T23:00:00Z", "2025-10-04T22:00:00Z", "2025-10-11T22:00:00Z"]
    assert local_dates(occ) == ["2025-09-28", "2025-10-05", "2025-10-12"]


def test_wkst_defaults_to_monday_whatever_calendar_firstweekday_says() -> None:
    rule = "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU"
    saved = calendar.firstweekday()
    try:
        calendar.setfirstweekday(calendar.SUNDAY)
        occ = expand(date(1997, 8, 5), time(9), rule, NY)
    finally:
        calendar.setfirstweekday(saved)
    # RFC 5545 section 3.3.10 examples: WKST=MO and WKST=SU give different sets.
    assert local_dates(occ) == ["1997-08-05", "1997-08-10", "1997-08-19", "1997-08-24"]
    occ_su = expand(date(1997, 8, 5), time(9), rule + ";WKST=SU", NY)
    assert local_dates(occ_su) == ["1997-08-05", "1997-08-17", "1997-08-19", "1997-08-31"]
    assert starts(occ_su)[0] == "1997-08-05T13:00:00Z"


# --- T3: spring-forward gap ------------------------------------------------------------------------------


def test_gap_skip_drops_the_instance_and_count_still_yields_five() -> None:
    occ = expand(date(2025, 3, 7), time(2, 30), "FREQ=DAILY;COUNT=5", NY)
    assert local_dates(occ) == ["2025-03-07", "2025-03-08", "2025-03-10", "2025-03-11", "2025-03-12"]
    assert starts(occ) == [
        "2025-03-07T07:30:00Z",
        "2025-03-08T07:30:00Z",
        "2025-03-10T06:30:00Z",
        "2025-03-11T06:30:00Z",
        "2025-03-12T06:30:00Z",
    ]
    assert [o.sequence for o in occ] == [0, 1, 2, 3, 4]
    assert not any(o.shifted for o in occ)


def test_gap_shift_moves_forward_by_the_gap() -> None:
    occ = expand(date(2025, 3, 7), time(2, 30), "FREQ=DAILY;COUNT=5", NY, gap_policy="shift")
    assert local_dates(occ) == ["2025-03-07", "2025-03-08", "2025-03-09", "2025-03-10", "2025-03-11"]
    gap_day = occ[2]
    assert (gap_day.local_time, gap_day.shifted) == (time(3, 30), True)
    assert format_instant(gap_day.starts_at) == "2025-03-09T07:30:00Z"
    assert format_instant(gap_day.ends_at) == "2025-03-09T08:30:00Z"


@pytest.mark.parametrize(
    ("policy", "expected_dates", "expected_starts"),
    [
        ("skip", ["2025-10-04", "2025-10-06"], ["2025-10-03T16:30:00Z", "2025-10-05T15:30:00Z"]),
        (
            "shift",
            ["2025-10-04", "2025-10-05", "2025-10-06"],
            ["2025-10-03T16:30:00Z", "2025-10-04T16:30:00Z", "2025-10-05T15:30:00Z"],
        ),
    ],
)
def test_sydney_gap_night(policy: GapPolicy, expected_dates: list[str], expected_starts: list[str]) -> None:
    window = (date(2025, 10, 4), date(2025, 10, 6))
    occ = expand(date(2025, 10, 4), time(2, 30), "FREQ=DAILY", SYDNEY, gap_policy=policy, window=window)
    assert local_dates(occ) == expected_dates
    assert starts(occ) == expected_starts


def test_shift_never_moves_an_instance_onto_another_local_date() -> None:
    # Samoa skipped 2011-12-30 entirely; shifting 09:00 would land on 31 Dec 09:00, a duplicate.
    for policy in ("skip", "shift"):
        occ = expand(date(2011, 12, 28), time(9), "FREQ=DAILY;COUNT=4", "Pacific/Apia", gap_policy=policy)
        assert local_dates(occ) == ["2011-12-28", "2011-12-29", "2011-12-31", "2012-01-01"]
        assert starts(occ) == [
            "2011-12-28T19:00:00Z",
            "2011-12-29T19:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-31T19:00:00Z",
        ]


# --- T4, T5: fall-back overlap and absolute durations ----------------------------------------------------


def test_ambiguous_start_takes_first_occurrence_and_duration_is_absolute() -> None:
    (occ,) = expand(date(2025, 11, 2), time(1, 30), "FREQ=DAILY;COUNT=1", NY)
    assert format_instant(occ.starts_at) == "2025-11-02T05:30:00Z"
    assert format_instant(occ.ends_at) == "2025-11-02T06:30:00Z"
    end_local = occ.ends_at.astimezone(ZoneInfo(NY))
    assert (end_local.time(), end_local.utcoffset()) == (time(1, 30), timedelta(hours=-5))


def test_sydney_fall_back_night_uses_daylight_time() -> None:
    (occ,) = expand(date(2025, 4, 6), time(2, 30), "FREQ=DAILY;COUNT=1", SYDNEY, duration=90)
    assert format_instant(occ.starts_at) == "2025-04-05T15:30:00Z"
    assert format_instant(occ.ends_at) == "2025-04-05T17:00:00Z"


# --- T6: closures by local date --------------------------------------------------------------------------


def test_closed_date_produces_no_instance_but_counts_toward_count() -> None:
    occ = expand(date(2025, 12, 23), time(9), "FREQ=DAILY;COUNT=5", LONDON, closed={date(2025, 12, 25)})
    assert local_dates(occ) == ["2025-12-23", "2025-12-24", "2025-12-26", "2025-12-27"]
    assert [o.sequence for o in occ] == [0, 1, 3, 4]
    assert starts(occ)[2] == "2025-12-26T09:00:00Z"


def test_closure_is_keyed_by_local_date_not_utc_day() -> None:
    # 09:00 in Sydney on 25 Dec is 24 Dec 22:00Z: the local date decides.
    occ = expand(date(2025, 12, 24), time(9), "FREQ=DAILY;COUNT=3", SYDNEY, closed={date(2025, 12, 25)})
    assert local_dates(occ) == ["2025-12-24", "2025-12-26"]
    assert starts(occ) == ["2025-12-23T22:00:00Z", "2025-12-25T22:00:00Z"]
    regenerated = expand(
        date(2025, 12, 24), time(9), "FREQ=DAILY;COUNT=3", SYDNEY, closed={date(2025, 12, 25)}
    )
    assert regenerated == occ


def test_window_keeps_sequence_numbers_of_the_whole_series() -> None:
    window = (date(2025, 2, 1), date(2025, 2, 28))
    occ = expand(date(2025, 1, 6), time(18), "FREQ=WEEKLY;BYDAY=MO", NY, window=window)
    assert local_dates(occ) == ["2025-02-03", "2025-02-10", "2025-02-17", "2025-02-24"]
    assert [o.sequence for o in occ] == [4, 5, 6, 7]
    assert starts(occ)[0] == "2025-02-03T23:00:00Z"


# --- T12: UNTIL normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("until", "count"),
    [
        ("20250406T090000", 3),  # naive: 09:00 London (BST) = 08:00Z, inclusive
        ("20250406T083000", 2),  # naive 08:30 London = 07:30Z; read as UTC it would wrongly include 6 Apr
        ("20250406T080000Z", 3),
        ("20250406T075959Z", 2),
        ("20250406", 3),  # date-only: through the end of that local day
        ("20250405", 2),
    ],
)
def test_until_naive_is_venue_local_and_z_is_utc(until: str, count: int) -> None:
    occ = expand(date(2025, 3, 23), time(9), f"FREQ=WEEKLY;UNTIL={until}", LONDON)
    assert starts(occ) == ["2025-03-23T09:00:00Z", "2025-03-30T08:00:00Z", "2025-04-06T08:00:00Z"][:count]


def test_normalize_rrule_rewrites_until_in_utc() -> None:
    assert normalize_rrule("FREQ=WEEKLY;UNTIL=20250406T083000;BYDAY=SU", LONDON) == (
        "FREQ=WEEKLY;UNTIL=20250406T073000Z;BYDAY=SU"
    )
    assert normalize_rrule("rrule:freq=weekly;until=20250406", LONDON) == "FREQ=WEEKLY;UNTIL=20250406T225959Z"
    assert normalize_rrule("FREQ=DAILY;UNTIL=20251005T023000", SYDNEY) == "FREQ=DAILY;UNTIL=20251004T163000Z"
    assert normalize_rrule("FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR;WKST=SU", NY) == (
        "FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR;WKST=SU"
    )


# --- monthly rules -----------------------------------------------------------------------------------------


def test_bymonthday_31_skips_months_without_a_31st() -> None:
    occ = expand(date(2025, 1, 1), time(18), "FREQ=MONTHLY;BYMONTHDAY=31;COUNT=7", "Asia/Tokyo")
    assert local_dates(occ) == [
        "2025-01-31",
        "2025-03-31",
        "2025-05-31",
        "2025-07-31",
        "2025-08-31",
        "2025-10-31",
        "2025-12-31",
    ]
    assert starts(occ)[0] == "2025-01-31T09:00:00Z"


def test_bysetpos_last_weekday_of_month() -> None:
    rule = "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=3"
    occ = expand(date(2025, 1, 1), time(18), rule, NY)
    assert starts(occ) == ["2025-01-31T23:00:00Z", "2025-02-28T23:00:00Z", "2025-03-31T22:00:00Z"]


def test_interval_with_byday() -> None:
    occ = expand(date(2025, 1, 6), time(7), "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=4", LONDON)
    assert local_dates(occ) == ["2025-01-06", "2025-01-08", "2025-01-20", "2025-01-22"]


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("FREQ=FORTNIGHTLY", "unknown FREQ"),
        ("DTSTART:20250101T090000Z\nRRULE:FREQ=DAILY", "DTSTART is not allowed"),
        ("FREQ=DAILY;DTSTART=20250101T090000Z", "DTSTART is not allowed"),
        ("EXDATE:20250101T090000Z", "single RRULE value"),
        ("FREQ=HOURLY", "one local start time"),
        ("FREQ=DAILY;BYHOUR=9", "one local start time"),
        ("BYDAY=MO", "FREQ is required"),
        ("", "empty RRULE"),
        ("FREQ=DAILY;FREQ=WEEKLY", "given twice"),
        ("FREQ=DAILY;FOO=1", "unsupported RRULE part"),
        ("FREQ=DAILY;COUNT", "expected NAME=VALUE"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20250101T000000Z", "COUNT and UNTIL"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be between"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be between"),
        ("FREQ=DAILY;INTERVAL=x", "INTERVAL must be an integer"),
        ("FREQ=WEEKLY;BYDAY=1MO", "only valid with FREQ=MONTHLY or YEARLY"),
        ("FREQ=MONTHLY;BYDAY=XX", "invalid BYDAY"),
        ("FREQ=MONTHLY;BYDAY=0MO", "must not be 0"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY must be between"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY values must be between"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYWEEKNO=1", "BYWEEKNO"),
        ("FREQ=MONTHLY;BYSETPOS=1", "BYSETPOS needs"),
        ("FREQ=DAILY;UNTIL=2025-01-01", "invalid UNTIL"),
        ("FREQ=DAILY;UNTIL=20250230", "not a real date"),
        ("FREQ=DAILY;WKST=XX", "invalid WKST"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "never falls in the selected months"),
    ],
)
def test_validate_rrule_rejects_bad_input(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_rrule(value)


def test_validate_rrule_accepts_prefix_lowercase_and_returns_parts() -> None:
    rule = validate_rrule("RRULE:freq=weekly;byday=MO,WE;count=20")
    assert (rule.freq, rule.count, rule.byday, rule.interval, rule.wkst) == (
        "WEEKLY",
        20,
        ((None, 0), (None, 2)),
        1,
        0,
    )
    assert parse_rrule("FREQ=MONTHLY;BYDAY=-1FR").byday == ((-1, 4),)
    assert parse_rrule("FREQ=DAILY;UNTIL=20250406T080000Z").until == datetime(2025, 4, 6, 8, tzinfo=UTC)


def test_rule_that_depends_on_start_year_is_checked_with_the_start_date() -> None:
    leap_every_four = "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29"
    assert validate_rrule(leap_every_four, date(2024, 1, 1)).interval == 4
    with pytest.raises(ValueError, match="never produces an occurrence"):
        validate_rrule(leap_every_four, date(2001, 1, 1))


def test_empty_rule_is_rejected_quickly_instead_of_searching_to_year_9999() -> None:
    began = time_module.monotonic()
    with pytest.raises(ValueError, match="never produces an occurrence"):
        expand(date(2025, 1, 1), time(9), "FREQ=DAILY;BYMONTHDAY=31;BYSETPOS=2", LONDON)
    assert time_module.monotonic() - began < 2.0


def test_expand_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duration_minutes"):
        expand(date(2025, 1, 1), time(9), "FREQ=DAILY", LONDON, duration=0)
    with pytest.raises(ValueError, match="from_date"):
        expand(date(2025, 1, 1), time(9), "FREQ=DAILY", LONDON, window=(date(2025, 2, 1), date(2025, 1, 1)))
    with pytest.raises(ValueError, match="gap policy"):
        expand(date(2025, 1, 1), time(9), "FREQ=DAILY", LONDON, gap_policy="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown time zone"):
        expand(date(2025, 1, 1), time(9), "FREQ=DAILY", "Mars/Olympus")


# --- parsing and conversion helpers ------------------------------------------------------------------------


def test_parse_local_date_and_time_are_strict() -> None:
    assert parse_local_date("2025-03-23") == date(2025, 3, 23)
    assert parse_local_time("09:00") == time(9)
    for bad in ("20250323", "2025-3-23", "2025-02-30"):
        with pytest.raises(ValueError):
            parse_local_date(bad)
    for bad in ("9:00", "09:00:00", "25:00", "09h00"):
        with pytest.raises(ValueError):
            parse_local_time(bad)


def test_parse_instant_rejects_naive_and_normalises_to_utc() -> None:
    with pytest.raises(ValueError, match=r"^naive datetime: an offset or Z is required$"):
        parse_instant("2025-03-30T09:00")
    with pytest.raises(ValueError, match="invalid instant"):
        parse_instant("yesterday")
    parsed = parse_instant("2025-03-30T09:00:00+01:00")
    assert parsed == datetime(2025, 3, 30, 8, tzinfo=UTC)
    assert parsed.tzinfo is UTC
    assert parse_instant("2025-03-30T08:00:00Z") == parsed


def test_format_instant() -> None:
    assert format_instant(datetime(2025, 3, 23, 9, tzinfo=UTC)) == "2025-03-23T09:00:00Z"
    london = datetime(2025, 3, 30, 9, tzinfo=ZoneInfo(LONDON))
    assert format_instant(london) == "2025-03-30T08:00:00Z"
    assert format_instant(datetime(2025, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)) == "2025-01-01T00:00:00.001Z"
    assert format_instant(datetime(2025, 1, 1, 0, 0, 0, 5, tzinfo=UTC)) == "2025-01-01T00:00:00.000005Z"
    assert parse_instant(format_instant(london)) == london
    with pytest.raises(ValueError, match="naive"):
        format_instant(datetime(2025, 1, 1))


def test_local_to_utc_gap_overlap_and_policy() -> None:
    assert local_to_utc(date(2025, 3, 9), time(2, 30), NY) is None
    assert local_to_utc(date(2025, 3, 9), time(2, 30), NY, "shift") == datetime(2025, 3, 9, 7, 30, tzinfo=UTC)
    assert local_to_utc(date(2025, 11, 2), time(1, 30), NY) == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)
    assert local_to_utc(date(2025, 10, 5), time(9), SYDNEY) == datetime(2025, 10, 4, 22, tzinfo=UTC)
    with pytest.raises(ValueError, match="gap policy"):
        local_to_utc(date(2025, 3, 9), time(2, 30), NY, "nearest")  # type: ignore[arg-type]


def test_start_of_local_day_when_midnight_is_in_the_gap() -> None:
    # Chile springs forward at 00:00 -> 01:00: the day starts at the transition, 04:00Z.
    assert start_of_local_day(date(2025, 9, 7), "America/Santiago") == datetime(2025, 9, 7, 4, tzinfo=UTC)
    assert start_of_local_day(date(2025, 7, 1), LONDON) == datetime(2025, 6, 30, 23, tzinfo=UTC)
