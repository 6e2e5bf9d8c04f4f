"""Per-call limits: time limits on queries and mutations, the result-size cap, and each caller's fair share
of the connection pool. Real PostgreSQL, real HTTP and sockets; the limits are lowered per test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from backend import knobs
from backend.client import AsyncClient, ClientError
from backend.errors import FunctionTimeout, LimitExceeded
from backend.testing import TestBackend


def fresh(prefix: str = "lim") -> str:
    return f"{prefix}-{uuid.uuid4()}"


async def post(tb: TestBackend, route: str, body: Any, token: str | None = None, timeout: float = 30) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=tb.url, timeout=timeout) as client:
        return await client.post(route, content=json.dumps(body).encode(), headers=headers)


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def user_key(tb: TestBackend, subject: str) -> str:
    identity = tb.identity(subject)
    assert identity is not None
    return f"user:{identity.token_identifier}"


async def health(tb: TestBackend) -> int:
    async with httpx.AsyncClient(base_url=tb.url, timeout=30) as client:
        return (await client.get("/health")).status_code


# -- time limits ----------------------------------------------------------------------------------------------


async def test_a_query_past_its_time_limit_fails_with_function_timeout(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 0.3)
    name = fresh()
    outcome = await tb.runner.query("counters:get_slowly", {"name": name, "delayMs": 5000}, None)
    assert isinstance(outcome.error, FunctionTimeout)
    assert "BACKEND_QUERY_TIMEOUT_SECONDS" in outcome.error.message and "0.3 s" in outcome.error.message

    response = await post(tb, "/api/query", {"path": "counters:get_slowly", "args": {"name": name, "delayMs": 5000}})
    assert response.status_code == 504
    assert response.json()["code"] == "FunctionTimeout"
    # Within the limit it answers, and the server goes on.
    assert await tb.query("counters:get_slowly", {"name": name, "delayMs": 1}) == 0
    assert await health(tb) == 200


async def test_a_live_query_past_its_limit_fails_alone_and_its_neighbours_update(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub runs live queries in one shared snapshot: a query cancelled there must not take the others'
    results with it."""
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 0.3)
    slow, plain = fresh(), fresh()
    async with AsyncClient(tb.url) as client:
        watched = client.subscribe("counters:get", {"name": plain})
        await until(lambda: watched.value == 0)
        with pytest.raises(ClientError, match="FunctionTimeout"):
            await client.query("counters:get_slowly", {"name": slow, "delayMs": 5000})
        await tb.mutation("counters:increment", {"name": plain})
        await until(lambda: watched.value == 1)


