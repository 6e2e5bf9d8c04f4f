"""The runner: SERIALIZABLE mutations retried on conflict, exactly-once replays, nothing left behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from backend import AppError, MutationCtx, mutation
from backend.testing import TestBackend


async def read_counter(ctx: MutationCtx, name: str) -> dict[str, Any] | None:
    return await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()


async def test_write_skew_is_prevented_by_a_retry(tb: TestBackend) -> None:
    """Two doctors-on-call: each sets its own flag only if nobody else has. Serial order allows one."""
    x, y = f"x-{uuid.uuid4()}", f"y-{uuid.uuid4()}"
    await tb.mutation("counters:increment", {"name": x, "by": 0})
    await tb.mutation("counters:increment", {"name": y, "by": 0})
    both_read = asyncio.Barrier(2)
    first_attempts: set[str] = set()

    @mutation
    async def claim(ctx: MutationCtx, mine: str, other: str) -> bool:
        own, theirs = await read_counter(ctx, mine), await read_counter(ctx, other)
        assert own is not None and theirs is not None
        if mine not in first_attempts:  # force the overlap on the first attempt only
            first_attempts.add(mine)
            await both_read.wait()
        if own["value"] + theirs["value"] >= 1:
            return False
        await ctx.db.patch(own["_id"], {"value": 1})
        return True

    runner = tb.runner
    before = runner.retries
    outcomes = await asyncio.gather(
        runner.execute_mutation(claim.spec, {"mine": x, "other": y}, None),
        runner.execute_mutation(claim.spec, {"mine": y, "other": x}, None),
    )
    assert all(o.error is None for o in outcomes)
    assert sorted(o.value for o in outcomes) == [False, True]
    assert runner.retries > before
    assert max(o.attempts for o in outcomes) >= 2
    values = [await tb.query("counters:get", {"name": n}) for n in (x, y)]
    assert sorted(values) == [0, 1]


async def test_failed_mutation_leaves_nothing(tb: TestBackend) -> None:
    name = f"gone-{uuid.uuid4()}"
    before = await tb.sql("SELECT count(*) AS n FROM _commit_log")

    @mutation
    async def write_then_fail(ctx: MutationCtx, name: str) -> None:
        await ctx.db.insert("counters", {"name": name, "value": 1})
        raise AppError({"code": "nope"})

    outcome = await tb.runner.execute_mutation(write_then_fail.spec, {"name": name}, None)
    assert isinstance(outcome.error, AppError) and outcome.error.data == {"code": "nope"}
    assert (await tb.sql("SELECT count(*) AS n FROM counters WHERE name = $1", name))[0]["n"] == 0
    assert (await tb.sql("SELECT count(*) AS n FROM _commit_log"))[0]["n"] >= before[0]["n"]
    assert (await tb.sql("SELECT count(*) AS n FROM _commit_log WHERE summary::text LIKE $1", f"%{name}%"))[0]["n"] == 0


async def test_replayed_session_request_runs_once(tb: TestBackend) -> None:
    name = f"once-{uuid.uuid4()}"
    session = (str(uuid.uuid4()), 7)
    first = await tb.runner.mutation("counters:increment", {"name": name}, None, session=session)
    again = await tb.runner.mutation("counters:increment", {"name": name}, None, session=session)
    assert first.value == again.value == 1.0
    assert await tb.query("counters:get", {"name": name}) == 1


async def test_bad_return_value_is_redacted_bug(tb: TestBackend) -> None:
    @mutation
    async def lies(ctx: MutationCtx) -> int:
        return "not an int"  # type: ignore[return-value]

    outcome = await tb.runner.execute_mutation(lies.spec, {}, None)
    assert outcome.error is not None and getattr(outcome.error, "code", "") == "BadReturn"
