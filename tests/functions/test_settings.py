"""Every policy is set through ``businesses:update_settings`` and read through one module by the schedule,
the prices and the booking rules alike: set it once, and every rule sees it (B7)."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import AppError
from backend.errors import InvalidArgs
from backend.testing import ManualClock, TestBackend
from backend.validators import camel
from functions import businesses
from functions._shared.settings import BOOLEANS, DEFAULTS, RANGES, SNAKE_NAMES
from tests.support.booking import UTC, World, new_world

NOW = dt.datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)

BOOKING_KEYS = {
    "preventOverlaps": False, "lateCancelFeeCents": 300, "noShowFeeCents": 800, "strikeLimit": 2,
    "strikeWindowDays": 14, "suspensionDays": 3, "promotionGraceMinutes": 60, "checkInOpensMinutesBefore": 30,
    "attendanceEditHours": 24, "defaultPriceCents": 1500, "defaultCreditCost": 2, "refillWaivesLateCancel": False,
    "expiredCreditGraceDays": 10,
}


@pytest.fixture(scope="module")
async def stb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def world(stb: TestBackend) -> World:
    assert isinstance(stb.clock, ManualClock)
    stb.clock.set(NOW)
    return await new_world(stb)


async def update(world: World, **values: Any) -> dict[str, Any]:
    result: dict[str, Any] = await world.tb.mutation(
        "businesses:update_settings", {"businessId": world.business_id, **values}, as_user=world.owner)
    return result


def test_every_setting_is_an_argument_of_update_settings() -> None:
    parameters = list(inspect.signature(businesses.update_settings.spec.fn).parameters)[2:]
    assert sorted(camel(p) for p in parameters) == sorted(DEFAULTS)
    assert set(SNAKE_NAMES) == set(parameters)


async def test_booking_policies_can_be_set_and_are_stored_sparsely(world: World, stb: TestBackend) -> None:
    settings = await update(world, **BOOKING_KEYS)
    assert {k: settings[k] for k in BOOKING_KEYS} == BOOKING_KEYS
    assert settings["lateCancelMinutes"] == DEFAULTS["lateCancelMinutes"]  # untouched keys keep the default
    [row] = await stb.sql("SELECT settings FROM businesses WHERE _id = $1", world.business_id)
    assert row["settings"] == BOOKING_KEYS
    got = await world.tb.query("businesses:get", {"businessId": world.business_id}, as_user=world.owner)
    assert {k: got["settings"][k] for k in BOOKING_KEYS} == BOOKING_KEYS
    assert (await update(world, strikeLimit=0))["strikeLimit"] == 0  # 0 switches strikes off


@pytest.mark.parametrize("key", sorted(RANGES))
async def test_out_of_range_values_name_the_argument(world: World, key: str) -> None:
    low, high = RANGES[key]
    with pytest.raises(AppError) as error:
        await update(world, **{key: high + 1})
    assert error.value.data == {"code": "invalid_argument", "field": key, "min": low, "max": high}
    assert error.value.message.startswith(f"$.args.{key}: must be an integer between {low} and {high}")
    with pytest.raises(AppError):
        await update(world, **{key: low - 1})


@pytest.mark.parametrize("key", sorted(BOOLEANS))
async def test_flags_must_be_booleans(world: World, key: str) -> None:
    with pytest.raises(InvalidArgs) as error:
        await update(world, **{key: "yes"})
    assert f"$.args.{key}" in str(error.value)


async def test_the_booking_rules_read_what_update_settings_wrote(world: World, stb: TestBackend) -> None:
    """One module, one set of defaults: fees, overlaps and strikes set through the public API take effect."""
    assert isinstance(stb.clock, ManualClock)
    await update(world, lateCancelFeeCents=300, preventOverlaps=False, strikeLimit=1, suspensionDays=2)
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    first = await world.instance(CLASS)
    overlapping = await world.instance(CLASS + dt.timedelta(minutes=30))
    booked = (await world.book("ann", first))["bookingId"]
    assert (await world.book("ann", overlapping))["status"] == "confirmed"  # overlaps allowed now (C5 off)
    stb.clock.set(CLASS - dt.timedelta(hours=1))
    result = await world.cancel("ann", booked)
    assert result["penalty"] == {"kind": "late_cancel", "forfeit": "credits", "credits": 1, "feeCents": 300}
    suspended = await stb.sql("SELECT suspended_until FROM members WHERE _id = $1", world.members["ann"])
    assert suspended[0]["suspended_until"] == stb.clock.now() + dt.timedelta(days=2)  # strike limit 1 (P5)


async def test_default_credit_cost_is_charged_by_booking(world: World) -> None:
    await update(world, defaultCreditCost=3)
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    instance = await world.instance(CLASS)
    booked = await world.book("ann", instance)
    assert (await world.booking_row(booked["bookingId"]))["credits_spent"] == 3


async def test_malformed_stored_values_fall_back_to_defaults(world: World, stb: TestBackend) -> None:
    await stb.sql("UPDATE businesses SET settings = $2 WHERE _id = $1", world.business_id,
                  {"waitlistLimit": "many", "lateCancelMinutes": -5, "preventOverlaps": 1, "unknown": 3})
    got = await world.tb.query("businesses:get", {"businessId": world.business_id}, as_user=world.owner)
    assert got["settings"] == DEFAULTS
