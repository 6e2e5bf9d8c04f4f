"""Tenant isolation and roles on every schedule function (M1): another business's ids are NotFound, writes
need staff, and reading needs a membership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import Forbidden, NotFound, Unauthenticated
from backend.testing import ManualClock, TestBackend
from tests.support.studio import Studio, at, new_studio

START = at("2025-03-20T12:00:00Z")


@pytest.fixture(scope="module")
async def atb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(START), run_scheduler=False, serve=False) as harness:
        yield harness


@pytest.fixture(scope="module")
async def ids(atb: TestBackend) -> dict[str, Any]:
    """Business A with one of everything, a customer of A, and the owner of business B."""
    a = await new_studio(atb, "Europe/London")
    venue = await a.venue("soho")
    template = await a.template("soho", "2025-03-24", "09:00", "FREQ=WEEKLY;COUNT=4")
    instance = (await a.rows(template))[0]["_id"]
    closure = await a.mutation("classes:add_closure", {"businessId": a.business_id, "fromDate": "2025-12-25",
                                                       "toDate": "2025-12-25", "reason": "Christmas"})
    member = await a.member("carl")
    b = await new_studio(atb, "Europe/London")
    return {"a": a, "b": b, "business": a.business_id, "venue": venue, "template": template, "instance": instance,
            "closure": closure["closureId"], "member": member}


def calls(x: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(kind, path, args, staff only) for every schedule function that takes an id of business A."""
    return [
        ("query", "businesses:get", {"businessId": x["business"]}, False),
        ("mutation", "businesses:update_settings", {"businessId": x["business"], "waitlistLimit": 4}, True),
        ("mutation", "members:add", {"businessId": x["business"], "subject": "zed", "role": "customer"}, True),
        ("mutation", "members:set_role", {"memberId": x["member"], "role": "customer"}, True),
        ("mutation", "members:remove", {"memberId": x["member"]}, True),
        ("query", "venues:list", {"businessId": x["business"]}, False),
        ("mutation", "venues:create", {"businessId": x["business"], "name": "New"}, True),
        ("mutation", "venues:update", {"venueId": x["venue"], "name": "Renamed"}, True),
        ("mutation", "venues:remove", {"venueId": x["venue"]}, True),
        ("mutation", "classes:create_template", {
            "businessId": x["business"], "venueId": x["venue"], "name": "x", "startDate": "2025-04-01",
            "startTime": "10:00", "durationMinutes": 60, "rrule": "FREQ=DAILY;COUNT=1", "capacity": 5}, True),
        ("mutation", "classes:update_template", {"templateId": x["template"], "name": "y"}, True),
        ("mutation", "classes:end_template", {"templateId": x["template"], "afterDate": "2025-04-01"}, True),
        ("mutation", "classes:remove_template", {"templateId": x["template"]}, True),
        ("query", "classes:list_templates", {"businessId": x["business"]}, False),
        ("query", "classes:list_instances", {"businessId": x["business"], "from": "2025-03-20T00:00:00Z",
                                             "to": "2025-04-20T00:00:00Z"}, False),
        ("mutation", "classes:cancel_instance", {"instanceId": x["instance"], "reason": "x"}, True),
        ("mutation", "classes:restore_instance", {"instanceId": x["instance"]}, True),
        ("mutation", "classes:update_instance", {"instanceId": x["instance"], "name": "z"}, True),
        ("mutation", "classes:add_closure", {"businessId": x["business"], "fromDate": "2025-12-26",
                                             "toDate": "2025-12-26", "reason": "x"}, True),
        ("mutation", "classes:remove_closure", {"closureId": x["closure"]}, True),
        ("query", "classes:list_closures", {"businessId": x["business"], "fromDate": "2025-01-01"}, False),
        ("mutation", "pricing:set_rules", {"businessId": x["business"], "rules": []}, True),
        ("query", "pricing:list_rules", {"businessId": x["business"]}, False),
        ("query", "pricing:quote", {"instanceId": x["instance"]}, False),
    ]


async def snapshot(atb: TestBackend, business_id: str) -> list[Any]:
    rows = await atb.sql(
        "SELECT table_name, document_id, operation FROM audit_log WHERE business_id = $1 ORDER BY _id", business_id)
    return [tuple(r) for r in rows]


async def test_another_business_sees_nothing(atb: TestBackend, ids: dict[str, Any]) -> None:
    before = await snapshot(atb, ids["business"])
    for kind, path, args, _ in calls(ids):
        with pytest.raises(NotFound):
            await ids["b"].call(kind, path, args)
    assert await snapshot(atb, ids["business"]) == before


async def test_a_secondary_id_from_another_business_is_not_found(atb: TestBackend, ids: dict[str, Any]) -> None:
    b: Studio = ids["b"]
    foreign_venue = await b.venue("elsewhere")
    with pytest.raises(NotFound):
        await ids["a"].mutation("classes:create_template", {
            "businessId": ids["business"], "venueId": foreign_venue, "name": "x", "startDate": "2025-04-01",
            "startTime": "10:00", "durationMinutes": 60, "rrule": "FREQ=DAILY;COUNT=1", "capacity": 5})
    with pytest.raises(NotFound):
        await ids["a"].query("classes:list_instances", {"businessId": ids["business"], "venueId": foreign_venue,
                                                        "from": "2025-03-20T00:00:00Z", "to": "2025-04-20T00:00:00Z"})


async def test_customers_read_but_never_write(atb: TestBackend, ids: dict[str, Any]) -> None:
    before = await snapshot(atb, ids["business"])
    for kind, path, args, staff_only in calls(ids):
        if staff_only:
            with pytest.raises(Forbidden):
                await ids["a"].call(kind, path, args, as_user="carl")
        else:
            await ids["a"].call(kind, path, args, as_user="carl")
    assert await snapshot(atb, ids["business"]) == before


async def test_anonymous_callers_must_sign_in(atb: TestBackend, ids: dict[str, Any]) -> None:
    for kind, path, args, _ in calls(ids):
        with pytest.raises(Unauthenticated):
            await getattr(atb, kind)(path, args)


async def test_list_instances_against_an_empty_week_is_empty_and_reads_nothing_else(ids: dict[str, Any]) -> None:
    assert await ids["a"].schedule("2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z") == []
    assert await ids["b"].schedule("2025-03-20T00:00:00Z", "2025-04-20T00:00:00Z") == []
