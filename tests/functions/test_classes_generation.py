"""Recurring classes become instance rows in each venue's wall time (T1-T5, T11-T13), on a rolling horizon.

Three zones are exercised on their daylight-saving nights: Europe/London, America/New_York and
Australia/Sydney (southern hemisphere: clocks go back in April and forward in October).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from backend import AppError
from backend.db import sort_key
from backend.errors import InvalidArgs
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, iso, new_studio

START = at("2025-03-20T12:00:00Z")


@pytest.fixture(scope="module")
async def gtb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(gtb: TestBackend) -> Studio:
    assert isinstance(gtb.clock, ManualClock)
    gtb.clock.set(START)
    return await new_studio(gtb, "Europe/London")


def local(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(local date, local time) of API results or stored rows."""
    return [(r.get("localDate", r.get("local_date")), r.get("localTime", r.get("local_time"))) for r in rows]


def starts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["startsAt"] if "startsAt" in r else iso(r["starts_at"]) for r in rows]


async def test_t1_weekly_london_class_stays_at_nine_local_across_spring_forward(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;BYDAY=SU;COUNT=3")
    schedule = await studio.schedule("2025-03-20T00:00:00Z", "2025-04-30T00:00:00Z")
    assert starts(schedule) == ["2025-03-23T09:00:00Z", "2025-03-30T08:00:00Z", "2025-04-06T08:00:00Z"]
    assert {(s["localTime"], s["timezone"], s["templateId"]) for s in schedule} == {("09:00", "Europe/London", template)}
    assert [s["endsAt"] for s in schedule] == ["2025-03-23T10:00:00Z", "2025-03-30T09:00:00Z", "2025-04-06T09:00:00Z"]
    row = (await studio.rows(template))[0]
    assert (row["local_date"], row["local_time"], row["timezone"]) == ("2025-03-23", "09:00", "Europe/London")
    assert row["occurrence_key"] == f"{template}|2025-03-23|09:00"
    assert (row["booked"], row["waitlisted"], row["status"], row["is_exception"]) == (0, 0, "scheduled", False)


@pytest.fixture
def process_zone() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


async def test_t2_expansion_does_not_depend_on_the_server_zone(studio: Studio, gtb: TestBackend, process_zone: None) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;BYDAY=SU;COUNT=3")
    assert time.strftime("%Z") in ("PDT", "PST")
    assert starts(await studio.rows(template)) == [
        "2025-03-23T09:00:00Z", "2025-03-30T08:00:00Z", "2025-04-06T08:00:00Z"]


async def test_t3_gap_times_are_skipped_by_default_and_not_counted(studio: Studio) -> None:
    studio.clock.set(at("2025-03-01T12:00:00Z"))
    await studio.venue("nyc", "America/New_York")
    template = await studio.template("nyc", "2025-03-07", "02:30", "FREQ=DAILY;COUNT=5")
    rows = await studio.rows(template)
    assert [d for d, _ in local(rows)] == ["2025-03-07", "2025-03-08", "2025-03-10", "2025-03-11", "2025-03-12"]
    assert starts(rows)[1:3] == ["2025-03-08T07:30:00Z", "2025-03-10T06:30:00Z"]
    assert {t for _, t in local(rows)} == {"02:30"}


async def test_t3_shift_policy_moves_a_gap_time_forward_by_the_gap(studio: Studio) -> None:
    studio.clock.set(at("2025-03-01T12:00:00Z"))
    assert (await studio.settings(gapPolicy="shift"))["gapPolicy"] == "shift"
    await studio.venue("nyc", "America/New_York")
    template = await studio.template("nyc", "2025-03-08", "02:30", "FREQ=DAILY;COUNT=3")
    rows = await studio.rows(template)
    assert local(rows) == [("2025-03-08", "02:30"), ("2025-03-09", "03:30"), ("2025-03-10", "02:30")]
    assert starts(rows) == ["2025-03-08T07:30:00Z", "2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z"]


async def test_t4_t5_ambiguous_time_is_the_first_and_duration_is_absolute(studio: Studio) -> None:
    studio.clock.set(at("2025-10-20T12:00:00Z"))
    await studio.venue("nyc", "America/New_York")
    ny = await studio.template("nyc", "2025-11-02", "01:30", "FREQ=DAILY;COUNT=1", durationMinutes=60)
    [row] = await studio.rows(ny)
    assert (iso(row["starts_at"]), iso(row["ends_at"])) == ("2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z")
    assert (row["local_date"], row["local_time"]) == ("2025-11-02", "01:30")
    await studio.venue("soho")
    london = await studio.template("soho", "2025-10-26", "01:30", "FREQ=DAILY;COUNT=2", durationMinutes=90)
    rows = await studio.rows(london)
    assert starts(rows) == ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]
    assert iso(rows[0]["ends_at"]) == "2025-10-26T02:00:00Z"


