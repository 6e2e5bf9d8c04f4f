"""The subscription hub: one loop per node that turns commits into Transitions.

Each iteration opens one ``REPEATABLE READ READ ONLY`` snapshot and learns exactly which commits it holds
that the previous snapshot did not (the commit log rows with ``NOT pg_visible_in_snapshot(xid, previous)``).
Their written index keys are matched against the invalidation index; the affected query instances, plus any
newly added ones, are re-run in that same snapshot; every session whose queries changed, whose query set or
identity changed, or whose mutation completed gets one Transition stamped with the snapshot's timestamp.
So all results in a Transition come from one snapshot, and a mutation's Transition already holds its writes.

Identical (function, args, identity) subscriptions share one ``QueryInstance``: one re-run, one encoding of
the result, fanned out to every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import msgspec

from .. import calllog, knobs
from ..db import decode_keys
from ..errors import AppError, BackendError
from ..failures import public_message, report
from ..postgres import init_connection
from ..registry import FunctionSpec
from ..values import encode_error_data
from .clock import HybridClock
from .invalidation import InvalidationIndex

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["CHANNEL", "Hub", "QueryInstance", "Subscriber"]

log = logging.getLogger("backend.hub")

CHANNEL = "backend_commits"
#: Seconds between prunings of old commit-log rows, and rows deleted per statement (small deletes keep
#: locks and WAL bursts short; see docs/design.md "Pruning").
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 1000
_PRUNE_MAX_BATCHES = 100_000  # per round: keep going while batches come back full
QueryKey = tuple[str, bytes, str | None]


class SessionLink(Protocol):
    """What the hub needs from a socket: queue a frame (False when the client is too far behind), close."""

    def enqueue(self, frame: bytes, *, transition: bool) -> bool: ...

    def overloaded(self) -> None: ...


@dataclass(eq=False)
class QueryInstance:
    key: QueryKey
    spec: FunctionSpec | None
    kwargs: dict[str, Any]
    identity: Any | None
    subscribers: set[tuple[Subscriber, int]] = field(default_factory=set)
    modification: bytes | None = None  # encoded QueryUpdated/QueryFailed body minus queryId
    digest: bytes = b""
    runs: int = 0
    failed_to_resolve: BaseException | None = None
    raw_args: Any = None
    changed_now: bool = False


@dataclass(eq=False)
class Subscriber:
    """The hub's view of one socket's query set."""

    link: SessionLink
    identity: Any | None = None
    query_set: int = 0
    identity_version: int = 0
    ts: int = 0
    target_query_set: int = 0
    target_identity: int = 0
    queries: dict[int, QueryInstance] = field(default_factory=dict)
    changed: set[int] = field(default_factory=set)
    removed: list[int] = field(default_factory=list)
    completions: list[Callable[[int], bytes]] = field(default_factory=list)
    closed: bool = False
    holds: int = 0  # mutations between "about to commit" and "response queued": Transitions wait for them

    @property
    def identity_key(self) -> str | None:
        return None if self.identity is None else str(self.identity.token_identifier)


@dataclass
class _Add:
    query_id: int
    path: str
    args: Any


@dataclass
class _Request:
    sub: Subscriber
    query_set: int | None = None
    adds: list[_Add] = field(default_factory=list)
    removes: list[int] = field(default_factory=list)
    identity: tuple[Any | None, int] | None = None
    completion: Callable[[int], bytes] | None = None


class Hub:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.index = InvalidationIndex()
        self.instances: dict[QueryKey, QueryInstance] = {}
        self.clock = HybridClock()
        self.subscribers: set[Subscriber] = set()
        self._requests: list[_Request] = []
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._notifier: asyncpg.Connection | None = None
        self._notify_pending = False
        self._notify_task: asyncio.Task[None] | None = None
        self._snapshot: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._persist_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._snapshot_at = time.monotonic()  # when self._snapshot was taken
        self._persisted = 0
        self.stats = {"snapshots": 0, "reruns": 0, "commits": 0, "transitions": 0}
        self.last_ts = 0
        self._carry_dirty: set[QueryInstance] = set()
        self._carry_touched: set[Subscriber] = set()
        self._applied = False
        self._careful = False
        self._reload = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        url = self.backend.url
        self._conn = await asyncpg.connect(url)
        await init_connection(self._conn)
        await self._conn.execute("SET plan_cache_mode = force_custom_plan")
        self._notifier = await asyncpg.connect(url)
        await self._notifier.execute("SET synchronous_commit = off")
        self._listener = await asyncpg.connect(url)
        await self._listener.add_listener(CHANNEL, self._on_notify)
        floor = await self._conn.fetchval("SELECT ts FROM _clock WHERE id = 1")
        self.clock.observe(int(floor or 0))
        self._snapshot = await self._conn.fetchval("SELECT pg_current_snapshot()::text")
        self._task = asyncio.create_task(self._loop(), name="hub")
        self._persist_task = asyncio.create_task(self._persist_clock(), name="hub-clock")
        self._prune_task = asyncio.create_task(self._prune_loop(), name="hub-prune")

    async def stop(self) -> None:
        for task in (self._task, self._persist_task, self._prune_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._save_clock()
        for conn in (self._listener, self._notifier, self._conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # -- wake-ups ----------------------------------------------------------------------------------------

    def _on_notify(self, _conn: Any, pid: int, *_: Any) -> None:
        # This node's own NOTIFY follows commits poke_local already woke the loop for: skip the extra pass.
        if self._notifier is not None and pid == self._notifier.get_server_pid():
            return
        self._wake.set()

    def poke_local(self) -> None:
        """A local commit happened: process it now, and tell the other nodes (coalesced)."""
        self._wake.set()
        self._notify_pending = True
        if self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        """One NOTIFY in flight at a time; commits that land meanwhile share the next one."""
        try:
            while self._notify_pending and self._notifier is not None:
                self._notify_pending = False
                await self._notifier.execute(f"NOTIFY {CHANNEL}")
        except Exception:  # pragma: no cover - a lost wake-up only delays other nodes until their next poll
            log.exception("commit wake-up failed")

    # -- requests from sessions --------------------------------------------------------------------------

    def connect(self, link: SessionLink) -> Subscriber:
        sub = Subscriber(link)
        self.subscribers.add(sub)
        return sub

    def disconnect(self, sub: Subscriber) -> None:
        sub.closed = True
        self.subscribers.discard(sub)
        for query_id in list(sub.queries):
            self._unsubscribe(sub, query_id)

    def observe_timestamp(self, ts: int) -> bool:
        """Honour a reconnecting client's ``maxObservedTimestamp``; False if no node could have issued it."""
        if not self.clock.plausible(ts):
            return False
        self.clock.observe(ts)
        return True

    def modify(self, sub: Subscriber, new_version: int, adds: list[tuple[int, str, Any]], removes: list[int]) -> None:
        self._push(_Request(sub, query_set=new_version, adds=[_Add(*a) for a in adds], removes=removes))

    def set_identity(self, sub: Subscriber, identity: Any | None, version: int) -> None:
        self._push(_Request(sub, identity=(identity, version)))

    def hold(self, sub: Subscriber) -> None:
        """A mutation of this socket is about to commit: hold its Transitions until the response is queued,
        so the client never sees the mutation's writes before its MutationResponse (no double counting of
        an optimistic update)."""
        sub.holds += 1

    def release(self, sub: Subscriber) -> None:
        """The held mutation failed: nothing to wait for."""
        sub.holds = max(0, sub.holds - 1)
        self._wake.set()

    def complete(self, sub: Subscriber, response: Callable[[int], bytes]) -> None:
        """Queue a mutation response; it goes out with the next snapshot's Transition (ts ≥ its commit)."""
        self._push(_Request(sub, completion=response))

    def reload(self) -> None:
        """New code was swapped in: resolve every live query against the new registry and re-run it in the
        next snapshot (subscribers are sent only what changed)."""
        self._reload = True
        self._wake.set()

    def _resolve_again(self, instance: QueryInstance) -> None:
        self.index.remove(instance.key)
        fresh = self._new_instance(instance.key, instance.key[0], instance.raw_args, instance.identity)
        instance.spec, instance.kwargs = fresh.spec, fresh.kwargs
        instance.failed_to_resolve, instance.modification = fresh.failed_to_resolve, fresh.modification

    def _push(self, request: _Request) -> None:
        self._requests.append(request)
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        calllog.source.set("ws")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=knobs.SCHEDULER_POLL_SECONDS * 5)
            self._wake.clear()
            try:
                await self._iteration()
                self._careful = False
            except asyncio.CancelledError:
                raise
            except _SnapshotAborted:
                self._careful = True  # redo the pass at once, one savepoint per query
                self._wake.set()
            except Exception:
                log.exception("hub iteration failed; retrying")
                await asyncio.sleep(0.05)
                self._wake.set()

    async def _iteration(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.backend.url)
            await init_connection(self._conn)
            await self._conn.execute("SET plan_cache_mode = force_custom_plan")
        conn = self._conn
        requests, self._requests = self._requests, []
        dirty: set[QueryInstance] = self._carry_dirty
        touched: set[Subscriber] = self._carry_touched
        self._carry_dirty, self._carry_touched = set(), set()
        try:
            await self._snapshot_and_run(conn, requests, dirty, touched)
        except BaseException:
            # Nothing was sent: keep what this iteration owed, so the next one delivers it.
            for instance in dirty:
                instance.digest = b""  # its last result may never have been sent
            self._carry_dirty |= {i for i in dirty if i.subscribers}
            self._carry_touched |= touched
            if not self._applied:
                self._requests = requests + self._requests
            raise
        ts = self.clock.stamp()
        self.last_ts = ts
        for instance in dirty:
            for sub, query_id in instance.subscribers:
                if instance.changed_now:
                    sub.changed.add(query_id)
                    touched.add(sub)
        for sub in touched:
            if sub.closed:
                continue
            if sub.holds > 0:
                self._carry_touched.add(sub)  # sent once its in-flight mutation's response is queued
                continue
            try:
                self._send_transition(sub, ts)
            except Exception:  # one socket's bad frame must not stop the others' Transitions
                log.exception("sending a transition failed; closing that socket")
                sub.link.overloaded()

    async def _snapshot_and_run(
        self,
        conn: asyncpg.Connection,
        requests: list[_Request],
        dirty: set[QueryInstance],
        touched: set[Subscriber],
    ) -> None:
        self._applied = False
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # One round trip: the snapshot, and exactly the commits it holds that the previous one did not.
            head = await conn.fetchrow(
                "SELECT pg_current_snapshot()::text AS snapshot, ARRAY(SELECT summary FROM _commit_log "
                "WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot) "
                "AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)) AS summaries",
                self._snapshot,
            )
            assert head is not None
            rows = head["summaries"]
            self._snapshot = head["snapshot"]
            if self.fell_behind():
                # Rows this node still needed may have been pruned: re-run everything in this snapshot.
                dirty.update(i for i in self.instances.values() if i.subscribers)
            self._snapshot_at = time.monotonic()
            self.stats["snapshots"] += 1
            self.stats["commits"] += len(rows)
            for summary in rows:
                for owner in self.index.match(decode_keys(summary)):
                    instance = self.instances.get(owner)  # type: ignore[call-overload]
                    if instance is not None:
                        dirty.add(instance)
            if self._reload:
                self._reload = False
                for instance in self.instances.values():
                    if instance.subscribers:
                        self._resolve_again(instance)
                        dirty.add(instance)
            self._applied = True
            for request in requests:
                self._apply(request, dirty, touched)
            for instance in dirty:
                if instance.subscribers:
                    await self._run(conn, instance)

    def _apply(self, request: _Request, dirty: set[QueryInstance], touched: set[Subscriber]) -> None:
        sub = request.sub
        if sub.closed:
            return
        touched.add(sub)
        if request.completion is not None:
            sub.completions.append(request.completion)
            sub.holds = max(0, sub.holds - 1)
        if request.identity is not None:
            identity, version = request.identity
            sub.identity = identity
            sub.target_identity = version
            for query_id, instance in list(sub.queries.items()):
                self._unsubscribe(sub, query_id)
                self._subscribe(sub, query_id, instance.key[0], instance.raw_args, dirty)
        if request.query_set is not None:
            sub.target_query_set = request.query_set
            for query_id in request.removes:
                self._unsubscribe(sub, query_id)
                sub.changed.discard(query_id)
                sub.removed.append(query_id)
            for add in request.adds:
                self._subscribe(sub, add.query_id, add.path, add.args, dirty)

    def _subscribe(self, sub: Subscriber, query_id: int, path: str, args: Any, dirty: set[QueryInstance]) -> None:
        args_key = msgspec.json.encode(args)
        key: QueryKey = (path, args_key, sub.identity_key)
        instance = self.instances.get(key)
        if instance is None:
            instance = self._new_instance(key, path, args, sub.identity)
            self.instances[key] = instance
            dirty.add(instance)
        instance.subscribers.add((sub, query_id))
        sub.queries[query_id] = instance
        sub.changed.add(query_id)

    def _new_instance(self, key: QueryKey, path: str, args: Any, identity: Any | None) -> QueryInstance:
        runner = self.backend.runner
        instance = QueryInstance(key, None, {}, identity)
        instance.raw_args = args
        instance.changed_now = True
        try:
            spec = runner.resolve(path, "query", allow_internal=False)
            instance.kwargs = runner.validate_args(spec, args)
            instance.spec = spec  # only once the arguments are valid: a spec here means "run it"
        except Exception as error:  # a BackendError answers the client; anything else is also a bug to log
            if not isinstance(error, BackendError):
                report(error, f"live query {path}", expose=self.backend.config.dev)
            instance.failed_to_resolve = error
            instance.modification = _failed_body(error, [])
        return instance

    def _unsubscribe(self, sub: Subscriber, query_id: int) -> None:
        instance = sub.queries.pop(query_id, None)
        if instance is None:
            return
        instance.subscribers.discard((sub, query_id))
        if not instance.subscribers:
            self.instances.pop(instance.key, None)
            self.index.remove(instance.key)

    async def _run(self, conn: asyncpg.Connection, instance: QueryInstance) -> None:
        if instance.spec is None:
            instance.runs += 1
            digest = hashlib.blake2b(instance.modification or b"", digest_size=16).digest()
            instance.changed_now = digest != instance.digest or instance.runs == 1
            instance.digest = digest
            return
        self.stats["reruns"] += 1
        instance.runs += 1
        # Queries run without savepoints (two round trips each) until one fails inside PostgreSQL; that
        # aborts the snapshot, so the whole pass is redone with a savepoint around every query.
        savepoint = conn.transaction() if self._careful else None
        if savepoint is not None:
            await savepoint.start()
        try:
            outcome = await self.backend.runner.execute_query(conn, instance.spec, instance.kwargs, instance.identity)
        except Exception as error:  # refused before the body ran, or the engine failed around it
            if savepoint is not None:
                await savepoint.rollback()
            elif _from_database(error):
                raise _SnapshotAborted from error
            if not isinstance(error, BackendError):
                report(error, f"live query {instance.key[0]}")
            body = _failed_body(error, [])
            self.index.remove(instance.key)
        else:
            if savepoint is not None:
                await (savepoint.rollback() if outcome.error is not None else savepoint.commit())
            elif outcome.error is not None and _from_database(outcome.error):
                raise _SnapshotAborted from outcome.error
            # The last subscriber may have left while the query ran: then its ranges must not come back.
            if outcome.read_set is not None and self.instances.get(instance.key) is instance:
                self.index.replace(instance.key, outcome.read_set.intervals)
            if outcome.error is None:
                body = msgspec.json.encode(
                    {"type": "QueryUpdated", "value": msgspec.Raw(msgspec.json.encode(outcome.value)),
                     "logLines": outcome.log_lines, "journal": None}
                )
            else:
                body = _failed_body(outcome.error, outcome.log_lines)
        digest = hashlib.blake2b(body, digest_size=16).digest()
        instance.changed_now = digest != instance.digest or instance.runs == 1
        instance.digest = digest
        instance.modification = body

    def _send_transition(self, sub: Subscriber, ts: int) -> None:
        # Built by concatenation from bodies encoded once per query instance: this runs once per socket.
        from ..sync.protocol import query_modification, query_removed, transition

        mods = [query_removed(q) for q in sub.removed]
        for query_id in sorted(sub.changed):
            instance = sub.queries.get(query_id)
            if instance is None or instance.modification is None:
                continue
            mods.append(query_modification(instance.modification, query_id))
        sub.removed.clear()
        sub.changed.clear()
        new_ts = max(ts, sub.ts)
        for completion in sub.completions:
            if not sub.link.enqueue(completion(new_ts), transition=False):
                sub.link.overloaded()
                return
        sub.completions.clear()
        frame = transition((sub.query_set, sub.identity_version, sub.ts),
                           (sub.target_query_set, sub.target_identity, new_ts), mods)
        sub.query_set, sub.identity_version, sub.ts = sub.target_query_set, sub.target_identity, new_ts
        self.stats["transitions"] += 1
        if not sub.link.enqueue(frame, transition=True):
            sub.link.overloaded()

    # -- pruning the commit log ---------------------------------------------------------------------------

    def fell_behind(self) -> bool:
        """True when the previous snapshot is so old that commit-log rows after it may have been pruned.
        The margin covers transactions that ran long (a row's age counts from its transaction's start)."""
        retention = knobs.COMMIT_LOG_RETENTION_SECONDS
        return time.monotonic() - self._snapshot_at > retention - min(retention / 2, 300.0)

    async def prune_commit_log(self) -> int:
        """Delete commit-log rows older than the retention; returns the count."""
        return await self._prune_in_batches(
            "DELETE FROM _commit_log WHERE xid IN (SELECT xid FROM _commit_log "
            "WHERE committed_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)",
            knobs.COMMIT_LOG_RETENTION_SECONDS,
        )

    async def prune_session_requests(self) -> int:
        """Forget stored mutation results older than the replay window (a client gone that long reconnects
        with a new session anyway, so its replays can no longer arrive)."""
        return await self._prune_in_batches(
            "DELETE FROM _session_requests WHERE ctid = ANY(ARRAY(SELECT ctid FROM _session_requests "
            "WHERE created_at < now() - make_interval(secs => $1) LIMIT $2))",
            knobs.SESSION_REQUEST_RETENTION_SECONDS,
        )

    async def _prune_in_batches(self, delete_sql: str, retention_seconds: float) -> int:
        """Run ``delete_sql`` (params: retention, batch size) until a batch comes back short."""
        pool = self.backend.pool
        if pool is None:
            return 0
        deleted = 0
        for _ in range(_PRUNE_MAX_BATCHES):
            async with pool.acquire() as conn:
                status = await conn.execute(delete_sql, float(retention_seconds), PRUNE_BATCH)
            count = int(status.split()[-1])
            deleted += count
            if count < PRUNE_BATCH:
                break
            await asyncio.sleep(0)
        return deleted

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
            try:
                await self.prune_commit_log()
                await self.prune_session_requests()
            except Exception:  # pragma: no cover - the next round tries again
                log.exception("pruning the commit log failed")

    # -- the persisted clock -----------------------------------------------------------------------------

    async def _persist_clock(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._save_clock()

    async def _save_clock(self) -> None:
        if self.clock.last <= self._persisted or self.backend.pool is None:
            return
        value = self.clock.last
        with contextlib.suppress(Exception):
            async with self.backend.pool.acquire() as conn:
                await conn.execute("UPDATE _clock SET ts = GREATEST(ts, $1) WHERE id = 1", value)
            self._persisted = value


class _SnapshotAborted(Exception):
    """A query failed inside PostgreSQL without a savepoint; the pass is redone carefully."""


def _from_database(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, asyncpg.PostgresError | asyncpg.InterfaceError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _failed_body(error: BaseException, log_lines: list[str]) -> bytes:
    body: dict[str, Any] = {"type": "QueryFailed", "logLines": log_lines, "journal": None}
    if isinstance(error, AppError):
        body["errorMessage"] = error.message
        body["errorData"] = encode_error_data(error.data)
    elif isinstance(error, BackendError):
        body["errorMessage"] = f"[{error.code}] {error.message}"
    else:
        body["errorMessage"] = public_message(error)
    return msgspec.json.encode(body)
