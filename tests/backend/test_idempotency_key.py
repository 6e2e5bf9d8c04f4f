"""``Idempotency-Key`` on HTTP mutations: a retried POST applies once and answers with the first result.

The key is stored with the result in the mutation's own transaction, bound to the caller's identity and the
function's path, so a retry after a timeout (or two copies racing) cannot double-apply, and a key cannot be
used to read another caller's result.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from backend.testing import TestBackend
from tests.support.booking import World, new_world


@pytest.fixture
async def world(tb: TestBackend) -> World:
    world = await new_world(tb)
    await world.member("ann")
    return world


async def post(tb: TestBackend, route: str, body: dict[str, Any], *, key: str | None = None,
               subject: str | None = None) -> httpx.Response:
    headers = {}
    if key is not None:
        headers["Idempotency-Key"] = key
    if subject is not None:
        headers["Authorization"] = f"Bearer {tb.token(subject)}"
    async with httpx.AsyncClient(base_url=tb.url, timeout=30) as client:
        return await client.post(route, json=body, headers=headers)


def grant_args(world: World) -> dict[str, Any]:
    return {"businessId": world.business_id, "memberId": world.members["ann"], "credits": 3, "expiresOn": "2099-12-31"}


async def lots(tb: TestBackend, world: World) -> int:
    rows = await tb.sql("SELECT count(*) AS n FROM credit_lots WHERE member_id = $1", world.members["ann"])
    return int(rows[0]["n"])


async def test_three_identical_grants_with_one_key_make_one_lot(tb: TestBackend, world: World) -> None:
    key = f"grant-{uuid.uuid4()}"
    body = {"path": "credits:grant", "args": grant_args(world)}
    answers = [await post(tb, "/api/mutation", body, key=key, subject=world.owner) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json()["status"] == "success"
    assert answers[1].json() == answers[0].json() == answers[2].json()
    assert await lots(tb, world) == 1
    # Without a key (or with another one) each call is its own request.
    await post(tb, "/api/mutation", body, subject=world.owner)
    await post(tb, "/api/mutation", body, key=f"other-{uuid.uuid4()}", subject=world.owner)
    assert await lots(tb, world) == 3


async def test_concurrent_copies_of_one_request_apply_once(tb: TestBackend, world: World) -> None:
    key = str(uuid.uuid4())
    body = {"path": "credits:grant", "args": grant_args(world)}
    answers = await asyncio.gather(*(post(tb, "/api/mutation", body, key=key, subject=world.owner) for _ in range(6)))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1
    assert await lots(tb, world) == 1


async def test_run_route_honours_the_key(tb: TestBackend, world: World) -> None:
    key = str(uuid.uuid4())
    body = {"args": grant_args(world)}
    first = await post(tb, "/api/run/credits/grant", body, key=key, subject=world.owner)
    again = await post(tb, "/api/run/credits/grant", body, key=key, subject=world.owner)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert await lots(tb, world) == 1


async def test_the_key_is_bound_to_identity_and_function(tb: TestBackend, world: World) -> None:
    key = str(uuid.uuid4())
    name = f"idem-{uuid.uuid4().hex[:8]}"
    first = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": name, "by": 7}},
                       key=key, subject="alice")
    assert first.json()["value"] == 7.0
    for subject in (None, "mallory"):
        other = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": name, "by": 7}},
                           key=key, subject=subject)
        assert other.status_code == 422, other.text
        assert other.json()["code"] == "RequestIdReused"
        assert "Idempotency-Key" in other.json()["message"]
    wrong_path = await post(tb, "/api/mutation", {"path": "counters:increment_two", "args": {"a": name, "b": name}},
                            key=key, subject="alice")
    assert wrong_path.status_code == 422 and "Idempotency-Key" in wrong_path.json()["message"]
    assert await tb.query("counters:get", {"name": name}) == 7


async def test_the_key_is_bound_to_the_arguments(tb: TestBackend) -> None:
    """One key cannot stand for two requests: reused with other arguments (another counter here, another
    business in the booking app) it is refused rather than answered with the first request's result."""
    key = str(uuid.uuid4())
    first, second = (f"idem-args-{i}-{uuid.uuid4().hex[:8]}" for i in range(2))
    done = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": first, "by": 2}},
                      key=key, subject="alice")
    assert done.json()["value"] == 2.0
    reordered = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"by": 2, "name": first}},
                           key=key, subject="alice")
    assert reordered.status_code == 200 and reordered.json()["value"] == 2.0  # the same request: a replay
    other = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": second, "by": 2}},
                       key=key, subject="alice")
    assert other.status_code == 422 and "arguments" in other.json()["message"], other.text
    assert await tb.query("counters:get", {"name": first}) == 2
    assert await tb.query("counters:get", {"name": second}) == 0


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there", "two words"])
async def test_malformed_keys_are_refused(tb: TestBackend, key: str) -> None:
    name = f"badkey-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=tb.url) as client:
        response = await client.post("/api/mutation", json={"path": "counters:increment", "args": {"name": name}},
                                     headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BadRequest"
    assert "Idempotency-Key" in response.json()["message"]
    assert await tb.query("counters:get", {"name": name}) == 0


async def test_a_key_on_an_action_is_refused(tb: TestBackend) -> None:
    response = await post(tb, "/api/action", {"path": "counters:add_later", "args": {"name": "x"}}, key="k1")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["message"]


async def test_a_failed_mutation_is_not_stored(tb: TestBackend) -> None:
    """Like the sync protocol's replays: only a committed result is kept; a retry of a failure runs again."""
    key = str(uuid.uuid4())
    name = f"fails-{uuid.uuid4().hex[:8]}"
    body = {"path": "counters:fail_after_write", "args": {"name": name}}
    for _ in range(2):
        response = await post(tb, "/api/mutation", body, key=key)
        assert response.json()["status"] == "error"
    rows = await tb.sql("SELECT count(*) AS n FROM _session_requests WHERE session_id LIKE 'http:%' "
                        "AND session_id = $1", f"http:{key}")
    assert rows[0]["n"] == 0
