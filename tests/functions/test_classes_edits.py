"""Editing a live schedule: splits (T7), exceptions (T8), cancellations that survive edits (T9), ending and
deleting a series (T10), and regeneration that never moves a booked class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, iso, new_studio

START = at("2025-03-20T12:00:00Z")
MONDAYS = ["2025-03-24", "2025-03-31", "2025-04-07", "2025-04-14", "2025-04-21", "2025-04-28", "2025-05-05", "2025-05-12"]


@pytest.fixture(scope="module")
async def etb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(etb: TestBackend) -> Studio:
    assert isinstance(etb.clock, ManualClock)
    etb.clock.set(START)
    studio = await new_studio(etb, "Europe/London")
    await studio.venue("soho")
    return studio


async def weekly(studio: Studio, rrule: str = "FREQ=WEEKLY;BYDAY=MO", **extra: Any) -> str:
    return await studio.template("soho", "2025-03-24", "18:00", rrule, **extra)


def by_date(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["local_date"]: r for r in rows}


async def edit(studio: Studio, template: str, **changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = await studio.mutation("classes:update_template", {"templateId": template, **changes})
    return result


async def test_t7_this_and_following_splits_and_keeps_booked_classes(studio: Studio) -> None:
    old = await weekly(studio)
    before = await studio.rows(old)
    assert [r["local_date"] for r in before] == MONDAYS
    week5, week6 = before[4]["_id"], before[5]["_id"]
    booking = await studio.book("bea", week6)
    await studio.simulate_booking(week5, 2)
    result = await edit(studio, old, fromDate="2025-04-21", startTime="19:00")
    assert result["split"] is True and result["templateId"] != old
    assert (result["updated"], result["created"], result["removed"], result["keptBooked"]) == (4, 0, 0, [])
    new = result["templateId"]
    after = await studio.rows()
    assert after[:4] == before[:4]  # byte-identical, updated_at included
    later = after[4:]
    assert [r["_id"] for r in later] == [r["_id"] for r in before[4:]]  # booked or not, ids are kept
    assert {(r["template_id"], r["local_time"]) for r in later} == {(new, "19:00")}
    assert [iso(r["starts_at"]) for r in later[:2]] == ["2025-04-21T18:00:00Z", "2025-04-28T18:00:00Z"]
    assert (later[0]["booked"], later[1]["booked"]) == (2, 1)
    assert later[0]["occurrence_key"] == f"{new}|2025-04-21|19:00"
    old_row, new_row = await studio.row("class_templates", old), await studio.row("class_templates", new)
    assert (old_row["ends_after"], old_row["status"]) == ("2025-04-20", "ended")
    assert (new_row["start_date"], new_row["start_time"], new_row["parent_template_id"]) == ("2025-04-21", "19:00", old)
    assert iso((await studio.row("bookings", booking))["starts_at"]) == "2025-04-28T18:00:00Z"
    [notice] = await studio.outbox("class_changed")
    assert notice["recipient_id"] == studio.members["bea"] and notice["payload"]["instanceId"] == week6
    assert notice["payload"]["freeCancel"] is True
    assert (await studio.extend())["created"] == 0


async def test_t7_split_continues_count_and_biweekly_phase(studio: Studio) -> None:
    counted = await weekly(studio, "FREQ=WEEKLY;BYDAY=MO;COUNT=6")
    result = await edit(studio, counted, fromDate="2025-04-07", name="Flow 2")
    new_row = await studio.row("class_templates", result["templateId"])
    assert new_row["rrule"] == "FREQ=WEEKLY;COUNT=4;BYDAY=MO"
    rows = await studio.rows()
    assert [(r["local_date"], r["name"]) for r in rows] == [
        ("2025-03-24", "Flow"), ("2025-03-31", "Flow"), ("2025-04-07", "Flow 2"), ("2025-04-14", "Flow 2"),
        ("2025-04-21", "Flow 2"), ("2025-04-28", "Flow 2")]
    fortnightly = await studio.template("soho", "2025-03-25", "07:00", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU")
    result = await edit(studio, fortnightly, fromDate="2025-04-01", capacity=12)  # an off week
    assert (await studio.row("class_templates", result["templateId"]))["start_date"] == "2025-04-08"
    assert [(r["local_date"], r["capacity"]) for r in await studio.rows(result["templateId"])] == [
        ("2025-04-08", 12), ("2025-04-22", 12), ("2025-05-06", 12)]


async def test_t8_a_one_off_edit_survives_template_edits(studio: Studio) -> None:
    tess, tom = await studio.member("tess", "instructor"), await studio.member("tom", "instructor")
    template = await weekly(studio)
    week3 = (await studio.rows(template))[2]
    await studio.mutation("classes:update_instance", {"instanceId": week3["_id"], "instructorId": tess})
    assert (await studio.row("class_instances", week3["_id"]))["is_exception"] is True
    result = await edit(studio, template, instructorId=tom, startTime="18:30")
    assert result["split"] is False and result["templateId"] == template
    rows = by_date(await studio.rows(template))
    assert (rows["2025-04-07"]["instructor_id"], rows["2025-04-07"]["local_time"]) == (tess, "18:00")
    assert {(r["instructor_id"], r["local_time"]) for d, r in rows.items() if d != "2025-04-07"} == {(tom, "18:30")}


async def test_t8_moved_exception_keeps_its_slot(studio: Studio) -> None:
    template = await weekly(studio)
    week2 = (await studio.rows(template))[1]
    await studio.mutation("classes:update_instance",
                          {"instanceId": week2["_id"], "localDate": "2025-04-02", "startTime": "10:00"})
    moved = await studio.row("class_instances", week2["_id"])
    assert (moved["local_date"], iso(moved["starts_at"]), moved["occurrence_key"]) == (
        "2025-04-02", "2025-04-02T09:00:00Z", f"{template}|2025-03-31|18:00")
    await edit(studio, template, durationMinutes=75)
    await studio.extend()
    dates = [r["local_date"] for r in await studio.rows(template)]
    assert "2025-03-31" not in dates and dates.count("2025-04-02") == 1


async def test_t9_a_cancelled_class_stays_cancelled_through_edits(studio: Studio) -> None:
    studio.clock.set(at("2025-12-01T12:00:00Z"))
    template = await studio.template("soho", "2025-12-03", "18:00", "FREQ=WEEKLY;BYDAY=WE")
    new_year = by_date(await studio.rows(template))["2025-12-31"]
    assert await studio.mutation("classes:cancel_instance", {"instanceId": new_year["_id"], "reason": "New Year"})
    await edit(studio, template, startTime="19:00")  # all future classes
    split = await edit(studio, template, fromDate="2025-12-17", capacity=8)  # this and following
    with pytest.raises(AppError) as ended:
        await edit(studio, template, fromDate="2025-12-24", name="Late flow")
    assert ended.value.data == {"code": "invalid_argument", "field": "fromDate", "endsAfter": "2025-12-16"}
    result = await edit(studio, split["templateId"], fromDate="2025-12-24", name="Late flow")
    await studio.extend()
    on_31st = [r for r in await studio.rows() if r["local_date"] == "2025-12-31"]
    assert len(on_31st) == 1
    [row] = on_31st
    assert (row["_id"], row["status"], row["cancel_reason"]) == (new_year["_id"], "cancelled", "New Year")
    assert row["template_id"] == result["templateId"] not in (template, split["templateId"])
    assert (row["local_time"], row["name"]) == ("18:00", "Flow")  # a cancelled class keeps what was cancelled
    assert {r["local_time"] for r in await studio.rows() if r["status"] == "scheduled"} == {"19:00"}


async def test_t10_a_series_with_bookings_is_ended_never_deleted(studio: Studio) -> None:
    template = await weekly(studio)
    rows = await studio.rows(template)
    await studio.book("bea", rows[5]["_id"], credits=3)
    assert await studio.credits("bea") == 2
    with pytest.raises(AppError) as refused:
        await studio.mutation("classes:remove_template", {"templateId": template})
    assert refused.value.data == {"code": "template_has_bookings", "instanceIds": [rows[5]["_id"]]}
    cancelled = await studio.mutation("classes:end_template", {"templateId": template, "afterDate": "2025-04-14"})
    assert cancelled == 4
    after = await studio.rows(template)
    assert len(after) == 8 and not any(r["deleted"] for r in after)
    assert [r["status"] for r in after] == ["scheduled"] * 4 + ["cancelled"] * 4
    assert {r["cancel_reason"] for r in after[4:]} == {"series ended"}
    assert (await studio.row("class_templates", template))["status"] == "ended"
    assert await studio.credits("bea") == 3  # refunded in full, no penalty (C7)
    assert [o["recipient_id"] for o in await studio.outbox("class_cancelled")] == [studio.members["bea"]]
    studio.clock.advance(days=30)
    assert (await studio.extend())["created"] == 0


async def test_t10_an_unbooked_series_is_soft_deleted(studio: Studio) -> None:
    template = await weekly(studio)
    await studio.mutation("classes:remove_template", {"templateId": template})
    assert (await studio.row("class_templates", template))["deleted"] is True
    assert await studio.rows(template) == []
    assert len(await studio.rows(template, include_deleted=True)) == 8


async def test_regeneration_never_moves_a_booked_class(studio: Studio) -> None:
    template = await weekly(studio)
    booked = (await studio.rows(template))[3]
    await studio.simulate_booking(booked["_id"])
    frozen = await studio.row("class_instances", booked["_id"])
    closure = await studio.mutation("classes:add_closure", {"businessId": studio.business_id, "fromDate": "2025-04-28",
                                                            "toDate": "2025-04-28", "reason": "Floor repair"})
    await studio.mutation("classes:remove_closure", {"closureId": closure["closureId"]})
    await studio.extend()
    studio.clock.advance(days=3)
    await studio.extend()
    assert await studio.row("class_instances", booked["_id"]) == frozen


async def test_days_leaving_the_series_keep_booked_classes_and_drop_the_rest(studio: Studio) -> None:
    template = await weekly(studio)
    rows = await studio.rows(template)
    await studio.simulate_booking(rows[4]["_id"])
    result = await edit(studio, template, fromDate="2025-04-14", rrule="FREQ=WEEKLY;BYDAY=TU")
    assert (result["removed"], result["keptBooked"]) == (4, [rows[4]["_id"]])
    dates = [r["local_date"] for r in await studio.rows()]
    assert dates == [*MONDAYS[:3], "2025-04-15", "2025-04-21", "2025-04-22", "2025-04-29", "2025-05-06", "2025-05-13"]
    assert (await studio.row("class_instances", rows[3]["_id"]))["deleted"] is True
    assert (await studio.row("class_instances", rows[4]["_id"]))["local_date"] == "2025-04-21"


async def test_capacity_below_bookings_is_refused_and_nothing_changes(studio: Studio) -> None:
    template = await weekly(studio, capacity=10)
    rows = await studio.rows(template)
    await studio.simulate_booking(rows[6]["_id"], 9)
    with pytest.raises(AppError) as refused:
        await edit(studio, template, capacity=8, name="Small flow")
    assert refused.value.data == {"code": "capacity_below_booked", "instanceIds": [rows[6]["_id"]]}
    assert {r["name"] for r in await studio.rows(template)} == {"Flow"}
    with pytest.raises(AppError) as one:
        await studio.mutation("classes:update_instance", {"instanceId": rows[6]["_id"], "capacity": 8})
    assert one.value.data["code"] == "capacity_below_booked"


async def test_edit_dates_must_be_today_or_later(studio: Studio) -> None:
    template = await weekly(studio)
    with pytest.raises(AppError) as past:
        await edit(studio, template, fromDate="2025-03-19", name="x")
    assert past.value.data == {"code": "invalid_argument", "field": "fromDate", "today": "2025-03-20"}


async def test_update_instance_rules(studio: Studio) -> None:
    studio.clock.set(at("2025-03-01T12:00:00Z"))
    await studio.venue("nyc", "America/New_York")
    template = await studio.template("nyc", "2025-03-03", "09:00", "FREQ=DAILY;COUNT=10")
    rows = by_date(await studio.rows(template))
    with pytest.raises(AppError) as gap:
        await studio.mutation("classes:update_instance", {"instanceId": rows["2025-03-09"]["_id"], "startTime": "02:30"})
    assert gap.value.data == {"code": "invalid_argument", "field": "startTime", "timezone": "America/New_York"}
    await studio.mutation("classes:add_closure", {"businessId": studio.business_id, "venueId": studio.venues["nyc"],
                                                  "fromDate": "2025-03-12", "toDate": "2025-03-12", "reason": "Storm"})
    with pytest.raises(AppError) as closed:
        await studio.mutation("classes:update_instance", {"instanceId": rows["2025-03-11"]["_id"], "localDate": "2025-03-12"})
    assert closed.value.data == {"code": "date_closed", "localDate": "2025-03-12"}
    await studio.mutation("classes:cancel_instance", {"instanceId": rows["2025-03-05"]["_id"], "reason": "Sick"})
    with pytest.raises(AppError) as cancelled:
        await studio.mutation("classes:update_instance", {"instanceId": rows["2025-03-05"]["_id"], "name": "x"})
    assert cancelled.value.data["code"] == "instance_cancelled"
    studio.clock.set(at("2025-03-04T14:30:00Z"))
    with pytest.raises(AppError) as started:
        await studio.mutation("classes:update_instance", {"instanceId": rows["2025-03-04"]["_id"], "name": "x"})
    assert started.value.data["code"] == "instance_started"
    await studio.mutation("classes:restore_instance", {"instanceId": rows["2025-03-05"]["_id"]})
    restored = await studio.row("class_instances", rows["2025-03-05"]["_id"])
    assert (restored["status"], restored["cancel_reason"]) == ("scheduled", None)
    with pytest.raises(AppError) as still_closed:
        await studio.mutation("classes:restore_instance", {"instanceId": rows["2025-03-12"]["_id"]})
    assert still_closed.value.data["code"] == "date_closed"


async def test_moving_a_series_to_another_zone_keeps_its_local_time(studio: Studio) -> None:
    nyc = await studio.venue("nyc", "America/New_York")
    template = await weekly(studio)
    result = await edit(studio, template, fromDate="2025-04-14", venueId=nyc)
    moved = await studio.rows(result["templateId"])
    assert {(r["venue_id"], r["timezone"], r["local_time"]) for r in moved} == {(nyc, "America/New_York", "18:00")}
    assert iso(moved[0]["starts_at"]) == "2025-04-14T22:00:00Z"
    assert (await studio.row("class_templates", result["templateId"]))["timezone"] == "America/New_York"


async def test_an_edit_without_changes_does_nothing(studio: Studio) -> None:
    template = await weekly(studio)
    before = await studio.rows()
    result = await edit(studio, template, fromDate="2025-04-14")
    assert result == {"templateId": template, "split": False, "updated": 0, "created": 0, "removed": 0, "keptBooked": [],
                      "promotedBookingIds": []}
    assert await studio.rows() == before
