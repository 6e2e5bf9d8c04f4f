"""A connection lost around a mutation's COMMIT leaves its outcome unknown to the node. For a request with a
stored result (a sync mutation's ``(sessionId, requestId)``, an HTTP ``Idempotency-Key``) the row written in
the same transaction settles it: present means committed, and the caller gets the real result, not a failure
it would wrongly act on (and run again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from backend import runner as runner_module
from backend.testing import TestBackend

REAL = runner_module.serializable


@asynccontextmanager
async def reply_lost_after_commit(conn: Any, **options: Any) -> AsyncIterator[Any]:
    """The COMMIT takes effect; then the socket breaks before its answer arrives."""
    async with REAL(conn, **options) as final:
        yield final
    raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


@asynccontextmanager
async def lost_before_commit(conn: Any, **options: Any) -> AsyncIterator[Any]:
    """The socket breaks before COMMIT: the transaction rolls back."""
    async with REAL(conn, **options) as final:
        yield final
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


@pytest.fixture
async def tb() -> AsyncIterator[TestBackend]:
    async with TestBackend(serve=False, run_scheduler=False) as backend:
        yield backend


async def test_a_committed_request_whose_reply_was_lost_gets_its_result(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, session = f"lost-{uuid.uuid4().hex[:8]}", (str(uuid.uuid4()), 3)
    monkeypatch.setattr(runner_module, "serializable", reply_lost_after_commit)
    outcome = await tb.runner.mutation("counters:increment", {"name": name, "by": 5}, None, session=session)
    monkeypatch.setattr(runner_module, "serializable", REAL)
    assert outcome.error is None and outcome.value == 5
    assert await tb.query("counters:get", {"name": name}) == 5  # applied once, not run again
    again = await tb.runner.mutation("counters:increment", {"name": name, "by": 5}, None, session=session)
    assert again.value == 5 and await tb.query("counters:get", {"name": name}) == 5


async def test_a_request_lost_before_commit_still_fails_and_left_nothing(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, session = f"gone-{uuid.uuid4().hex[:8]}", (str(uuid.uuid4()), 4)
    monkeypatch.setattr(runner_module, "serializable", lost_before_commit)
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await tb.runner.mutation("counters:increment", {"name": name}, None, session=session)
    monkeypatch.setattr(runner_module, "serializable", REAL)
    assert await tb.query("counters:get", {"name": name}) == 0
    assert not await tb.sql("SELECT 1 FROM _session_requests WHERE session_id = $1", session[0])


async def test_without_a_stored_result_a_lost_reply_stays_a_failure(
    tb: TestBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing settles the outcome of a plain request: the caller is told it failed, as before."""
    monkeypatch.setattr(runner_module, "serializable", reply_lost_after_commit)
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await tb.runner.mutation("counters:increment", {"name": f"plain-{uuid.uuid4().hex[:8]}"}, None)


async def test_one_request_run_twice_at_once_on_a_fresh_session_is_applied_once(tb: TestBackend) -> None:
    """A reconnect racing a half-open first socket: both run the same request with no replay lookup. The
    loser fails on the row or at COMMIT (serialization, then the stored result's primary key), and its retry
    answers with the winner's stored result; the counter moves once."""
    name, session = f"race-{uuid.uuid4().hex[:8]}", (str(uuid.uuid4()), 7)
    runner = tb.runner
    spec = runner.resolve("counters:increment_slowly", "mutation", False)
    kwargs = runner.validate_args(spec, {"name": name, "delayMs": 50})
    first, second = await asyncio.gather(*(
        runner.execute_mutation(spec, kwargs, None, session=session, fresh_session=True) for _ in range(2)))
    assert first.error is None and second.error is None
    assert first.value == second.value == 1
    assert await tb.query("counters:get", {"name": name}) == 1
