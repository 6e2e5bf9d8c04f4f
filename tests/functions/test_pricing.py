"""Prices resolve in a fixed order (PR1): instance override > time-slot rule on venue-local weekday and time
(PR2) > the template's price > the business default; money is integer minor units plus a currency (PR5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError, Forbidden, NotFound
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, new_studio

START = at("2025-12-01T12:00:00Z")
PEAK = {"weekdays": ["MO"], "start": "18:00", "end": "20:00", "priceCents": 2500, "name": "Monday peak",
        "tags": ["peak"]}


@pytest.fixture(scope="module")
async def ptb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(ptb: TestBackend) -> Studio:
    assert isinstance(ptb.clock, ManualClock)
    ptb.clock.set(START)
    studio = await new_studio(ptb, "Europe/London", currency="GBP")
    await studio.settings(horizonDays=300, defaultPriceCents=1500)
    await studio.venue("soho")
    return studio


async def one_class(studio: Studio, day: str, at_time: str, venue: str = "soho", **extra: Any) -> str:
    template = await studio.template(venue, day, at_time, "FREQ=DAILY;COUNT=1", **extra)
    return str((await studio.rows(template))[0]["_id"])


async def quote(studio: Studio, instance: str, as_user: str = "owner", **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = await studio.query("pricing:quote", {"instanceId": instance, **extra}, as_user)
    return result


async def rules(studio: Studio, *items: dict[str, Any]) -> list[str]:
    ids: list[str] = await studio.mutation("pricing:set_rules", {"businessId": studio.business_id, "rules": list(items)})
    return ids


async def test_levels_in_order(studio: Studio) -> None:
    plain = await one_class(studio, "2026-01-05", "18:30")
    assert await quote(studio, plain) == {
        "amountCents": 1500, "currency": "GBP", "creditCost": 1, "source": "default", "ruleId": None,
        "creditSource": "default", "dropin": True}
    priced = await one_class(studio, "2026-01-05", "18:30", priceCents=2000, creditCost=2)
    template = (await studio.row("class_instances", priced))["template_id"]
    assert await quote(studio, priced) == {
        "amountCents": 2000, "currency": "GBP", "creditCost": 2, "source": "template", "ruleId": template,
        "creditSource": "template", "dropin": True}
    [peak] = await rules(studio, PEAK)  # sets a price only: the credit cost still comes from the template
    assert await quote(studio, priced) == {
        "amountCents": 2500, "currency": "GBP", "creditCost": 2, "source": "time_slot", "ruleId": peak,
        "creditSource": "template", "dropin": True}
    [peak] = await rules(studio, {**PEAK, "creditCost": 3})
    assert await quote(studio, priced) == {
        "amountCents": 2500, "currency": "GBP", "creditCost": 3, "source": "time_slot", "ruleId": peak,
        "creditSource": "time_slot", "dropin": True}
    await studio.mutation("classes:update_instance", {"instanceId": priced, "priceCents": 999})
    assert await quote(studio, priced) == {
        "amountCents": 999, "currency": "GBP", "creditCost": 3, "source": "instance", "ruleId": priced,
        "creditSource": "time_slot", "dropin": True}
    await studio.mutation("classes:update_instance", {"instanceId": priced, "creditCost": 4})
    assert await quote(studio, priced) == {
        "amountCents": 999, "currency": "GBP", "creditCost": 4, "source": "instance", "ruleId": priced,
        "creditSource": "instance", "dropin": True}


async def test_default_credit_cost_applies_to_unpriced_classes(studio: Studio) -> None:
    await studio.settings(defaultCreditCost=2)
    plain = await one_class(studio, "2026-01-06", "09:00")
    assert (await quote(studio, plain))["creditCost"] == 2  # the default is read when quoting, not copied (B7)
    await studio.settings(defaultCreditCost=3)
    assert ((await quote(studio, plain))["creditCost"], (await quote(studio, plain))["creditSource"]) == (3, "default")
    priced = await one_class(studio, "2026-01-06", "10:00", priceCents=1200)
    assert ((await quote(studio, priced))["creditCost"], (await quote(studio, priced))["creditSource"]) == (1, "template")


async def test_a_malformed_stored_rule_is_skipped_not_fatal(studio: Studio, ptb: TestBackend) -> None:
    instance = await one_class(studio, "2026-01-05", "18:30")
    [peak] = await rules(studio, PEAK)
    await ptb.sql("UPDATE pricing_rules SET rule = rule - 'weekdays' WHERE _id = $1", peak)
    assert (await quote(studio, instance))["source"] == "default"


async def test_pr2_peak_matches_local_monday_evening_in_winter_and_summer(studio: Studio) -> None:
    [peak] = await rules(studio, PEAK)
    january = await one_class(studio, "2026-01-05", "18:30")
    july = await one_class(studio, "2026-07-06", "18:30")
    edge = await one_class(studio, "2026-07-06", "20:00")
    tuesday = await one_class(studio, "2026-07-07", "18:30")
    assert [(await quote(studio, i))["source"] for i in (january, july, edge, tuesday)] == [
        "time_slot", "time_slot", "default", "default"]
    assert [(await studio.row("class_instances", i))["starts_at"].hour for i in (january, july)] == [18, 17]
    schedule = await studio.schedule("2026-07-06T00:00:00Z", "2026-07-07T00:00:00Z")
    assert [(s["localTime"], s["priceCents"], s["priceSource"]) for s in schedule] == [
        ("18:30", 2500, "time_slot"), ("20:00", 1500, "default")]
    assert (await studio.query("pricing:list_rules", {"businessId": studio.business_id}))[0]["_id"] == peak


async def test_venue_rules_apply_only_at_their_venue(studio: Studio) -> None:
    await studio.venue("nyc", "America/New_York")
    await rules(studio, {**PEAK, "venueId": studio.venues["nyc"], "priceCents": 4000},
                {**PEAK, "priority": 1, "start": "18:00", "end": "19:00", "priceCents": 3000})
    london = await one_class(studio, "2026-01-05", "18:30")
    ny = await one_class(studio, "2026-01-05", "18:30", venue="nyc")
    ny_late = await one_class(studio, "2026-01-05", "19:30", venue="nyc")
    assert [(await quote(studio, i))["amountCents"] for i in (london, ny, ny_late)] == [3000, 3000, 4000]


async def test_replacing_rules_keeps_the_old_ones_readable(studio: Studio) -> None:
    [first] = await rules(studio, PEAK)
    [second] = await rules(studio, {**PEAK, "priceCents": 2600})
    assert (await studio.row("pricing_rules", first))["deleted"] is True
    assert [r["_id"] for r in await studio.query("pricing:list_rules", {"businessId": studio.business_id})] == [second]
    assert await rules(studio) == []


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([PEAK, {**PEAK, "start": "19:00", "end": "21:00"}], "rules"),
        ([{**PEAK, "weekdays": ["MON"]}], "rules[0].weekdays"),
        ([{**PEAK, "start": "20:00", "end": "18:00"}], "rules[0]"),
        ([{**PEAK, "priceCents": -1}], "rules[0].priceCents"),
        ([{**PEAK, "creditCost": 0}], "rules[0].creditCost"),
    ],
)
async def test_rules_are_validated(studio: Studio, items: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(AppError) as error:
        await rules(studio, *items)
    assert (error.value.data["code"], error.value.data["field"]) == ("invalid_argument", field)


async def test_access(studio: Studio, ptb: TestBackend) -> None:
    instance = await one_class(studio, "2026-01-05", "18:30")
    carl = await studio.member("carl")
    assert (await quote(studio, instance, "carl", memberId=carl))["amountCents"] == 1500
    with pytest.raises(Forbidden):
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id, "rules": []}, "carl")
    other = await new_studio(ptb)
    with pytest.raises(NotFound):
        await quote(studio, instance, memberId=other.members["owner"])
    with pytest.raises(NotFound):
        await rules(studio, {**PEAK, "venueId": await other.venue("elsewhere")})
    await studio.mutation("classes:cancel_instance", {"instanceId": instance, "reason": "Sick"})
    with pytest.raises(AppError) as cancelled:
        await quote(studio, instance)
    assert cancelled.value.data == {"code": "instance_cancelled", "instanceId": instance}
