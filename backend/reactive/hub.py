"""The subscription hub: one loop per node that turns commits into Transitions.

Each iteration opens one ``REPEATABLE READ READ ONLY`` snapshot and learns exactly which commits it holds
that the previous snapshot did not (the commit log rows with ``NOT pg_visible_in_snapshot(xid, previous)``).
Their written index keys are matched against the invalidation index; the affected query instances, plus any
newly added ones, are re-run in that same snapshot; every session whose queries changed, whose query set or
identity changed, or whose mutation completed gets one Transition stamped with the snapshot's timestamp.
So all results in a Transition come from one snapshot, and a mutation's Transition already holds its writes.

Identical (function, args, identity) subscriptions share one ``QueryInstance``: one re-run, one encoding of
the result, fanned out to every subscriber.

One socket's request can never cost another socket its work: arguments are checked for depth in the
socket's own task, and a failure resolving or validating them (``prepare``) fails only that query; each
request is applied on its own, and a failure while applying or sending closes only that socket; a large
query-set change is applied in slices of ``knobs.HUB_QUERIES_PER_PASS`` between other sockets' work; a
Transition larger than ``knobs.MAX_TRANSITION_BYTES`` goes out as ``TransitionChunk`` frames, which clients
join before applying (so it is still one snapshot, all or nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import msgspec

from .. import calllog, knobs
from ..db import decode_keys
from ..errors import AppError, BackendError, LimitExceeded
from ..failures import public_message, report
from ..logs import engine_logger
from ..postgres import CONNECTION_LOST, init_connection
from ..registry import FunctionSpec
from ..values import encode_error_data
from .clock import HybridClock
from .invalidation import InvalidationIndex

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["CHANNEL", "Hub", "QueryCall", "QueryInstance", "Subscriber", "is_refusal_key", "refusal_key"]

log = engine_logger("backend.hub")

CHANNEL = "backend_commits"
#: Payloads on ``CHANNEL`` besides a commit's (empty) one: a node that starts listening asks who else listens
#: (``hello``), the others answer (``here``), and every node says ``here`` again each poll period.
HELLO, HERE = "hello", "here"
#: Seconds between prunings of old commit-log rows, and rows deleted per statement (small deletes keep
#: locks and WAL bursts short; see docs/design.md "Pruning").
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 1000
_PRUNE_MAX_BATCHES = 100_000  # per round: keep going while batches come back full
QueryKey = tuple[str, bytes, str | None]
#: Bytes of a Transition besides its modifications (versions, type, brackets), with room to spare.
_ENVELOPE_BYTES = 1024
#: Each pass's transaction: one snapshot for the commit-log read and every re-run (see ``Hub._end_pass``).
_BEGIN_PASS = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
#: Query ops each pending request may apply in a pass even when the pass's budget is spent, so a client
#: adding one query is not queued behind another client's thousands.
_MIN_OPS_PER_REQUEST = 8


class SessionLink(Protocol):
    """What the hub needs from a socket: queue a frame (False when the client is too far behind), close."""

    def enqueue(self, frame: bytes, *, transition: bool) -> bool: ...

    def enqueue_batch(self, frames: Sequence[bytes]) -> bool:
        """Queue ``frames`` in order, the last of them a Transition (False when the client is too far behind)."""

    def overloaded(self) -> None: ...

    def fail(self) -> None:
        """The hub could not apply or send something for this socket: close it (the client reconnects)."""


def refusal_key(reason: str) -> bytes:
    """The instance key part of a subscription refused before its arguments could be encoded (``!`` and why):
    never valid JSON, so it cannot collide with real arguments."""
    return b"!" + reason.encode()[:200]


def is_refusal_key(args_key: bytes) -> bool:
    return args_key.startswith(b"!")


@dataclass(eq=False, slots=True)
class QueryCall:
    """A subscription's function and arguments, resolved and validated (``Hub.prepare``): ``spec`` is None
    when they were refused, and ``error`` says why."""

    path: str
    args_key: bytes  # the arguments' canonical encoding: part of the instance key
    spec: FunctionSpec | None
    kwargs: dict[str, Any]
    error: BaseException | None = None


@dataclass(eq=False)
class QueryInstance:
    key: QueryKey
    call: QueryCall
    identity: Any | None
    subscribers: set[tuple[Subscriber, int]] = field(default_factory=set)
    modification: bytes | None = None  # encoded QueryUpdated/QueryFailed body minus queryId
    digest: bytes = b""
    runs: int = 0
    changed_now: bool = False

    @property
    def spec(self) -> FunctionSpec | None:
        return self.call.spec


@dataclass(eq=False)
class Subscriber:
    """The hub's view of one socket's query set."""

    link: SessionLink
    chunked: bool = False  # the client joins TransitionChunk frames
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
    applying: bool = False  # a query-set change is part applied: its Transition waits until all of it is

    @property
    def identity_key(self) -> str | None:
        return None if self.identity is None else str(self.identity.token_identifier)


#: One query-set operation, in message order: (query id, what to subscribe it to, or None to remove it). A
#: (path, args) pair is prepared when the op is applied, so a large change's validation is sliced with it.
QueryOp = tuple[int, QueryCall | tuple[str, Any] | None]


@dataclass
class _Request:
    sub: Subscriber
    query_set: int | None = None
    ops: list[QueryOp] = field(default_factory=list)
    identity: tuple[Any | None, int] | None = None
    completion: Callable[[int], bytes] | None = None
    started: bool = False
    done: int = 0  # ops applied so far (a large change is applied over several passes)


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
        self._announce: str | None = None  # a presence payload to send with the next NOTIFY round
        self._peers_until = 0.0  # another node was heard recently enough to be listening until then
        self._next_here = 0.0  # when this node next says it is here
        self._signal_lock = asyncio.Lock()
        self._snapshot: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._persist_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._snapshot_at = time.monotonic()  # when self._snapshot was taken
        self._persisted = 0
        self.stats = {"passes": 0, "snapshots": 0, "reruns": 0, "commits": 0, "transitions": 0, "wakeups_sent": 0}
        self.last_ts = 0
        self._carry_dirty: set[QueryInstance] = set()
        self._carry_touched: set[Subscriber] = set()
        self._applied = False
        self._careful = False
        self._reload = False
        self._begun = False  # self._conn sits in a begun transaction with no snapshot yet (see _end_pass)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._conn = await self._connect()
        await self._open_signal_connections()
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

    def _on_notify(self, _conn: Any, pid: int, _channel: str, payload: object) -> None:
        # This node's own NOTIFY follows commits poke_local already woke the loop for: skip the extra pass.
        if self._notifier is not None and pid == self._notifier.get_server_pid():
            return
        self._peers_until = time.monotonic() + _peer_seconds()
        if payload == HELLO:  # a node just started listening: tell it this one is here, so it wakes us too
            self._announce = HERE
            self._tell_other_nodes()
        if payload in (HELLO, HERE):
            return
        self._wake.set()

    def poke_local(self) -> None:
        """A local commit happened: process it now, and tell the other nodes (coalesced) once this node's
        pass has sent its Transitions, so the NOTIFY's round trip does not compete with the local pass."""
        self._wake.set()
        self._notify_pending = True

    def _tell_other_nodes(self) -> None:
        """Start the NOTIFY round if one is owed. Commits are announced only while another node has been
        heard: alone on its database a node sends no NOTIFY at all. A node that starts later asks who is
        there (its first pass starts from a fresh snapshot, so it misses nothing meanwhile)."""
        if self._notify_pending and time.monotonic() >= self._peers_until:
            self._notify_pending = False  # no one else listens
        if (self._notify_pending or self._announce) and (self._notify_task is None or self._notify_task.done()):
            self._notify_task = asyncio.get_running_loop().create_task(self._notify())

    def _say_here_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_here:
            self._next_here = now + _poll_seconds()
            self._announce = self._announce or HERE
            self._tell_other_nodes()

    async def _notify(self) -> None:
        """One NOTIFY in flight at a time; commits that land meanwhile share the next one. A notifier lost with
        its server is re-opened once and the NOTIFY sent again; failing that, other nodes learn of the commit
        at their next poll (nothing is lost: they read the commit log)."""
        for attempt in range(2):
            announce, commits = None, False
            try:
                while self._notify_pending or self._announce:
                    if self._notifier is None or self._notifier.is_closed():
                        await self._open_signal_connections()
                    assert self._notifier is not None
                    announce, self._announce = self._announce, None
                    commits, self._notify_pending = self._notify_pending, False
                    if announce is not None:
                        await self._notifier.execute(f"NOTIFY {CHANNEL}, '{announce}'")
                        announce = None
                    if commits:
                        await self._notifier.execute(f"NOTIFY {CHANNEL}")
                        self.stats["wakeups_sent"] += 1
                        commits = False
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                self._notify_pending = self._notify_pending or commits
                self._announce = self._announce or announce
                if attempt == 1:
                    log.warning("commit wake-up failed (%s); other nodes will see the commit at their next poll",
                                type(error).__name__)
                    self._notify_pending = False
                    self._announce = None

    # -- requests from sessions --------------------------------------------------------------------------

    def connect(self, link: SessionLink, *, chunked: bool = False) -> Subscriber:
        sub = Subscriber(link, chunked=chunked)
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

    def prepare(self, path: str, args: Any) -> QueryCall:
        """Resolve and validate one subscription's function and arguments. Whatever a client's arguments do
        to decoding and validation is caught here and fails that query alone."""
        runner = self.backend.runner
        args_key = b""
        try:
            args_key = msgspec.json.encode(args)
            spec = runner.resolve(path, "query", allow_internal=False)
            return QueryCall(path, args_key, spec, runner.validate_args(spec, args))
        except BackendError as error:
            return QueryCall(path, args_key or refusal_key(error.message), None, {}, error)
        except Exception as error:  # a bug in decoding or validation: this query fails, nothing else does
            log.exception("preparing live query %s failed", path[:200])
            return QueryCall(path, args_key or refusal_key(type(error).__name__), None, {}, error)

    @staticmethod
    def refused(path: str, error: BackendError) -> QueryCall:
        """A subscription refused before ``prepare`` (its arguments broke a limit): it fails with ``error``."""
        return QueryCall(path, refusal_key(error.message), None, {}, error)

    def modify(self, sub: Subscriber, new_version: int, ops: list[QueryOp]) -> None:
        """Apply a ModifyQuerySet's operations in message order (an id may be added, removed and re-added)."""
        self._push(_Request(sub, query_set=new_version, ops=ops))

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
        call = instance.call
        if is_refusal_key(call.args_key):  # refused before it was prepared: new code cannot change that
            return
        instance.call = self.prepare(call.path, msgspec.json.decode(call.args_key))
        if instance.call.spec is None:
            instance.modification = _refused_body(instance.call)

    def _push(self, request: _Request) -> None:
        self._requests.append(request)
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        calllog.source.set("ws")
        while True:
            # While a wake-up connection is down, come back soon to re-open it rather than at the slow poll.
            timeout = _poll_seconds() if self._signals_up() else knobs.SCHEDULER_POLL_SECONDS * 0.25
            self._say_here_when_due()
            if not self._wake.is_set():
                # A timeout scope, not wait_for: no task per wait, and no extra loop turn before the pass.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self._iteration()
                self._careful = False
            except asyncio.CancelledError:
                raise
            except _SnapshotAborted:
                self._tell_other_nodes()
                self._careful = True  # redo the pass at once, one savepoint per query
                self._wake.set()
            except Exception:
                self._tell_other_nodes()
                log.exception("hub iteration failed; retrying")
                await asyncio.sleep(0.05)
                self._wake.set()

    def _signals_up(self) -> bool:
        return not (self._listener is None or self._listener.is_closed()
                    or self._notifier is None or self._notifier.is_closed())

    def _on_signal_lost(self, _conn: Any) -> None:
        """A wake-up connection ended (a PostgreSQL restart, a terminated backend): re-open it now."""
        self._wake.set()

    async def _open_signal_connections(self) -> None:
        """(Re)open the wake-up connections: LISTEN for other nodes' commits, and one to NOTIFY them of ours.
        A connection lost with its server (a restart, a terminated backend) is re-opened on the next pass;
        commits missed meanwhile are not lost, since each pass reads the commit log, not the notifications."""
        async with self._signal_lock:  # the loop and a NOTIFY may both find a connection gone
            await self._reopen_signal_connections()

    async def _reopen_signal_connections(self) -> None:
        url = self.backend.url
        if self._notifier is None or self._notifier.is_closed():
            self._notifier = None
            notifier = await asyncpg.connect(url)
            await notifier.execute("SET synchronous_commit = off")
            notifier.add_termination_listener(self._on_signal_lost)
            self._notifier = notifier
        if self._listener is None or self._listener.is_closed():
            self._listener = None
            listener = await asyncpg.connect(url)
            await listener.add_listener(CHANNEL, self._on_notify)
            listener.add_termination_listener(self._on_signal_lost)
            self._listener = listener
            self._wake.set()  # catch up on whatever was notified while no one listened
            self._announce = HELLO  # ask who else listens (sent by the next NOTIFY round, which the pass starts)
            self._next_here = time.monotonic() + _poll_seconds()

    async def _iteration(self) -> None:
        if not self._signals_up():
            try:
                await self._open_signal_connections()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                # Not fatal: the pass below still reads the commit log, and the next one tries again.
                log.warning("re-opening the hub's wake-up connections failed: %s", error)
        self.stats["passes"] += 1
        requests, self._requests = self._requests, []
        dirty: set[QueryInstance] = self._carry_dirty
        touched: set[Subscriber] = self._carry_touched
        self._carry_dirty, self._carry_touched = set(), set()
        conn: asyncpg.Connection | None = None
        self._applied = False  # until the requests are applied, a failure (even reconnecting) gives them back
        try:
            if self._needs_snapshot(requests):
                conn = await self._pass_connection()
                await self._snapshot_and_run(conn, requests, dirty, touched)
            else:
                self._without_snapshot(requests, dirty, touched)
        except BaseException as error:
            if conn is not None and _connection_broken(error):
                self._conn, self._begun = None, False
                conn.terminate()  # the next pass connects afresh
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
            if sub.holds > 0 or sub.applying:
                # Sent once its in-flight mutation's response is queued, or its query-set change is all in.
                self._carry_touched.add(sub)
                continue
            try:
                self._send_transition(sub, ts)
            except Exception:  # one socket's bad frame must not stop the others' Transitions
                log.exception("sending a transition failed; closing that socket")
                self._fail(sub)
        self._tell_other_nodes()
        if conn is not None:
            await self._end_pass(conn)

    def _needs_snapshot(self, requests: list[_Request]) -> bool:
        """False when nothing on this node is live and no request adds a query: then no commit can change a
        result here, and the pass only answers completions and version bumps, without PostgreSQL."""
        return bool(self.instances or self._reload or any(r.ops or r.identity for r in requests))

    def _without_snapshot(self, requests: list[_Request], dirty: set[QueryInstance], touched: set[Subscriber]) -> None:
        """A pass with no live query: forget the snapshot baseline (no commit since matters here), so the next
        pass that needs one starts from its own snapshot instead of reading the commits in between."""
        self._snapshot = None
        self._snapshot_at = time.monotonic()
        self._applied = True
        self._apply_requests(requests, dirty, touched)

    async def _pass_connection(self) -> asyncpg.Connection:
        """The hub's connection, inside a ``REPEATABLE READ READ ONLY`` transaction that has not yet taken its
        snapshot. Normally the previous pass left it so (``_end_pass``); else it is begun here."""
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = conn = await self._connect()
            self._begun = False
        if not self._begun:
            # A pass that failed may have left its transaction open (or aborted).
            await conn.execute(("ROLLBACK; " if conn.is_in_transaction() else "") + _BEGIN_PASS)
        self._begun = False
        return conn

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.backend.url)
        await init_connection(conn)
        # Waiting between passes in a begun transaction is normal here (see _end_pass), never a leak.
        await conn.execute("SET plan_cache_mode = force_custom_plan; SET idle_in_transaction_session_timeout = 0")
        return conn

    async def _end_pass(self, conn: asyncpg.Connection) -> None:
        """Close this pass's read-only transaction and begin the next one in the same message. Sent after the
        Transitions, so it is not on the path from a commit to its subscribers; and a begun transaction takes
        no snapshot until its first statement, so it holds back nothing while the hub waits."""
        await conn.execute("COMMIT; " + _BEGIN_PASS)
        self._begun = True

    async def _snapshot_and_run(
        self,
        conn: asyncpg.Connection,
        requests: list[_Request],
        dirty: set[QueryInstance],
        touched: set[Subscriber],
    ) -> None:
        # The transaction is begun by _pass_connection and ended by _end_pass, after the Transitions are out.
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
        self._apply_requests(requests, dirty, touched)
        for instance in dirty:
            if instance.subscribers:
                await self._run(conn, instance)

    def _apply_requests(
        self, requests: list[_Request], dirty: set[QueryInstance], touched: set[Subscriber]
    ) -> None:
        """Apply each request on its own, in order per socket. A request whose socket's earlier request is
        still part applied waits for it; a failure affects only the failing request's socket; what is left
        of a large change goes back to the front of the queue for the next pass."""
        budget = knobs.HUB_QUERIES_PER_PASS
        waiting: list[_Request] = []
        blocked: set[Subscriber] = set()
        for request in requests:
            sub = request.sub
            if sub.closed:
                continue
            if sub in blocked:
                waiting.append(request)
                continue
            quota = max(budget, _MIN_OPS_PER_REQUEST)
            try:
                used = self._apply(request, dirty, touched, quota)
            except Exception:
                log.exception("applying a request failed; closing that socket")
                self._fail(sub)
                continue
            budget = max(0, budget - used)
            sub.applying = request.done < len(request.ops)
            if sub.applying:
                waiting.append(request)
                blocked.add(sub)
        if waiting:
            self._requests[:0] = waiting
            self._wake.set()

    def _apply(self, request: _Request, dirty: set[QueryInstance], touched: set[Subscriber], quota: int) -> int:
        """Apply ``request`` (at most ``quota`` of its query ops); returns the ops applied."""
        sub = request.sub
        touched.add(sub)
        if not request.started:
            request.started = True
            if request.completion is not None:
                sub.completions.append(request.completion)
                sub.holds = max(0, sub.holds - 1)
            if request.identity is not None:
                identity, version = request.identity
                sub.identity = identity
                sub.target_identity = version
                # Every query is subscribed again under the new identity (in slices, like any large change).
                request.ops = [(query_id, instance.call) for query_id, instance in sub.queries.items()]
            if request.query_set is not None:
                sub.target_query_set = request.query_set
        end = min(len(request.ops), request.done + quota)
        for query_id, call in request.ops[request.done:end]:
            if call is None:
                if self._unsubscribe(sub, query_id):
                    sub.removed.append(query_id)
                sub.changed.discard(query_id)
            elif request.identity is not None:
                if query_id in sub.queries and isinstance(call, QueryCall):  # not removed meanwhile
                    self._subscribe(sub, query_id, call, dirty, identity_change=True)
            else:
                self._subscribe(sub, query_id, call if isinstance(call, QueryCall) else self.prepare(*call), dirty)
        used = end - request.done
        request.done = end
        if request.done == len(request.ops):
            request.ops = []
            request.done = 0
        return used

    def _fail(self, sub: Subscriber) -> None:
        """Something about this socket cannot be applied or sent: release its queries and close it."""
        self.disconnect(sub)
        with contextlib.suppress(Exception):
            sub.link.fail()

    def _subscribe(
        self, sub: Subscriber, query_id: int, call: QueryCall, dirty: set[QueryInstance], *, identity_change: bool = False
    ) -> None:
        key: QueryKey = (call.path, call.args_key, sub.identity_key)
        old = sub.queries.get(query_id)
        if old is not None:
            if old.key == key and identity_change:
                return  # the same identity again: the client already holds this result
            self._unsubscribe(sub, query_id)  # never orphan the instance the id pointed at
        instance = self.instances.get(key)
        if instance is None:
            instance = QueryInstance(key, call, sub.identity)
            instance.changed_now = True
            if call.spec is None:
                instance.modification = _refused_body(call)
            self.instances[key] = instance
            dirty.add(instance)
        instance.subscribers.add((sub, query_id))
        sub.queries[query_id] = instance
        sub.changed.add(query_id)

    def _unsubscribe(self, sub: Subscriber, query_id: int) -> bool:
        """Drop one subscription (False if there was none); the last subscriber takes the instance with it."""
        instance = sub.queries.pop(query_id, None)
        if instance is None:
            return False
        instance.subscribers.discard((sub, query_id))
        if not instance.subscribers and self.instances.get(instance.key) is instance:
            del self.instances[instance.key]
            self.index.remove(instance.key)
        return True

    def check_invariants(self) -> None:
        """Raise AssertionError unless every instance is owned by live subscriptions that point back at it,
        every subscription's instance is the live one for its key, and the index holds only live instances.
        For tests; O(subscriptions)."""
        for key, instance in self.instances.items():
            assert instance.key == key, f"instance filed under {key!r} has key {instance.key!r}"
            assert instance.subscribers, f"instance {key!r} has no subscribers"
            for sub, query_id in instance.subscribers:
                assert not sub.closed and sub in self.subscribers, f"instance {key!r} is held by a closed socket"
                assert sub.queries.get(query_id) is instance, f"instance {key!r}: query {query_id} points elsewhere"
        for sub in self.subscribers:
            assert not sub.closed, "a closed socket is still subscribed"
            for query_id, instance in sub.queries.items():
                assert self.instances.get(instance.key) is instance, f"query {query_id} holds a dropped instance"
                assert (sub, query_id) in instance.subscribers, f"query {query_id} is missing from its instance"
        stray = [owner for owner in self.index._owned if owner not in self.instances]
        assert not stray, f"the invalidation index holds {len(stray)} dropped instances, e.g. {stray[0]!r}"

    async def _run(self, conn: asyncpg.Connection, instance: QueryInstance) -> None:
        spec = instance.call.spec
        if spec is None:
            instance.runs += 1
            digest = hashlib.blake2b(instance.modification or b"", digest_size=16).digest()
            instance.changed_now = digest != instance.digest or instance.runs == 1
            instance.digest = digest
            return
        self.stats["reruns"] += 1
        instance.runs += 1
        # Queries run without savepoints (two round trips each) until one fails inside PostgreSQL; that
        # aborts the snapshot, so the whole pass is redone with a savepoint around every query.
        careful = self._careful
        if careful:
            await conn.execute("SAVEPOINT live_query")
        try:
            outcome = await self.backend.runner.execute_query(conn, spec, instance.call.kwargs, instance.identity)
        except Exception as error:  # refused before the body ran, or the engine failed around it
            if careful:
                await conn.execute("ROLLBACK TO SAVEPOINT live_query")
            elif _from_database(error):
                raise _SnapshotAborted from error
            if not isinstance(error, BackendError):
                report(error, f"live query {instance.key[0]}")
            body = _failed_body(error, [])
            if self.instances.get(instance.key) is instance:
                self.index.remove(instance.key)
        else:
            if careful:
                await conn.execute("ROLLBACK TO SAVEPOINT live_query" if outcome.error is not None
                                   else "RELEASE SAVEPOINT live_query")
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
        if len(body) > _max_modification_bytes():
            # A result that cannot fit in one Transition fails on its own; the socket's other queries go on.
            body = _failed_body(LimitExceeded(
                f"{instance.key[0]}: result of {len(body)} bytes is larger than a Transition may be "
                f"({knobs.MAX_TRANSITION_BYTES} bytes, BACKEND_MAX_TRANSITION_BYTES)"), [])
        digest = hashlib.blake2b(body, digest_size=16).digest()
        instance.changed_now = digest != instance.digest or instance.runs == 1
        instance.digest = digest
        instance.modification = body

    def _send_transition(self, sub: Subscriber, ts: int) -> None:
        # Built by concatenation from bodies encoded once per query instance: this runs once per socket.
        from ..sync.protocol import query_modification, query_removed

        mods = [query_removed(q) for q in sub.removed]
        for query_id in sorted(sub.changed):
            instance = sub.queries.get(query_id)
            if instance is None or instance.modification is None:
                continue
            mods.append(query_modification(instance.modification, query_id))
        sub.removed.clear()
        sub.changed.clear()
        new_ts = max(ts, sub.ts)
        # The mutation responses first, then the Transition that completes them (the client resolves a
        # mutation at a Transition past its commit), all in one batch: a single write when the socket takes it.
        frames = [completion(new_ts) for completion in sub.completions]
        sub.completions.clear()
        frames += _transition_frames((sub.query_set, sub.identity_version, sub.ts),
                                     (sub.target_query_set, sub.target_identity, new_ts), mods, chunked=sub.chunked)
        sub.query_set, sub.identity_version, sub.ts = sub.target_query_set, sub.target_identity, new_ts
        self.stats["transitions"] += 1
        # Only the last frame counts against the socket's pending Transitions: the chunks are one update.
        if not sub.link.enqueue_batch(frames):
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