async def test_southern_hemisphere_sydney_autumn_and_spring_nights(studio: Studio) -> None:
    await studio.venue("bondi", "Australia/Sydney")
    autumn = await studio.template("bondi", "2025-03-30", "09:00", "FREQ=WEEKLY;BYDAY=SU;COUNT=3")
    rows = await studio.rows(autumn)
    assert local(rows) == [("2025-03-30", "09:00"), ("2025-04-06", "09:00"), ("2025-04-13", "09:00")]
    assert starts(rows) == ["2025-03-29T22:00:00Z", "2025-04-05T23:00:00Z", "2025-04-12T23:00:00Z"]
    studio.clock.set(at("2025-09-20T00:00:00Z"))
    spring = await studio.template("bondi", "2025-09-28", "02:30", "FREQ=WEEKLY;BYDAY=SU;COUNT=3")
    rows = await studio.rows(spring)
    assert [d for d, _ in local(rows)] == ["2025-09-28", "2025-10-12", "2025-10-19"]
    assert starts(rows) == ["2025-09-27T16:30:00Z", "2025-10-11T15:30:00Z", "2025-10-18T15:30:00Z"]


async def test_until_is_a_whole_local_day_and_is_stored_in_utc(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;BYDAY=SU;UNTIL=20250413")
    assert [d for d, _ in local(await studio.rows(template))] == ["2025-03-23", "2025-03-30", "2025-04-06", "2025-04-13"]
    assert (await studio.row("class_templates", template))["rrule"] == "FREQ=WEEKLY;UNTIL=20250413T225959Z;BYDAY=SU"
    naive = await studio.template("soho", "2025-03-24", "09:00", "FREQ=DAILY;UNTIL=20250330T083000")
    assert (await studio.row("class_templates", naive))["rrule"] == "FREQ=DAILY;UNTIL=20250330T073000Z"
    assert local(await studio.rows(naive))[-1] == ("2025-03-29", "09:00")  # 09:00 BST on the 30th is after 07:30Z


async def test_monthly_bymonthday_31_only_in_long_months(studio: Studio) -> None:
    studio.clock.set(at("2025-01-01T00:00:00Z"))
    await studio.settings(horizonDays=365)
    await studio.venue("soho")
    template = await studio.template("soho", "2025-01-01", "18:00", "FREQ=MONTHLY;BYMONTHDAY=31")
    assert [d for d, _ in local(await studio.rows(template))] == [
        "2025-01-31", "2025-03-31", "2025-05-31", "2025-07-31", "2025-08-31", "2025-10-31", "2025-12-31"]


async def test_count_counts_closed_dates_like_exdate(studio: Studio) -> None:
    await studio.venue("soho")
    await studio.mutation("classes:add_closure", {"businessId": studio.business_id, "fromDate": "2025-03-30",
                                                  "toDate": "2025-03-30", "reason": "Mothering Sunday"})
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;BYDAY=SU;COUNT=4")
    assert [d for d, _ in local(await studio.rows(template))] == ["2025-03-23", "2025-04-06", "2025-04-13"]


async def test_a_series_that_started_earlier_is_materialised_from_today(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-01-01", "07:00", "FREQ=DAILY;COUNT=100")
    dates = [d for d, _ in local(await studio.rows(template))]
    assert dates[0] == "2025-03-20" and dates[-1] == "2025-04-10" and len(dates) == 22


async def test_t11_horizon_is_rolled_forward_idempotently(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-20", "18:00", "FREQ=DAILY")
    rows = await studio.rows(template)
    assert (rows[0]["local_date"], rows[-1]["local_date"], len(rows)) == ("2025-03-20", "2025-05-15", 57)
    assert (await studio.row("class_templates", template))["generated_until"] == "2025-05-15"
    assert (await studio.extend())["created"] == 0
    assert (await studio.extend())["created"] == 0
    studio.clock.advance(days=7)
    assert (await studio.extend())["created"] == 7
    assert (await studio.extend())["created"] == 0
    rows = await studio.rows(template)
    assert len(rows) == 64 and len({r["occurrence_key"] for r in rows}) == 64
    # The cron's form (no businessId) schedules one job per business, so no single run grows with the tenants.
    everyone = await studio.internal("classes:extend_horizons", {})
    assert everyone["scheduled"] == everyone["businesses"] > 1 and everyone["created"] == 0
    await studio.tb.backend.scheduler.run_due()  # type: ignore[union-attr]
    assert (await studio.extend())["created"] == 0  # the per-business job already did this one's work


async def test_t11_horizon_must_cover_the_booking_window_and_grows_at_once(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-20", "18:00", "FREQ=DAILY")
    with pytest.raises(AppError) as refused:
        await studio.settings(bookingOpensDaysBefore=60)
    assert refused.value.data == {"code": "invalid_argument", "field": "horizonDays", "min": 67}
    settings = await studio.settings(bookingOpensDaysBefore=60, horizonDays=67)
    assert (settings["bookingOpensDaysBefore"], settings["horizonDays"]) == (60, 67)
    assert (await studio.rows(template))[-1]["local_date"] == "2025-05-26"


async def test_t12_naive_instants_are_rejected(studio: Studio) -> None:
    with pytest.raises(InvalidArgs) as error:
        await studio.schedule("2025-03-30T09:00", "2025-04-30T00:00:00Z")
    assert "naive" in error.value.message and "$.args.from" in error.value.message


async def test_t13_each_venue_in_its_own_local_time(studio: Studio) -> None:
    await studio.venue("soho")
    await studio.venue("nyc", "America/New_York")
    await studio.template("soho", "2025-04-07", "09:00", "FREQ=WEEKLY;COUNT=1", name="London flow")
    await studio.template("nyc", "2025-04-07", "09:00", "FREQ=WEEKLY;COUNT=1", name="NY flow")
    schedule = await studio.schedule("2025-04-07T00:00:00Z", "2025-04-08T00:00:00Z")
    assert [(s["name"], s["startsAt"], s["localTime"], s["timezone"]) for s in schedule] == [
        ("London flow", "2025-04-07T08:00:00Z", "09:00", "Europe/London"),
        ("NY flow", "2025-04-07T13:00:00Z", "09:00", "America/New_York"),
    ]
    only_ny = await studio.schedule("2025-04-07T00:00:00Z", "2025-04-08T00:00:00Z", venue="nyc")
    assert [s["name"] for s in only_ny] == ["NY flow"]


async def test_list_instances_reads_exactly_the_requested_range(studio: Studio, gtb: TestBackend) -> None:
    venue = await studio.venue("soho")
    await studio.template("soho", "2025-03-20", "18:00", "FREQ=DAILY")
    low, high = "2025-04-07T00:00:00Z", "2025-04-14T00:00:00Z"
    identity = gtb.identity(studio.owner)
    for extra, index, prefix in (({}, "by_start", ()), ({"venueId": venue}, "by_venue_start", (venue,))):
        args = {"businessId": studio.business_id, "from": low, "to": high, **extra}
        outcome = await gtb.runner.query("classes:list_instances", args, identity)
        assert outcome.error is None
        reads = [i for i in outcome.read_set.intervals if i.table == "class_instances"]
        assert len(reads) == 1
        [read] = reads
        key = (studio.business_id, *prefix)
        assert (read.index, read.prefix) == (index, key)
        assert (read.lo, read.lo_inclusive) == (sort_key((*key, at(low))), True)
        assert (read.hi, read.hi_inclusive) == (sort_key((*key, at(high))), False)
    schedule = await studio.schedule(low, high)
    assert [s["localDate"] for s in schedule] == [f"2025-04-{d:02d}" for d in range(7, 14)]
    with pytest.raises(AppError) as too_wide:
        await studio.schedule("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z")
    assert too_wide.value.data["field"] == "to"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rrule": "FREQ=HOURLY"}, "rrule"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "rrule"),
        ({"rrule": "FREQ=WEEKLY;COUNT=2;UNTIL=20250501"}, "rrule"),
        ({"capacity": 31}, "capacity"),
        ({"durationMinutes": 0}, "durationMinutes"),
        ({"creditCost": 0}, "creditCost"),
        ({"name": "  "}, "name"),
    ],
)
async def test_create_template_rejects_bad_input_with_the_field(studio: Studio, overrides: dict[str, Any], field: str) -> None:
    await studio.venue("soho", capacity=30)
    args = {"rrule": "FREQ=WEEKLY", **overrides}
    with pytest.raises(AppError) as error:
        await studio.template("soho", "2025-03-23", "09:00", **args)
    assert error.value.data["code"] == "invalid_argument" and error.value.data["field"] == field


async def test_instructor_must_teach(studio: Studio) -> None:
    await studio.venue("soho")
    customer = await studio.member("carl")
    teacher = await studio.member("tess", "instructor")
    with pytest.raises(AppError) as error:
        await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;COUNT=1", instructorId=customer)
    assert error.value.data == {"code": "invalid_argument", "field": "instructorId", "role": "customer"}
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;COUNT=1", instructorId=teacher)
    assert (await studio.rows(template))[0]["instructor_id"] == teacher


async def test_writes_are_audited(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-03-23", "09:00", "FREQ=WEEKLY;COUNT=2")
    [instance, _] = await studio.rows(template)
    audit = await studio.tb.sql(
        "SELECT operation, actor, function_path FROM audit_log WHERE document_id = $1", instance["_id"])
    assert [tuple(r) for r in audit] == [("insert", studio.owner, "classes:create_template")]
