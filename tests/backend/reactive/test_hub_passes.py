"""The hub's passes: one read-only transaction per pass that holds nothing while the hub waits, and no
PostgreSQL at all while nothing on the node is live."""

from __future__ import annotations

import uuid

from backend.testing import TestBackend
from tests.support.sync_client import RawClient, ts_of


async def test_between_passes_the_hub_waits_in_a_transaction_without_a_snapshot(tb: TestBackend) -> None:
    hub = tb.backend.hub  # type: ignore[union-attr]
    name = f"idle-{uuid.uuid4()}"
    async with RawClient.open(tb.port) as client:
        (live,) = await client.subscribe(("counters:get", {"name": name}))
        await client.mutation("counters:increment", {"name": name})
        await client.until(lambda: client.results.get(live) == 1.0)
        await client.silent(0.2)  # the pass that sent the update has ended
        pid = hub._conn.get_server_pid()
        state, xmin, xid = (await tb.sql(
            "SELECT state, backend_xmin::text, backend_xid::text FROM pg_stat_activity WHERE pid = $1", pid))[0]
    # Begun for the next pass, but with no snapshot taken: it holds back no vacuum and takes no locks.
    assert state == "idle in transaction"
    assert xmin is None and xid is None
    locks = await tb.sql("SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'relation'", pid)
    assert locks[0][0] == 0


async def test_with_nothing_live_mutations_are_answered_without_a_snapshot(tb: TestBackend) -> None:
    hub = tb.backend.hub  # type: ignore[union-attr]
    name = f"quiet-{uuid.uuid4()}"
    async with RawClient.open(tb.port) as writer:
        snapshots, passes = hub.stats["snapshots"], hub.stats["passes"]
        last = 0
        for _ in range(5):
            response, transition = await writer.mutation("counters:increment", {"name": name})
            assert response["success"] is True and transition is not None
            # The Transition that follows reaches the mutation's timestamp, as the clients wait for.
            assert ts_of(transition["endVersion"]["ts"]) >= ts_of(response["ts"]) > last
            last = ts_of(response["ts"])
        assert hub.stats["passes"] > passes
        assert hub.stats["snapshots"] == snapshots, "a pass with no live query read the commit log"
        # A query subscribed afterwards starts from a fresh snapshot that holds every earlier commit, and it
        # is kept live from there on.
        async with RawClient.open(tb.port) as reader:
            (live,) = await reader.subscribe(("counters:get", {"name": name}))
            assert reader.results[live] == 5.0
            assert hub.stats["snapshots"] > snapshots
            await writer.mutation("counters:increment", {"name": name})
            await reader.until(lambda: reader.results.get(live) == 6.0)


async def test_a_pass_that_cannot_reconnect_keeps_its_requests_for_the_next(tb: TestBackend) -> None:
    """PostgreSQL away while the hub re-opens its connection: the pass fails, and what the sockets asked for
    (a new query, a mutation's response) is applied by the next pass, not dropped."""
    hub = tb.backend.hub  # type: ignore[union-attr]
    name = f"reconnect-{uuid.uuid4()}"
    async with RawClient.open(tb.port) as client:
        (first,) = await client.subscribe(("counters:get", {"name": name}))
        await tb.sql("SELECT pg_terminate_backend($1)", hub._conn.get_server_pid())
        connect, failures = hub._connect, []

        async def refused_once() -> object:
            if not failures:
                failures.append(1)
                raise OSError("connection refused (PostgreSQL restarting)")
            return await connect()

        hub._connect = refused_once
        response, transition = await client.mutation("counters:increment", {"name": name})
        (second,) = await client.subscribe(("counters:get", {"name": name}))
        assert failures, "the hub never tried to reconnect"
        assert response["success"] is True and transition is not None
        await client.until(lambda: client.results.get(first) == 1.0 and client.results.get(second) == 1.0)
