"""Malformed input gets a 4xx naming the field and the rule, over HTTP and live; 5xx is for server faults only.

Each case here once made the server answer 500 (or 503, blaming the database) with a traceback in the log.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import uuid
from typing import Any

import httpx
import pytest

from backend import knobs
from backend.testing import TestBackend
from backend.values import ValueError_, check_depth, decode_value
from tests.support.booking import World, new_world
from tests.support.sync_client import RawClient


@pytest.fixture
async def world(tb: TestBackend) -> World:
    return await new_world(tb)


async def call(tb: TestBackend, kind: str, path: str, args: Any, subject: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tb.token(subject)}"} if subject else {}
    async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
        return await client.post(f"/api/{kind}", json={"path": path, "args": args}, headers=headers)


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


# Well-formed base64 JSON of the wrong shape, the wrong types in each position, and plain garbage.
FORGED_CURSORS = [
    "!!!", "a", b64({"a": 1}), b64([]), b64([None, None]), b64(["x", "y"]), b64([1, 2]), b64([{"t": "x"}, "id"]),
    b64([{"t": 1e300}, 1]), b64([{"d": "no"}, "x"]), b64([{"b": 5}, "x"]), b64([True, "x"]), b64([1.5, 2**70]),
    b64([1.0, "not-an-id"]), b64([1.0, "a\u0000"]), b64(nested(400)), base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]


def right_width(business: str) -> list[str]:
    """members' creation-time index is (businessId, _creationTime, _id): three parts, each of the wrong kind."""
    return [b64(parts) for parts in (
        [business, "x", "y"], [business, {"t": "x"}, "id"], [1, 1.0, "id"], [business, 1.0, 5], [None, 1.0, "id"],
        [business, 1.0, "a\u0000b"], [business, {"d": "2030-01-01"}, "id"], [business, [1], "id"],
        [business, 1.0, {"b": "eA=="}], [business, True, "id"],
    )]


@pytest.mark.parametrize("cursor", [*FORGED_CURSORS, *(f"width3:{i}" for i in range(10))])
async def test_forged_cursors_are_refused_over_http(tb: TestBackend, world: World, cursor: str) -> None:
    if cursor.startswith("width3:"):
        cursor = right_width(world.business_id)[int(cursor.removeprefix("width3:"))]
    args = {"businessId": world.business_id, "paginationOpts": {"numItems": 5, "cursor": cursor}}
    response = await call(tb, "query", "members:list", args, world.owner)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("$.args.paginationOpts.cursor: ")


async def test_a_real_cursor_still_pages(tb: TestBackend, world: World) -> None:
    for name in ("p1", "p2", "p3"):
        await world.member(name)
    seen: list[str] = []
    cursor = None
    while True:
        args = {"businessId": world.business_id, "paginationOpts": {"numItems": 2, "cursor": cursor}}
        page = (await call(tb, "query", "members:list", args, world.owner)).json()["value"]
        seen += [row["_id"] for row in page["page"]]
        cursor = page["continueCursor"]
        if page["isDone"]:
            break
    assert len(seen) == len(set(seen)) == 4


async def test_forged_cursors_fail_a_live_query_not_the_socket(tb: TestBackend, world: World) -> None:
    async with RawClient.open(tb.port) as client:
        await client.authenticate(tb.token(world.owner))
        bad = [("members:list", {"businessId": world.business_id, "paginationOpts": {"numItems": 5, "cursor": c}})
               for c in [*FORGED_CURSORS[:6], *right_width(world.business_id)[:4]]]
        ids = await client.subscribe(*bad, ("counters:get", {"name": f"n-{uuid.uuid4().hex[:8]}"}))
        for q in ids[:-1]:
            assert q in client.failures, client.results.get(q)
            assert "[BadArgs] $.args.paginationOpts.cursor: " in client.failures[q]["errorMessage"]
        assert client.results[ids[-1]] == 0


