"""Closures are venue-local dates (T6): closing cancels and refunds, generation skips closed dates, and
lifting a closure never brings a cancelled class back by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, new_studio

START = at("2025-12-01T12:00:00Z")


@pytest.fixture(scope="module")
async def ctb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(ctb: TestBackend) -> Studio:
    assert isinstance(ctb.clock, ManualClock)
    ctb.clock.set(START)
    return await new_studio(ctb, "Europe/London")


async def close(studio: Studio, first: str, last: str, reason: str, venue: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"businessId": studio.business_id, "fromDate": first, "toDate": last, "reason": reason}
    if venue is not None:
        args["venueId"] = studio.venues[venue]
    result: dict[str, Any] = await studio.mutation("classes:add_closure", args)
    return result


def on(rows: list[dict[str, Any]], day: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["local_date"] == day]


async def test_t6_christmas_closure_cancels_refunds_and_is_never_regenerated(studio: Studio) -> None:
    await studio.venue("soho")
    template = await studio.template("soho", "2025-12-01", "09:00", "FREQ=DAILY")
    [christmas] = on(await studio.rows(template), "2025-12-25")
    await studio.book("bea", christmas["_id"], credits=2)
    assert await studio.credits("bea") == 1
    result = await close(studio, "2025-12-25", "2025-12-26", "Christmas")
    assert result["cancelled"] == 2
    rows = await studio.rows(template)
    assert [(r["status"], r["cancel_reason"]) for r in on(rows, "2025-12-25") + on(rows, "2025-12-26")] == [
        ("cancelled", "closed: Christmas")] * 2
    assert await studio.credits("bea") == 2
    booking = (await studio.tb.sql("SELECT status FROM bookings WHERE instance_id = $1", christmas["_id"]))[0]
    assert booking["status"] == "cancelled_by_studio"
    await studio.internal("classes:extend_horizons", {"businessId": studio.business_id})
    await studio.mutation("classes:update_template", {"templateId": template, "startTime": "09:30"})
    assert len(on(await studio.rows(template), "2025-12-25")) == 1
    await studio.mutation("classes:remove_closure", {"closureId": result["closureId"]})
    await studio.extend()
    [still] = on(await studio.rows(template), "2025-12-25")
    assert (still["_id"], still["status"]) == (christmas["_id"], "cancelled")
    schedule = await studio.schedule("2025-12-25T00:00:00Z", "2025-12-26T00:00:00Z")
    assert [(s["_id"], s["status"], s["cancelReason"]) for s in schedule] == [
        (christmas["_id"], "cancelled", "closed: Christmas")]


async def test_dates_closed_before_generation_are_filled_once_reopened(studio: Studio) -> None:
    await studio.venue("soho")
    closure = await close(studio, "2026-01-20", "2026-01-21", "Refit")
    assert closure["cancelled"] == 0
    template = await studio.template("soho", "2025-12-01", "09:00", "FREQ=DAILY")
    rows = await studio.rows(template)
    assert on(rows, "2026-01-20") == on(rows, "2026-01-21") == [] and len(on(rows, "2026-01-22")) == 1
    created = await studio.mutation("classes:remove_closure", {"closureId": closure["closureId"]})
    assert created == 2
    rows = await studio.rows(template)
    assert [r["status"] for r in on(rows, "2026-01-20") + on(rows, "2026-01-21")] == ["scheduled"] * 2
    assert (await studio.row("closures", closure["closureId"]))["deleted"] is True


async def test_closure_is_keyed_by_local_date_not_utc(studio: Studio) -> None:
    await studio.venue("bondi", "Australia/Sydney")
    await studio.venue("soho")
    sydney = await studio.template("bondi", "2025-12-20", "08:00", "FREQ=DAILY;COUNT=10")  # 21:00Z the day before
    london = await studio.template("soho", "2025-12-20", "23:30", "FREQ=DAILY;COUNT=10")
    result = await close(studio, "2025-12-25", "2025-12-25", "Christmas", venue="bondi")
    assert result["cancelled"] == 1
    cancelled = [(r["local_date"], r["timezone"]) for r in await studio.rows() if r["status"] == "cancelled"]
    assert cancelled == [("2025-12-25", "Australia/Sydney")]
    assert all(r["status"] == "scheduled" for r in await studio.rows(london))
    assert [r["starts_at"].isoformat() for r in on(await studio.rows(sydney), "2025-12-25")] == ["2025-12-24T21:00:00+00:00"]


async def test_business_wide_closure_covers_every_venue(studio: Studio) -> None:
    await studio.venue("soho")
    await studio.venue("nyc", "America/New_York")
    await studio.template("soho", "2025-12-30", "10:00", "FREQ=DAILY;COUNT=3")
    await studio.template("nyc", "2025-12-30", "10:00", "FREQ=DAILY;COUNT=3")
    result = await close(studio, "2026-01-01", "2026-01-01", "New Year")
    assert result["cancelled"] == 2
    closures = await studio.query("classes:list_closures", {"businessId": studio.business_id, "fromDate": "2025-12-01"})
    assert [(c["fromDate"], c["venueId"], c["reason"]) for c in closures] == [("2026-01-01", None, "New Year")]


async def test_closure_input_is_checked(studio: Studio) -> None:
    with pytest.raises(AppError) as backwards:
        await close(studio, "2025-12-26", "2025-12-25", "x")
    assert backwards.value.data["field"] == "toDate"
    with pytest.raises(AppError) as silent:
        await close(studio, "2025-12-25", "2025-12-25", " ")
    assert silent.value.data["field"] == "reason"
    with pytest.raises(AppError) as long:
        await close(studio, "2025-01-01", "2026-01-02", "sabbatical")
    assert long.value.data == {"code": "invalid_argument", "field": "toDate", "max": 366}
