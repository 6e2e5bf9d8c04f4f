"""Businesses, their settings, members and venues: validation, roles and soft deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend import AppError, Forbidden, Unauthenticated
from backend.errors import InvalidArgs
from backend.testing import ManualClock, TestBackend
from functions._shared.settings import DEFAULTS
from tests.support.studio import Studio, at, new_studio

START = at("2025-03-20T12:00:00Z")


@pytest.fixture(scope="module")
async def btb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture
async def studio(btb: TestBackend) -> Studio:
    return await new_studio(btb, "Europe/London")


async def test_create_makes_the_caller_an_active_owner(studio: Studio, btb: TestBackend) -> None:
    [member] = await btb.sql("SELECT role, status FROM members WHERE business_id = $1", studio.business_id)
    assert (member["role"], member["status"]) == ("owner", "active")
    business = await studio.query("businesses:get", {"businessId": studio.business_id})
    assert (business["timezone"], business["currency"], business["settings"]) == ("Europe/London", "GBP", DEFAULTS)
    with pytest.raises(AppError) as bad:
        await btb.mutation("businesses:create", {"name": "X", "timezone": "UTC", "currency": "pounds"}, as_user="x")
    assert bad.value.data == {"code": "invalid_argument", "field": "currency"}


async def test_update_settings_changes_one_policy_each(studio: Studio) -> None:
    settings = await studio.settings(lateCancelMinutes=240, waitlistLimit=5)
    assert (settings["lateCancelMinutes"], settings["waitlistLimit"], settings["horizonDays"]) == (240, 5, 56)
    settings = await studio.settings(noShowGraceMinutes=10, gapPolicy="shift", bookingClosesMinutesBefore=-15)
    assert (settings["lateCancelMinutes"], settings["noShowGraceMinutes"], settings["gapPolicy"]) == (240, 10, "shift")
    assert settings["bookingClosesMinutesBefore"] == -15
    stored = await studio.row("businesses", studio.business_id)
    assert stored["settings"] == {"lateCancelMinutes": 240, "waitlistLimit": 5, "noShowGraceMinutes": 10,
                                  "gapPolicy": "shift", "bookingClosesMinutesBefore": -15}
    audit = await studio.tb.sql("SELECT before, after FROM audit_log WHERE document_id = $1 AND operation = 'update' "
                                "ORDER BY _creation_time", studio.business_id)
    assert audit[0]["after"]["settings"]["lateCancelMinutes"] == 240


@pytest.mark.parametrize(
    ("field", "value", "bounds"),
    [
        ("lateCancelMinutes", -1, (0, 10_080)),
        ("horizonDays", 800, (7, 730)),
        ("bookingOpensDaysBefore", 366, (0, 365)),
        ("waitlistLimit", 1001, (0, 1000)),
        ("autoPromoteCutoffMinutes", 99_999, (0, 20_160)),
    ],
)
async def test_out_of_range_settings_name_field_and_bounds(studio: Studio, field: str, value: int, bounds: tuple[int, int]) -> None:
    with pytest.raises(AppError) as error:
        await studio.settings(**{field: value})
    assert error.value.data == {"code": "invalid_argument", "field": field, "min": bounds[0], "max": bounds[1]}


async def test_settings_need_staff_and_a_known_gap_policy(studio: Studio) -> None:
    await studio.member("ada", "admin")
    await studio.member("ivy", "instructor")
    await studio.member("carl")
    assert (await studio.mutation("businesses:update_settings",
                                  {"businessId": studio.business_id, "waitlistLimit": 3}, "ada"))["waitlistLimit"] == 3
    for name in ("ivy", "carl"):
        with pytest.raises(Forbidden):
            await studio.mutation("businesses:update_settings", {"businessId": studio.business_id, "waitlistLimit": 3}, name)
    with pytest.raises(InvalidArgs):
        await studio.settings(gapPolicy="later")


async def test_members_add_join_and_list(studio: Studio, btb: TestBackend) -> None:
    ada = await studio.member("ada", "admin")
    assert await studio.member("ada", "admin") == ada  # adding again in the same role is harmless
    with pytest.raises(AppError) as other_role:
        await studio.member("ada", "instructor")
    assert other_role.value.data == {"code": "already_member", "memberId": ada, "role": "admin"}
    with pytest.raises(AppError) as not_owner:
        await studio.mutation("members:add", {"businessId": studio.business_id, "subject": "x", "role": "admin"}, "ada")
    assert not_owner.value.data["code"] == "owner_required"
    await studio.mutation("members:add", {"businessId": studio.business_id, "subject": studio.subject("ivy"),
                                          "role": "instructor"}, "ada")
    joiner = studio.subject("jo")
    first = await btb.mutation("members:join", {"businessId": studio.business_id}, as_user=joiner)
    assert await btb.mutation("members:join", {"businessId": studio.business_id}, as_user=joiner) == first
    with pytest.raises(Forbidden):
        await studio.mutation("members:add", {"businessId": studio.business_id, "subject": "y", "role": "customer"}, "jo")
    with pytest.raises(Unauthenticated):
        await btb.mutation("members:join", {"businessId": studio.business_id})
    page = await studio.query("members:list", {"businessId": studio.business_id, "paginationOpts": {"numItems": 2}}, "ivy")
    assert len(page["page"]) == 2 and page["isDone"] is False
    rest = await studio.query("members:list", {"businessId": studio.business_id,
                                               "paginationOpts": {"numItems": 10, "cursor": page["continueCursor"]}})
    assert sorted(m["role"] for m in page["page"] + rest["page"]) == ["admin", "customer", "instructor", "owner"]
    with pytest.raises(Forbidden):
        await studio.query("members:list", {"businessId": studio.business_id, "paginationOpts": {"numItems": 2}}, "jo")


async def test_roles_change_and_removal_keep_an_owner(studio: Studio) -> None:
    owner = studio.members["owner"]
    with pytest.raises(AppError) as last:
        await studio.mutation("members:set_role", {"memberId": owner, "role": "admin"})
    assert last.value.data["code"] == "last_owner"
    carl = await studio.member("carl")
    await studio.mutation("members:set_role", {"memberId": carl, "role": "instructor"})
    assert (await studio.row("members", carl))["role"] == "instructor"
    await studio.mutation("members:remove", {"memberId": carl})
    assert (await studio.row("members", carl))["deleted"] is True
    again = await studio.member("carl")  # the same person may come back (M3)
    assert again != carl


async def test_venues_default_zone_soft_delete_and_schedule_guard(studio: Studio) -> None:
    soho = await studio.venue("Soho")
    nyc = await studio.venue("Brooklyn", "America/New_York", capacity=20)
    venues = await studio.query("venues:list", {"businessId": studio.business_id})
    assert [(v["name"], v["timezone"], v["capacity"]) for v in venues] == [
        ("Brooklyn", "America/New_York", 20), ("Soho", "Europe/London", None)]
    with pytest.raises(AppError) as bad:
        await studio.mutation("venues:update", {"venueId": nyc, "capacity": 0})
    assert bad.value.data["field"] == "capacity"
    template = await studio.template("Soho", "2025-03-24", "09:00", "FREQ=WEEKLY")
    for path, args in (("venues:update", {"venueId": soho, "timezone": "Europe/Paris"}), ("venues:remove", {"venueId": soho})):
        with pytest.raises(AppError) as guarded:
            await studio.mutation(path, args)
        assert guarded.value.data == {"code": "venue_has_schedule", "venueId": soho}
    await studio.mutation("venues:update", {"venueId": soho, "name": "Soho Square", "capacity": 12})
    await studio.mutation("classes:end_template", {"templateId": template, "afterDate": "2025-03-19"})
    await studio.mutation("venues:remove", {"venueId": soho})
    assert [v["name"] for v in await studio.query("venues:list", {"businessId": studio.business_id})] == ["Brooklyn"]
    removed = await studio.row("venues", soho)
    assert (removed["deleted"], removed["name"], removed["capacity"]) == (True, "Soho Square", 12)
    await studio.member("carl")
    with pytest.raises(Forbidden):
        await studio.mutation("venues:create", {"businessId": studio.business_id, "name": "x"}, "carl")
