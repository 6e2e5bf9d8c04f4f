"""One price everywhere: what ``pricing:quote`` and the live schedule show is exactly what ``bookings:book``
charges, in credits and as a drop-in, for every level that can decide (PR1, F11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, new_studio

START = at("2025-12-01T12:00:00Z")  # a Monday; classes below are within the 14-day booking window
PEAK = {"weekdays": ["MO"], "start": "18:00", "end": "20:00", "priceCents": 2500}


@pytest.fixture(scope="module")
async def atb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(atb: TestBackend) -> Studio:
    assert isinstance(atb.clock, ManualClock)
    atb.clock.set(START)
    studio = await new_studio(atb, "Europe/London", currency="GBP")
    await studio.settings(defaultPriceCents=1500, defaultCreditCost=2)
    await studio.venue("soho")
    await studio.venue("nyc", "America/New_York")
    return studio


async def one_class(studio: Studio, day: str, time: str, venue: str = "soho", **extra: Any) -> str:
    template = await studio.template(venue, day, time, "FREQ=DAILY;COUNT=1", **extra)
    return str((await studio.rows(template))[0]["_id"])


async def charged(studio: Studio, instance: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The quote and schedule entry as a customer sees them, then what booking charges (credits, drop-in)."""
    for name in ("payer", "walkin"):
        if name not in studio.members:
            await studio.member(name)
    quote: dict[str, Any] = await studio.query("pricing:quote", {"instanceId": instance}, "payer")
    row = await studio.row("class_instances", instance)
    start = row["starts_at"].isoformat()
    [shown] = [i for i in await studio.query("classes:list_instances", {
        "businessId": studio.business_id, "from": start, "to": row["ends_at"].isoformat()}, "payer")
        if i["_id"] == instance]
    await studio.mutation("credits:grant", {"businessId": studio.business_id, "memberId": studio.members["payer"],
                                            "credits": 20, "expiresOn": "2026-12-31"})
    before = await studio.credits("payer")
    by_credits = await studio.mutation("bookings:book", {"instanceId": instance}, "payer")
    by_cash = await studio.mutation("bookings:book", {"instanceId": instance, "payWith": "dropin"}, "walkin")
    credits_row = await studio.row("bookings", by_credits["bookingId"])
    cash_row = await studio.row("bookings", by_cash["bookingId"])
    spent = before - await studio.credits("payer")
    booking = {"creditsSpent": credits_row["credits_spent"], "ledgerSpent": spent,
               "amountCents": cash_row["amount_cents"], "storedQuote": cash_row["quote"],
               "payWith": (credits_row["pay_with"], cash_row["pay_with"])}
    return quote, shown, booking


def assert_agree(quote: dict[str, Any], shown: dict[str, Any], booking: dict[str, Any]) -> None:
    assert (shown["priceCents"], shown["creditCost"]) == (quote["amountCents"], quote["creditCost"])
    assert (shown["priceSource"], shown["creditSource"]) == (quote["source"], quote["creditSource"])
    assert booking["payWith"] == ("credits", "dropin")
    assert booking["creditsSpent"] == booking["ledgerSpent"] == quote["creditCost"]
    assert booking["amountCents"] == quote["amountCents"]
    assert booking["storedQuote"] == quote  # the quote stored on the booking is the one shown (PR1)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("default", (1500, 2, "default", "default")),
        ("template", (2000, 3, "template", "template")),
        ("template_price_only", (1800, 1, "template", "template")),
        ("slot_price_only", (2500, 2, "time_slot", "default")),
        ("slot_over_template", (2500, 3, "time_slot", "template")),
        ("slot_with_credits", (2500, 4, "time_slot", "time_slot")),
        ("other_venue_slot", (1500, 2, "default", "default")),
        ("instance_price", (999, 3, "instance", "template")),
        ("instance_credits_unpriced", (1500, 5, "default", "instance")),
        ("instance_both_at_peak", (700, 1, "instance", "instance")),
    ],
)
async def test_quote_is_what_booking_charges(studio: Studio, setup: str, expected: tuple[int, int, str, str]) -> None:
    monday_peak, monday_morning = ("2025-12-08", "18:30"), ("2025-12-08", "10:00")
    if setup == "default":
        instance = await one_class(studio, *monday_morning)
    elif setup == "template":
        instance = await one_class(studio, *monday_morning, priceCents=2000, creditCost=3)
    elif setup == "template_price_only":
        instance = await one_class(studio, *monday_morning, priceCents=1800)
    elif setup == "slot_price_only":
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id, "rules": [PEAK]})
        instance = await one_class(studio, *monday_peak)
    elif setup == "slot_over_template":
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id, "rules": [PEAK]})
        instance = await one_class(studio, *monday_peak, priceCents=2000, creditCost=3)
    elif setup == "slot_with_credits":
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id,
                                                    "rules": [{**PEAK, "creditCost": 4}]})
        instance = await one_class(studio, *monday_peak, priceCents=2000, creditCost=3)
    elif setup == "other_venue_slot":
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id,
                                                    "rules": [{**PEAK, "venueId": studio.venues["nyc"]}]})
        instance = await one_class(studio, *monday_peak)
    elif setup == "instance_price":
        instance = await one_class(studio, *monday_morning, priceCents=2000, creditCost=3)
        await studio.mutation("classes:update_instance", {"instanceId": instance, "priceCents": 999})
    elif setup == "instance_credits_unpriced":
        instance = await one_class(studio, *monday_morning)
        await studio.mutation("classes:update_instance", {"instanceId": instance, "creditCost": 5})
    else:
        await studio.mutation("pricing:set_rules", {"businessId": studio.business_id,
                                                    "rules": [{**PEAK, "creditCost": 4}]})
        instance = await one_class(studio, *monday_peak)
        await studio.mutation("classes:update_instance", {"instanceId": instance, "priceCents": 700, "creditCost": 1})
    quote, shown, booking = await charged(studio, instance)
    assert (quote["amountCents"], quote["creditCost"], quote["source"], quote["creditSource"]) == expected
    assert_agree(quote, shown, booking)


async def test_a_waiting_member_pays_the_price_of_when_they_joined(studio: Studio) -> None:
    """A later price change never reprices a waitlist entry (PR1): promotion charges its stored quote."""
    instance = await one_class(studio, "2025-12-08", "10:00", priceCents=2000, creditCost=3, capacity=1)
    first = await studio.book("first", instance, credits=5)
    await studio.member("later")
    await studio.mutation("credits:grant", {"businessId": studio.business_id, "memberId": studio.members["later"],
                                            "credits": 10, "expiresOn": "2026-12-31"})
    quoted = await studio.query("pricing:quote", {"instanceId": instance}, "later")
    waiting = await studio.mutation("bookings:book", {"instanceId": instance}, "later")
    assert waiting["status"] == "waitlisted"
    await studio.mutation("classes:update_instance", {"instanceId": instance, "creditCost": 6})
    await studio.mutation("bookings:cancel", {"bookingId": first})
    promoted = await studio.row("bookings", waiting["bookingId"])
    assert (promoted["status"], promoted["credits_spent"]) == ("confirmed", quoted["creditCost"])
    assert promoted["quote"] == quoted