def _poll_seconds() -> float:
    """How long the hub waits for a wake-up before it looks at the commit log anyway."""
    return knobs.SCHEDULER_POLL_SECONDS * 5


def _peer_seconds() -> float:
    """How long a node heard from counts as listening: three of its ``here`` periods."""
    return 3 * _poll_seconds()


def _from_database(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _connection_broken(error: BaseException) -> bool:
    """Whether ``error`` leaves the hub's connection unusable (lost, or its protocol out of step with the
    server, as when a terminated backend's last message arrives mid-pass): then it is replaced, not reused."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (*CONNECTION_LOST, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _max_modification_bytes() -> int:
    """The largest encoded query result (``QueryUpdated`` body) that fits in one Transition."""
    return knobs.MAX_TRANSITION_BYTES - _ENVELOPE_BYTES


def _transition_frames(
    start: tuple[int, int, int], end: tuple[int, int, int], mods: list[bytes], *, chunked: bool
) -> list[bytes]:
    """One Transition ``start → end``; when it exceeds ``MAX_TRANSITION_BYTES``, its ``TransitionChunk`` parts
    for clients that join them, else consecutive Transitions (``_split_transition``)."""
    from ..sync.protocol import transition, transition_chunks

    frame = transition(start, end, mods)
    if len(frame) <= knobs.MAX_TRANSITION_BYTES:
        return [frame]
    if not chunked:
        return _split_transition(start, end, mods)
    return transition_chunks(frame, f"{end[2]}-{next(_transition_ids)}", knobs.MAX_TRANSITION_BYTES)


def _split_transition(start: tuple[int, int, int], end: tuple[int, int, int], mods: list[bytes]) -> list[bytes]:
    """For clients without TransitionChunk: consecutive Transitions, each part but the last staying at
    ``start`` (same query set, identity and ts, so no mutation resolves and no query-set change is confirmed
    early) and the last moving to ``end``. Between parts such a client may briefly hold results of two
    snapshots; chunking clients never do."""
    from ..sync.protocol import transition

    budget = _max_modification_bytes()
    parts: list[list[bytes]] = [[]]
    size = 0
    for mod in mods:
        if parts[-1] and size + len(mod) + 1 > budget:
            parts.append([])
            size = 0
        parts[-1].append(mod)
        size += len(mod) + 1
    frames = [transition(start, start, part) for part in parts[:-1]]
    frames.append(transition(start, end, parts[-1]))
    return frames


_transition_ids = itertools.count()


def _refused_body(call: QueryCall) -> bytes:
    """The QueryFailed body of a subscription refused before it ran (its function or arguments)."""
    return _failed_body(call.error or BackendError("query refused"), [])


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
