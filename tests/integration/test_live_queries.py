"""Live-query guarantees over real sockets: precise invalidation, de-duplication, one snapshot per
Transition, read-your-writes, exactly-once mutations, monotonic time and cutting off slow readers.

Every check here could catch its violation: re-runs are counted with the hub's own counters, silence is
checked on the socket, and torn Transitions are looked for under concurrent commits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from backend import knobs
from backend.errors import Conflict
from backend.testing import TestBackend, create_database, drop_database
from tests.support.sync_client import RawClient, ts_of


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def reruns(tb: TestBackend) -> int:
    value: int = tb.backend.hub.stats["reruns"]  # type: ignore[union-attr]
    return value


async def settle(tb: TestBackend, probe: RawClient, probe_id: int, probe_name: str) -> None:
    """Commit to the probe counter and wait for its update: every earlier commit has been processed."""
    before = probe.results[probe_id]
    await tb.mutation("counters:increment", {"name": probe_name})
    await probe.until(lambda: probe.results[probe_id] == before + 1)


# -- precise invalidation ---------------------------------------------------------------------------------


async def test_commit_reruns_only_the_subscriptions_it_touches(tb: TestBackend) -> None:
    a, b = unique("inv-a"), unique("inv-b")
    async with RawClient.open(tb.port) as sock_a, RawClient.open(tb.port) as sock_b:
        (qa,) = await sock_a.subscribe(("counters:get", {"name": a}))
        (qb,) = await sock_b.subscribe(("counters:get", {"name": b}))
        for round_ in (1, 2, 3):
            start = reruns(tb)
            await tb.mutation("counters:increment", {"name": a})
            transition = await sock_a.transition()
            assert [m["queryId"] for m in transition["modifications"]] == [qa]
            assert sock_a.results[qa] == round_
            assert reruns(tb) - start == 1, "a commit to counter a re-ran more than a's subscription"
            await sock_b.silent(0.3)
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": b})
        await sock_b.until(lambda: sock_b.results[qb] == 1)
        assert reruns(tb) - start == 1
        await sock_a.silent(0.3)


async def test_writes_outside_a_truncated_range_rerun_nothing(tb: TestBackend) -> None:
    """``take(1)`` / ``first()`` read up to the first row only; later keys in the range must not wake them."""
    p = unique("trunc") + "/"
    probe_name = unique("probe")
    for suffix in ("b", "d"):
        await tb.mutation("counters:increment", {"name": p + suffix})
    async with RawClient.open(tb.port) as sock, RawClient.open(tb.port) as probe:
        (pq,) = await probe.subscribe(("counters:get", {"name": probe_name}))
        asc, desc, first = await sock.subscribe(
            ("counters:range", {"lo": p, "hi": p + "~", "limit": 1}),
            ("counters:range", {"lo": p, "hi": p + "~", "limit": 1, "descending": True}),
            ("counters:first_in", {"lo": p, "hi": p + "~"}),
        )
        assert sock.results[asc] == [{"name": p + "b", "value": 1.0}]
        assert sock.results[desc] == [{"name": p + "d", "value": 1.0}]
        assert sock.results[first] == p + "b"

        # c lies between the two ends: beyond the ascending read's last row and before the descending one's.
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": p + "c"})
        await tb.mutation("counters:increment", {"name": p + "c"})
        await settle(tb, probe, pq, probe_name)
        assert reruns(tb) - start == 1, "a write between the truncated ends re-ran a truncated query"
        await sock.silent(0.2)

        # Updating the row at the end of a read re-runs exactly the reads that include it.
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": p + "d"})
        await sock.until(lambda: sock.results[desc] == [{"name": p + "d", "value": 2.0}])
        await settle(tb, probe, pq, probe_name)
        assert reruns(tb) - start == 2  # the descending read and the probe

        # A new first row changes the ascending reads; the descending one is not woken.
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": p + "a"})
        await sock.until(lambda: sock.results[first] == p + "a")
        assert sock.results[asc] == [{"name": p + "a", "value": 1.0}]
        await settle(tb, probe, pq, probe_name)
        assert reruns(tb) - start == 3

        # Outside [lo, hi) altogether: nothing.
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": p[:-1] + "0"})
        await tb.mutation("counters:increment", {"name": p + "~"})
        await settle(tb, probe, pq, probe_name)
        assert reruns(tb) - start == 1
        await sock.silent(0.2)


async def test_an_unchanged_result_sends_nothing(tb: TestBackend) -> None:
    name = unique("same")
    async with RawClient.open(tb.port) as sock:
        (q,) = await sock.subscribe(("counters:get", {"name": name}))
        await tb.mutation("counters:increment", {"name": name})
        await sock.until(lambda: sock.results[q] == 1)
        start = reruns(tb)
        await tb.mutation("counters:increment", {"name": name, "by": 0})  # writes the row, same value
        deadline = time.monotonic() + 5
        while reruns(tb) == start and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert reruns(tb) - start == 1, "the written row must re-run its subscription"
        await sock.silent(0.3)


async def test_a_query_refused_by_its_tenant_check_still_follows_what_it_read(tb: TestBackend) -> None:
    """The membership read that refused a query is part of its read set: joining (and leaving) updates it."""
    owner, visitor = unique("owner"), unique("visitor")
    business = await tb.mutation("businesses:create", {"name": "Harbour Yoga", "timezone": "UTC"}, as_user=owner)
    async with RawClient.open(tb.port) as sock:
        await sock.authenticate(tb.token(visitor))
        (q,) = await sock.subscribe(("businesses:get", {"businessId": business}))
        assert sock.failures[q]["errorMessage"].startswith("[NotFound]")
        member = await tb.mutation("members:join", {"businessId": business}, as_user=visitor)
        await sock.until(lambda: q in sock.results)
        assert sock.results[q]["name"] == "Harbour Yoga"
        await tb.mutation("members:remove", {"memberId": member}, as_user=owner)
        await sock.until(lambda: q in sock.failures)
        await tb.mutation("members:join", {"businessId": business}, as_user=visitor)
        await sock.until(lambda: q in sock.results)


# -- de-duplication ---------------------------------------------------------------------------------------


async def test_identical_subscriptions_share_one_rerun(tb: TestBackend) -> None:
    name = unique("dedup")
    sockets = 8
    async with RawClient.open(tb.port) as first:
        clients = [first]
        opened = [RawClient.open(tb.port) for _ in range(sockets - 1)]
        clients += [await cm.__aenter__() for cm in opened]
        try:
            ids = [(await c.subscribe(("counters:get", {"name": name})))[0] for c in clients]
            hub = tb.backend.hub  # type: ignore[union-attr]
            assert sum(1 for key in hub.instances if key[0] == "counters:get" and name.encode() in key[1]) == 1
            for expected in (1, 2, 3):
                start = reruns(tb)
                await tb.mutation("counters:increment", {"name": name})
                for client, q in zip(clients, ids, strict=True):
                    await client.until(lambda c=client, q=q, e=expected: c.results[q] == e)
                assert reruns(tb) - start == 1, f"{sockets} identical subscriptions must share one re-run"
        finally:
            for cm in opened:
                await cm.__aexit__(None, None, None)


# -- one snapshot per Transition --------------------------------------------------------------------------


async def test_one_mutation_changes_every_affected_query_in_one_transition(tb: TestBackend) -> None:
    a, b = unique("two-a"), unique("two-b")
    async with RawClient.open(tb.port) as sock:
        qa, qb, qp = await sock.subscribe(
            ("counters:get", {"name": a}), ("counters:get", {"name": b}), ("counters:pair", {"a": a, "b": b})
        )
        response, transition = await sock.mutation("counters:increment_two", {"a": a, "b": b})
        assert response["success"] and transition is not None
        assert {m["queryId"] for m in transition["modifications"]} == {qa, qb, qp}
        assert (sock.results[qa], sock.results[qb], sock.results[qp]) == (1, 1, [1, 1])


async def test_no_transition_is_torn_under_concurrent_commits(tb: TestBackend) -> None:
    """Writers commit concurrently, each moving its own pair of counters together; in every Transition each
    pair must be equal in all three queries that show it (two gets and the pair)."""
    writers, per_writer = 4, 25
    pairs = [(unique(f"torn{i}-a"), unique(f"torn{i}-b")) for i in range(writers)]
    queries: list[tuple[str, dict[str, Any]]] = []
    for a, b in pairs:
        queries += [("counters:get", {"name": a}), ("counters:pair", {"a": a, "b": b}), ("counters:get", {"name": b})]
    async with RawClient.open(tb.port) as x, RawClient.open(tb.port) as y:
        observers = [(client, await client.subscribe(*queries)) for client in (x, y)]
        checked = 0

        def views(client: RawClient, ids: list[int]) -> list[tuple[Any, Any, Any]]:
            return [tuple(client.results[q] for q in ids[i : i + 3]) for i in range(0, len(ids), 3)]  # type: ignore[misc]

        async def watch(client: RawClient, ids: list[int]) -> None:
            nonlocal checked
            while any(a < per_writer for a, _, _ in views(client, ids)):
                await client.transition(timeout=20)
                for a, pair, b in views(client, ids):
                    assert a == b and pair == [a, b], f"torn Transition: {a}, {b}, {pair}"
                checked += 1

        async def write(a: str, b: str) -> None:
            for _ in range(per_writer):
                while True:  # a give-up after many serialization conflicts is retried here
                    try:
                        await tb.mutation("counters:increment_two", {"a": a, "b": b})
                        break
                    except Conflict:
                        continue

        watchers = [asyncio.create_task(watch(c, ids)) for c, ids in observers]
        try:
            await asyncio.gather(*(write(a, b) for a, b in pairs))
            await asyncio.wait_for(asyncio.gather(*watchers), timeout=20)
        finally:
            for task in watchers:
                task.cancel()
        assert checked >= 4
        for client, ids in observers:
            assert views(client, ids) == [(per_writer, [per_writer, per_writer], per_writer)] * writers


# -- read your writes -------------------------------------------------------------------------------------


async def test_the_transition_after_a_mutation_response_holds_its_writes(tb: TestBackend) -> None:
    mine, other, untouched = unique("ryw"), unique("ryw-other"), unique("ryw-none")
    async with RawClient.open(tb.port) as sock:
        qm, qo = await sock.subscribe(("counters:get", {"name": mine}), ("counters:get", {"name": other}))
        noise_done = asyncio.Event()

        async def noise() -> None:  # concurrent commits by someone else, on the same and other rows
            while not noise_done.is_set():
                await tb.mutation("counters:increment", {"name": mine, "by": 1000})
                await tb.mutation("counters:increment", {"name": other})

        task = asyncio.create_task(noise())
        try:
            for _ in range(15):
                response, transition = await sock.mutation("counters:increment", {"name": mine})
                assert response["success"] and transition is not None
                assert ts_of(transition["endVersion"]["ts"]) >= ts_of(response["ts"])
                assert sock.results[qm] >= response["result"], "the Transition after the response lacks the write"
        finally:
            noise_done.set()
            await task
        # A mutation that touches no subscription still gets a Transition at ts >= its own.
        response, transition = await sock.mutation("counters:increment", {"name": untouched})
        assert transition is not None and ts_of(transition["endVersion"]["ts"]) >= ts_of(response["ts"])
        assert qo in sock.results


# -- exactly once -----------------------------------------------------------------------------------------


async def test_a_replayed_mutation_returns_the_first_result_and_runs_once(tb: TestBackend) -> None:
    name = unique("once")
    session = str(uuid.uuid4())
    async with RawClient.open(tb.port, session_id=session) as first:
        response, _ = await first.mutation("counters:increment", {"name": name, "by": 5}, request_id=0)
        assert response["result"] == 5.0
        seen = first.ts
    async with RawClient.open(tb.port, session_id=session, connection_count=1, max_observed=seen) as again:
        (q,) = await again.subscribe(("counters:get", {"name": name}))
        replay, transition = await again.mutation("counters:increment", {"name": name, "by": 5}, request_id=0)
        assert replay["success"] and replay["result"] == 5.0
        assert transition is not None and ts_of(replay["ts"]) >= seen
        assert again.results[q] == 5
        fresh, _ = await again.mutation("counters:increment", {"name": name, "by": 5}, request_id=1)
        assert fresh["result"] == 10.0
    assert await tb.query("counters:get", {"name": name}) == 10


async def test_concurrent_replays_and_a_lost_response_still_run_once(tb: TestBackend) -> None:
    name = unique("race")
    session = str(uuid.uuid4())
    # The first socket sends and goes away without reading: the commit may or may not have happened.
    async with RawClient.open(tb.port, session_id=session) as lost:
        await lost.send_mutation("counters:increment", {"name": name}, request_id=7)
    clients = [RawClient.open(tb.port, session_id=session, connection_count=i + 1) for i in range(4)]
    opened = [await cm.__aenter__() for cm in clients]
    try:
        for client in opened:
            await client.send_mutation("counters:increment", {"name": name}, request_id=7)
        responses = []
        for client in opened:
            while True:
                message = await client.recv(10)
                if message["type"] == "MutationResponse":
                    responses.append(message)
                    break
    finally:
        for cm in clients:
            await cm.__aexit__(None, None, None)
    assert all(r["success"] for r in responses), responses
    assert {r["result"] for r in responses} == {1.0}
    assert await tb.query("counters:get", {"name": name}) == 1


# -- time -------------------------------------------------------------------------------------------------


async def test_time_never_goes_backwards_on_a_socket_nor_across_a_restart() -> None:
    future = time.time_ns() + 120 * 10**9  # another node's clock two minutes ahead: honoured
    database = await create_database()
    try:
        name = unique("clock")
        async with TestBackend(database_url=database) as node:
            async with RawClient.open(node.port, max_observed=future) as sock:
                await sock.subscribe(("counters:get", {"name": name}))
                assert sock.ts >= future
                response, _ = await sock.mutation("counters:increment", {"name": name})
                assert ts_of(response["ts"]) >= future
            async with RawClient.open(node.port) as other:  # a reconnect without maxObservedTimestamp
                await other.subscribe(("counters:get", {"name": name}))
                assert other.ts > future
                last = max(sock.ts, other.ts)
        async with TestBackend(database_url=database) as restarted, RawClient.open(restarted.port) as sock:
            await sock.subscribe(("counters:get", {"name": name}))
            assert sock.ts > last, "a restarted node stamped below a timestamp it had already issued"
            response, _ = await sock.mutation("counters:increment", {"name": name})
            assert ts_of(response["ts"]) > last and sock.results == {0: 2}
    finally:
        await drop_database(database)


async def test_a_timestamp_no_node_could_have_issued_is_refused_and_moves_nothing(tb: TestBackend) -> None:
    forged = time.time_ns() + 20 * 365 * 86400 * 10**9  # twenty years ahead: it would poison every later ts
    async with RawClient.open(tb.port, max_observed=forged) as sock:
        _, closed = await sock.closed()
        assert closed.rcvd is not None and closed.rcvd.code == 1011
        assert closed.rcvd.reason.startswith("InternalServerError")
    async with RawClient.open(tb.port) as other:
        await other.subscribe(("counters:get", {"name": unique("after-forgery")}))
        assert other.ts < forged


# -- slow readers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", ["frames", "bytes"])
async def test_a_client_that_stops_reading_is_cut_off_with_bounded_memory(
    tb: TestBackend, monkeypatch: Any, bound: str
) -> None:
    """A socket that stops reading is cut off once what waits for it passes a bound: the count of unsent
    Transitions, or (few frames, each large) BACKEND_MAX_QUEUED_BYTES, so no slow reader holds gigabytes."""
    if bound == "frames":
        monkeypatch.setattr(knobs, "MAX_PENDING_TRANSITIONS", 3)
    else:
        monkeypatch.setattr(knobs, "MAX_PENDING_TRANSITIONS", 1000)
        monkeypatch.setattr(knobs, "MAX_QUEUED_BYTES", 1_000_000)
    name = unique("slow")
    backend = tb.backend
    assert backend is not None
    async with RawClient.open(tb.port, max_queue=1, max_size=None, compression=None) as slow, RawClient.open(tb.port) as healthy:
        await slow.subscribe(("counters:padded", {"name": name, "size": 200_000}))
        (hq,) = await healthy.subscribe(("counters:get", {"name": name}))
        session = next(
            s for s in backend.sessions
            if s.sub is not None
            and any(i.key[0] == "counters:padded" and name.encode() in i.key[1] for i in s.sub.queries.values())
        )
        most_frames = most_bytes = produced = 0
        for produced in range(1, 400):
            await tb.mutation("counters:increment", {"name": name})
            await healthy.until(lambda p=produced: healthy.results[hq] == p)
            most_frames = max(most_frames, session._outbox.qsize())
            most_bytes = max(most_bytes, session._queued_bytes)
            if session not in backend.sessions:
                break
        else:
            raise AssertionError(f"the slow reader was never cut off (state {session.state}, close {session._close_reason})")
        if bound == "frames":
            assert most_frames <= knobs.MAX_PENDING_TRANSITIONS + 2, f"{most_frames} frames queued for one socket"
        else:
            assert most_bytes <= knobs.MAX_QUEUED_BYTES, f"{most_bytes} bytes queued for one socket"
        assert session.sub is not None and session.sub not in backend.hub.subscribers
        assert session._outbox.qsize() == 0 and session._queued_bytes == 0, "a cut-off socket still holds frames"
        # The healthy socket is unaffected; the slow one finds the reason after the frames already in flight.
        await tb.mutation("counters:increment", {"name": name})
        await healthy.until(lambda: healthy.results[hq] == produced + 1)
        _, closed = await slow.closed(timeout=20)
        assert closed.rcvd is not None and closed.rcvd.reason.startswith("TooManyConcurrentRequests"), closed
