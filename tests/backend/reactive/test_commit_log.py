"""The commit log is pruned by age in small batches, and a node that fell behind the retention rebuilds."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from backend import knobs
from backend.reactive import hub as hub_module
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


async def add_rows(tb: TestBackend, count: int, age_seconds: float) -> None:
    for _ in range(count):  # one transaction (so one xid) per row
        await tb.sql(
            "INSERT INTO _commit_log (xid, summary, committed_at) "
            "VALUES (pg_current_xact_id(), '[]'::bytea, now() - make_interval(secs => $1))",
            age_seconds,
        )


async def test_rows_older_than_the_retention_are_pruned_in_batches(tb: TestBackend, monkeypatch: Any) -> None:
    monkeypatch.setattr(hub_module, "PRUNE_BATCH", 2)
    hub = tb.backend.hub  # type: ignore[union-attr]
    await hub.prune_commit_log()  # start from a log holding nothing older than the retention
    retention = knobs.COMMIT_LOG_RETENTION_SECONDS
    await add_rows(tb, 5, retention + 60)
    await add_rows(tb, 2, retention - 60)
    old_before = (await tb.sql(
        "SELECT count(*) FROM _commit_log WHERE committed_at < now() - make_interval(secs => $1)", retention))[0][0]
    recent_before = (await tb.sql("SELECT count(*) FROM _commit_log"))[0][0] - old_before
    assert old_before == 5
    assert await hub.prune_commit_log() == 5
    rows = await tb.sql(
        "SELECT count(*) FILTER (WHERE committed_at < now() - make_interval(secs => $1)), count(*) FROM _commit_log",
        retention,
    )
    assert rows[0][0] == 0 and rows[0][1] == recent_before, "pruning removed rows younger than the retention"
    # The hub goes on working after its log was pruned.
    name = f"after-prune-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as sock:
        (q,) = await sock.subscribe(("counters:get", {"name": name}))
        await tb.mutation("counters:increment", {"name": name})
        await sock.until(lambda: sock.results[q] == 1)


async def test_a_node_that_fell_behind_the_retention_reruns_everything(tb: TestBackend) -> None:
    hub = tb.backend.hub  # type: ignore[union-attr]
    name, other = f"behind-{uuid.uuid4().hex[:8]}", f"elsewhere-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as sock:
        (q,) = await sock.subscribe(("counters:get", {"name": name}))
        live = sum(1 for i in hub.instances.values() if i.subscribers and i.spec is not None)
        assert not hub.fell_behind()
        # As if the loop had been stalled past the retention: the next snapshot cannot trust the log.
        hub._snapshot_at = time.monotonic() - knobs.COMMIT_LOG_RETENTION_SECONDS
        assert hub.fell_behind()
        start = hub.stats["reruns"]
        await tb.mutation("counters:increment", {"name": other})
        deadline = time.monotonic() + 5
        while hub.stats["reruns"] - start < live and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.stats["reruns"] - start >= live, "a node behind the retention did not rebuild"
        assert not hub.fell_behind()
        await sock.silent(0.2)  # re-run, unchanged: nothing to send
        start = hub.stats["reruns"]
        await tb.mutation("counters:increment", {"name": name})
        await sock.until(lambda: sock.results[q] == 1)
        assert hub.stats["reruns"] - start == 1, "after the rebuild, invalidation is precise again"