@pytest.mark.parametrize("depth", [knobs.MAX_VALUE_DEPTH + 1, 500, 5_000, 100_000])
async def test_deeply_nested_args_are_refused(tb: TestBackend, depth: int) -> None:
    body = '{"path": "counters:increment", "args": {"name": ' + "[" * depth + '"x"' + "]" * depth + "}}"
    async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
        response = await client.post("/api/mutation", content=body.encode())
    assert response.status_code == 400, response.text[:300]
    assert "nest" in response.json()["message"] and str(knobs.MAX_VALUE_DEPTH) in response.json()["message"]


async def test_nesting_up_to_the_limit_is_a_plain_type_error(tb: TestBackend) -> None:
    response = await call(tb, "mutation", "counters:increment", {"name": nested(knobs.MAX_VALUE_DEPTH - 2)})
    assert response.status_code == 400
    assert response.json()["message"].startswith("$.args.name: expected `str`")


def test_check_depth_names_the_path_and_limit() -> None:
    check_depth({"a": nested(10)}, 12)
    with pytest.raises(ValueError_) as refused:
        check_depth({"a": [{"b": nested(20)}]}, 12)
    assert refused.value.path.startswith("$.a[0].b[0]") and "12" in refused.value.rule
    with pytest.raises(ValueError_):
        decode_value(nested(knobs.MAX_VALUE_DEPTH + 1))


async def test_an_indexed_string_over_the_limit_names_table_and_field(tb: TestBackend) -> None:
    name = secrets.token_urlsafe(4000)  # random, so PostgreSQL cannot compress it under its index row limit
    response = await call(tb, "mutation", "counters:increment", {"name": name})
    assert response.status_code == 400, response.text[:300]
    message = response.json()["message"]
    assert message.startswith("counters.name: ") and str(knobs.MAX_INDEXED_STRING_BYTES) in message
    fits = secrets.token_urlsafe(knobs.MAX_INDEXED_STRING_BYTES)[: knobs.MAX_INDEXED_STRING_BYTES]
    assert (await call(tb, "mutation", "counters:increment", {"name": fits})).json()["value"] == 1.0


@pytest.mark.parametrize("zone", ["A" * 3000, "Europe/" + "x" * 300, "../../etc/passwd", "Europe/London\u0000",
                                  "Etc/GMT+99", " UTC", "utc/../UTC"])
async def test_bad_time_zones_name_the_field(tb: TestBackend, zone: str) -> None:
    response = await call(tb, "mutation", "businesses:create", {"name": "Zones", "timezone": zone}, "tz-owner")
    assert response.status_code == 400, response.text[:300]
    assert response.json()["message"].startswith("$.args.timezone: ")


async def test_nul_in_any_string_argument_is_refused_at_the_boundary(tb: TestBackend) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000, so it never gets as far as a query or a scheduled job."""
    response = await call(tb, "mutation", "testing_jobs:schedule", {"key": "a\u0000b"}, "nul-user")
    assert response.status_code == 400
    assert response.json()["message"].startswith("$.args.key: strings may not contain NUL")


@pytest.mark.parametrize(("field", "value"), [("expiresOn", "9999-12-31"), ("expiresOn", "0999-12-31"),
                                              ("expiresOn", "2030-01-01\n")])
async def test_dates_at_the_ends_of_the_calendar_are_refused(tb: TestBackend, world: World, field: str,
                                                             value: str) -> None:
    member = await world.member("dates")
    args = {"businessId": world.business_id, "memberId": member, "credits": 1, "expiresOn": "2099-01-01",
            field: value}
    response = await call(tb, "mutation", "credits:grant", args, world.owner)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["message"].startswith(f"$.args.{field}: ")


async def test_take_with_a_huge_count_reads_normally(tb: TestBackend) -> None:
    int64_max = base64.b64encode(struct.pack("<q", 2**63 - 1)).decode("ascii")
    args = {"lo": "a", "hi": "b", "limit": {"$integer": int64_max}}
    response = await call(tb, "query", "counters:range", args)
    assert response.status_code == 200, response.text[:300]