async def test_a_mutation_stuck_in_postgresql_is_cancelled_and_rolled_back(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mutation waiting on a row lock is a statement stuck in PostgreSQL: the limit cancels it there too,
    the transaction rolls back and the connection goes back to the pool."""
    name = fresh()
    await tb.mutation("counters:increment", {"name": name})
    monkeypatch.setattr(knobs, "MUTATION_TIMEOUT_SECONDS", 0.5)
    free = tb.runner.gate.free
    blocker = await asyncpg.connect(tb.database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM counters WHERE name = $1 FOR UPDATE", name)
            outcome = await tb.runner.mutation("counters:increment", {"name": name, "by": 10}, None)
            assert isinstance(outcome.error, FunctionTimeout)
            assert "BACKEND_MUTATION_TIMEOUT_SECONDS" in outcome.error.message
            # Nothing waits on the lock any more: the server cancelled the statement.
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            assert waiting == 0
    finally:
        await blocker.close()
    assert tb.runner.gate.free == free
    assert await tb.query("counters:get", {"name": name}) == 1  # the timed-out increment left nothing


async def test_slow_calls_cannot_exhaust_the_pool(tb: TestBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 slow mutations at once: they hold at most the pool minus its reserve, /health stays 200, each
    fails at its limit and gives its connection back, and the next call runs."""
    monkeypatch.setattr(knobs, "MUTATION_TIMEOUT_SECONDS", 0.5)
    gate = tb.runner.gate
    slow = [asyncio.create_task(tb.runner.mutation("counters:increment_slowly", {"name": fresh(), "delayMs": 60_000},
                                                   None)) for _ in range(30)]
    try:
        await until(lambda: gate.free == 0)
        assert await health(tb) == 200
        outcomes = await asyncio.gather(*slow)
    finally:
        for task in slow:
            task.cancel()
    assert all(isinstance(o.error, FunctionTimeout) for o in outcomes)
    assert gate.free == gate.size
    assert await tb.mutation("counters:increment", {"name": fresh()}) == 1


async def test_an_action_has_its_own_longer_limit(tb: TestBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Actions hold no connection, so they get a limit of their own; what they committed before it stays."""
    assert knobs.ACTION_TIMEOUT_SECONDS > knobs.MUTATION_TIMEOUT_SECONDS
    monkeypatch.setattr(knobs, "ACTION_TIMEOUT_SECONDS", 0.3)
    name = fresh()
    outcome = await tb.runner.action("counters:add_later", {"name": name, "delayMs": 5000}, None)
    assert isinstance(outcome.error, FunctionTimeout)
    assert "BACKEND_ACTION_TIMEOUT_SECONDS" in outcome.error.message
    assert await tb.query("counters:get", {"name": name}) == 1  # its mutation had committed on its own


# -- result size ----------------------------------------------------------------------------------------------


async def test_a_result_over_the_size_cap_fails_that_call_naming_the_limit(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "MAX_RESULT_BYTES", 50_000)
    name = fresh()
    outcome = await tb.runner.query("counters:padded", {"name": name, "size": 100_000}, None)
    assert isinstance(outcome.error, LimitExceeded)
    assert "BACKEND_MAX_RESULT_BYTES" in outcome.error.message and "50,000" in outcome.error.message

    response = await post(tb, "/api/query", {"path": "counters:padded", "args": {"name": name, "size": 100_000}})
    assert response.status_code == 400
    assert response.json()["code"] == "LimitExceeded" and "BACKEND_MAX_RESULT_BYTES" in response.json()["message"]
    async with AsyncClient(tb.url) as client:
        with pytest.raises(ClientError, match="BACKEND_MAX_RESULT_BYTES"):
            await client.query("counters:padded", {"name": name, "size": 100_000})
        assert (await client.query("counters:padded", {"name": name, "size": 40_000}))["pad"] == "x" * 40_000


# -- pool fairness --------------------------------------------------------------------------------------------


async def test_one_identity_firing_50_slow_calls_cannot_starve_another(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 10.0)  # the slow queries here only hold connections
    monkeypatch.setattr(knobs, "POOL_WAIT_SECONDS", 2.0)
    hog, other = fresh("hog"), fresh("other")
    key = user_key(tb, hog)
    token = tb.token(hog)
    # Slow queries: each holds a pool connection for its whole run, and none conflicts with another.
    calls = [asyncio.create_task(post(tb, "/api/query", {
        "path": "counters:get_slowly", "args": {"name": hog, "delayMs": 1000}}, token)) for _ in range(50)]
    try:
        await until(lambda: tb.runner.gate.caller(key)[0] == knobs.POOL_MAX_PER_CALLER)
        assert tb.runner.gate.caller(key)[1] > 0  # the rest wait in the hog's own queue
        response = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": other}},
                              tb.token(other))
        assert response.status_code == 200 and response.json()["value"] == 1
        assert not all(c.done() for c in calls), "the other identity's call waited for the hog's calls"
        assert tb.runner.gate.caller(key)[0] <= knobs.POOL_MAX_PER_CALLER
        statuses = [r.status_code for r in await asyncio.gather(*calls)]
    finally:
        for call in calls:
            call.cancel()
    # The hog's calls ran a share at a time; those that would have waited past the bound were refused.
    assert set(statuses) <= {200, 429} and statuses.count(200) >= knobs.POOL_MAX_PER_CALLER


async def test_a_callers_calls_beyond_its_share_and_queue_are_refused_with_429(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 10.0)  # the slow queries here only hold connections
    monkeypatch.setattr(knobs, "POOL_MAX_PER_CALLER", 2)
    monkeypatch.setattr(knobs, "POOL_QUEUE_PER_CALLER", 3)
    monkeypatch.setattr(knobs, "POOL_WAIT_SECONDS", 0.4)
    responses = await asyncio.gather(*(post(tb, "/api/query", {  # anonymous: counted by address
        "path": "counters:get_slowly", "args": {"name": "x", "delayMs": 1500}}) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 2 + [429] * 8  # 2 ran; 5 found the queue full; 3 waited past the bound
    refused = [r.json() for r in responses if r.status_code == 429]
    assert {r["code"] for r in refused} == {"TooManyConcurrentRequests"}
    assert any("BACKEND_POOL_QUEUE_PER_CALLER" in r["message"] for r in refused)
    assert any("BACKEND_POOL_WAIT_SECONDS" in r["message"] for r in refused)


async def test_a_call_finding_the_whole_pool_busy_gets_503_after_a_bounded_wait(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 10.0)  # the slow queries here only hold connections
    monkeypatch.setattr(knobs, "POOL_WAIT_SECONDS", 0.3)
    gate = tb.runner.gate
    busy = [asyncio.create_task(tb.runner.query("counters:get_slowly", {"name": "x", "delayMs": 1500}, None))
            for _ in range(gate.size)]
    try:
        await until(lambda: gate.free == 0)
        response = await post(tb, "/api/mutation", {"path": "counters:increment", "args": {"name": fresh()}},
                              tb.token(fresh("late")))
        assert response.status_code == 503
        assert response.json()["code"] == "ServiceUnavailable"
        assert "BACKEND_POOL_WAIT_SECONDS" in response.json()["message"]
        assert await health(tb) == 200  # the reserve keeps the engine's own work going
        await asyncio.gather(*busy)
    finally:
        for task in busy:
            task.cancel()


async def test_a_socket_mutation_refused_for_its_share_is_replayed_after_reconnecting(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the socket a refusal closes it with a reason the client backs off on; the client replays the
    mutation on its next socket, and it runs exactly once."""
    monkeypatch.setattr(knobs, "QUERY_TIMEOUT_SECONDS", 10.0)  # the slow queries here only hold connections
    monkeypatch.setattr(knobs, "POOL_MAX_PER_CALLER", 1)
    monkeypatch.setattr(knobs, "POOL_QUEUE_PER_CALLER", 0)
    subject, name = fresh("sock"), fresh()
    key = user_key(tb, subject)
    hold = asyncio.create_task(post(tb, "/api/query", {
        "path": "counters:get_slowly", "args": {"name": name, "delayMs": 1500}}, tb.token(subject)))
    try:
        await until(lambda: tb.runner.gate.caller(key)[0] == 1)
        async with AsyncClient(tb.url, token=tb.token(subject)) as client:
            value = await asyncio.wait_for(client.mutation("counters:increment", {"name": name}), 60)
        assert (await hold).status_code == 200
    finally:
        hold.cancel()
    assert value == 1
    assert await tb.query("counters:get", {"name": name}) == 1


async def test_pool_connections_carry_a_statement_timeout_as_a_second_line(tb: TestBackend) -> None:
    """PostgreSQL itself cancels a statement on a pool connection that outlives every function limit, even
    if the node's cancel request never arrived; the schema migration at start-up lifted it for itself only."""
    assert max(knobs.QUERY_TIMEOUT_SECONDS, knobs.MUTATION_TIMEOUT_SECONDS) <= knobs.STATEMENT_TIMEOUT_SECONDS
    expected = f"{round(knobs.STATEMENT_TIMEOUT_SECONDS * 1000)}ms"
    assert tb.backend is not None and tb.backend.pool is not None
    for _ in range(knobs.POOL_MAX_SIZE):  # whichever connection ran the migration got its setting back
        async with tb.backend.pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT current_setting('statement_timeout')::interval = $1::text::interval", expected)
