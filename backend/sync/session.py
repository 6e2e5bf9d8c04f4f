"""One WebSocket speaking the sync protocol: an explicit state machine in front of the hub.

States: ``AWAITING_CONNECT`` → ``CONNECTED`` → ``CLOSED``. Client messages are handled in order by the
socket's own task (the one the server runs the connection in); mutations run one after another (a client's
mutations commit in the order it sent them); actions run concurrently. Outgoing frames are written at once
while the socket takes them (see ``sending``) and queue, bounded, only behind a send that has to wait: a
client that lets more than ``knobs.MAX_PENDING_TRANSITIONS`` Transitions pile up is disconnected with a
close reason the official client backs off on, so a slow reader can never grow server memory without bound.

An idle session holds no task, timer or queue of its own beyond the socket's: tens of thousands of them
must fit in a small server.

What a client sends is bounded here, before the hub sees it (``inbound``): a frame too deeply nested to
decode is a FatalError; arguments nested deeper than ``knobs.MAX_VALUE_DEPTH`` fail that query, mutation
or action; queued and running requests hold their frame's bytes in the process-wide inbound budget.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import re
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .. import calllog, knobs
from ..auth._identity import format_time
from ..errors import BackendError, InvalidRequest, Overloaded, Unavailable
from ..failures import report
from ..logs import engine_logger
from ..registry import canonical_path
from ..runner import Outcome
from . import protocol as p
from .inbound import INBOUND, check_depth
from .sending import NO_FRAMES, Outbox, finish, keepalive, step

if TYPE_CHECKING:
    from ..db import Txn
    from ..reactive.hub import QueryOp, Subscriber
    from ..server import Backend

__all__ = ["SessionState", "SyncSession", "Transport"]

log = engine_logger("backend.sync")

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CLOSE_TIMEOUT_SECONDS = 10.0


class SessionState(enum.Enum):
    AWAITING_CONNECT = "awaiting_connect"
    CONNECTED = "connected"
    CLOSED = "closed"


class Transport:
    """The socket operations a session needs (the server's ASGI ``receive``/``send`` in production)."""

    __slots__ = ()

    async def receive(self) -> str | None:  # None: the client went away
        raise NotImplementedError

    async def send(self, frame: bytes) -> None:
        """Write one text frame. The session runs it by hand up to its first suspension, from whichever task
        or callback produced the frame (see ``sending``): it must not rely on running inside a task."""
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def write_now(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` in order without waiting, in as few system calls as the transport can; False, with
        nothing written, when that cannot be done now (then each goes through ``send``)."""
        return False


class _Closed(Exception):
    pass


class SyncSession:
    """Fields: ``session_id`` (from Connect), ``received_query_set`` / ``received_identity`` (versions the
    client has sent us), ``identity`` (verified user or None), ``sub`` (the hub's view of our query set)."""

    __slots__ = (
        "_abandon", "_broken", "_close_reason", "_expiry", "_inflight", "_last_sent", "_mutation_task", "_mutations",
        "_outbox", "_pending_ids", "_pending_transitions", "_queued_bytes", "_reading", "_stop_requested", "_task", "_tasks",
        "_writer", "backend", "chunked_transitions", "fresh_session", "identity", "received_identity",
        "received_query_set", "session_id", "state", "sub", "transport",
    )

    def __init__(self, backend: Backend, transport: Transport, *, chunked_transitions: bool = False) -> None:
        self.backend = backend
        self.transport = transport
        #: The client joins TransitionChunk frames (a large Transition then stays one all-or-nothing update).
        self.chunked_transitions = chunked_transitions
        self.state = SessionState.AWAITING_CONNECT
        self.session_id = ""
        self.fresh_session = False
        self.received_query_set = 0
        self.received_identity = 0
        self.identity: Any | None = None
        self.sub: Subscriber | None = None
        self._outbox: Outbox = NO_FRAMES  # frames behind a send that waits for the socket; an Outbox of its own then
        self._pending_transitions = 0  # Transitions in the outbox
        self._queued_bytes = 0  # bytes in the outbox
        self._writer: asyncio.Task[None] | None = None  # exists only while a send waits for the socket
        self._broken = False  # a send failed: the socket is gone, nothing more is written
        self._last_sent = time.monotonic()
        # Each request carries the identity in force when it arrived, so a later Authenticate cannot change it.
        # ... and the bytes of its frame, held in the process's inbound budget until the request is finished.
        self._mutations: collections.deque[tuple[p.Mutation, Any | None, int]] | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] | None = None  # running actions
        self._close_reason: tuple[int, str] | None = None
        self._pending_ids: set[int] = set()  # the query set as the client has defined it so far
        self._task: asyncio.Task[Any] | None = None  # the task reading the socket (runs ``run``)
        self._reading = False
        self._stop_requested = False  # we cancelled the reading task to end the session
        self._mutation_task: asyncio.Task[None] | None = None  # runs while mutations wait: most sessions send none
        self._abandon = False  # closing because the client is too slow: drop queued frames, do not drain
        self._expiry: asyncio.TimerHandle | None = None  # fires when the current identity's token expires

    # -- SessionLink (called by the hub) -------------------------------------------------------------------

    def enqueue(self, frame: bytes, *, transition: bool) -> bool:
        if self.state is SessionState.CLOSED:
            return True
        if self._writer is None:  # nothing waits ahead of this frame: write it now
            self._send(frame)
            return True
        if transition and self._pending_transitions >= knobs.MAX_PENDING_TRANSITIONS:
            return False
        if (len(self._outbox) >= knobs.MAX_PENDING_TRANSITIONS + knobs.MAX_INFLIGHT_REQUESTS
                or self._queued_bytes + len(frame) > knobs.MAX_QUEUED_BYTES):
            # Responses pile up too, or large results do: the client is not reading (fast enough).
            self.overloaded()
            return False
        self._queue(frame, transition)
        return True

    def enqueue_batch(self, frames: Sequence[bytes]) -> bool:
        """Queue ``frames`` in order, the last a Transition and the ones before it mutation responses or
        chunks of it. When the socket takes data now they go out in one write (one system call for a
        mutation's response and the Transition that completes it)."""
        if self.state is SessionState.CLOSED:
            return True
        if self._writer is None and not self._broken:
            try:
                written = self.transport.write_now(frames)
            except Exception:
                self._send_failed()
                return True
            if written:
                self._last_sent = time.monotonic()
                return True
        last = len(frames) - 1
        return all(self.enqueue(frame, transition=number == last) for number, frame in enumerate(frames))

    def overloaded(self) -> None:
        """Cut the client off now: forget its subscriptions and queued frames, then close with a reason the
        official client backs off on. Waiting for the writer would wait for the very client that is not reading."""
        self._abandon = True
        self._drop_queued()  # released now, not when the close completes
        self._begin_close(1013, "TooManyConcurrentRequests: the client is not reading transitions fast enough")
        self._stop_reading()

    def fail(self) -> None:
        """The hub could not apply or send something of this socket: close it; the client reconnects and
        rebuilds its state, and no other socket is affected."""
        self._begin_close(1011, "InternalServerError: the server could not apply a request of this socket")
        self._stop_reading()

    def _stop_reading(self) -> None:
        """End the reading task's wait for a client that may never send again (the session then closes)."""
        task = self._task
        if self._reading and not self._stop_requested and task is not None and task is not asyncio.current_task():
            self._stop_requested = True
            task.cancel()

    # -- writing -----------------------------------------------------------------------------------------

    def _push(self, frame: bytes) -> None:
        """A frame of the session's own (FatalError, AuthError, Ping): in order, without the hub's limits."""
        if self._writer is None:
            self._send(frame)
        else:
            self._queue(frame, False)

    def _queue(self, frame: bytes, transition: bool) -> None:
        if self._outbox is NO_FRAMES:
            self._outbox = Outbox()
        self._outbox.append((frame, transition))
        self._queued_bytes += len(frame)
        if transition:
            self._pending_transitions += 1

    def _drop_queued(self) -> None:
        """Release every queued frame now (the socket is being cut off or is gone)."""
        self._outbox.clear()
        self._pending_transitions = 0
        self._queued_bytes = 0

    def _send(self, frame: bytes) -> None:
        """Write ``frame`` now. A send that has to wait for the socket is finished by a writer task, and every
        frame after it queues until the writer has sent them all."""
        if self._broken:
            return
        self._last_sent = time.monotonic()
        try:
            if self.transport.write_now((frame,)):
                return
            send = self.transport.send(frame)
            done, waiting = step(send)
        except Exception:
            self._send_failed()
            return
        if not done:
            self._writer = asyncio.get_running_loop().create_task(self._write_rest(send, waiting), name="sync-writer")

    async def _write_rest(self, send: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await finish(send, waiting)
            while self._outbox:
                frame, transition = self._outbox.popleft()
                self._queued_bytes -= len(frame)
                if transition:
                    self._pending_transitions -= 1
                self._last_sent = time.monotonic()
                await self.transport.send(frame)
        except Exception:
            self._send_failed()
        finally:
            self._writer = None
            if not self._outbox:
                self._outbox = NO_FRAMES

    def _send_failed(self) -> None:
        """The socket is gone (or cannot be written): drop what is queued and end the session."""
        self._broken = True
        self._drop_queued()
        self._begin_close(1011, "InternalServerError: the socket could not be written")
        self._stop_reading()

    def ping_if_idle(self, quiet_since: float) -> None:
        """Called by the shared keepalive timer (``sending.Keepalive``) for a socket that may have gone quiet."""
        if self.state is not SessionState.CLOSED and self._writer is None and self._last_sent <= quiet_since:
            self._push(p.PING)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def drop(self, code: int = 1011, reason: str = "InternalServerError: connection dropped by the server") -> None:
        """Close the socket from the server side (shutdown, tests); the client reconnects."""
        self._begin_close(code, reason)
        self._stop_reading()

    async def run(self) -> None:
        """Read and handle the client's messages until either side ends the session, then close the socket.
        Runs in the connection's own task; the hub (overloaded) or the server (drop) end a session whose
        client sends nothing by cancelling that task's wait (``_stop_reading``)."""
        task = self._task = asyncio.current_task()
        assert task is not None
        calllog.source.set("ws")
        self.backend.sessions.add(self)
        pings = keepalive()
        pings.add(self)
        self._reading = True
        try:
            # Inline, and holding no message in a local: every idle session keeps this frame alive.
            while self.state is not SessionState.CLOSED and self._receive(await self.transport.receive()):
                pass
        except _Closed:
            pass
        except asyncio.CancelledError:
            if not self._stop_requested:
                raise
            task.uncancel()
        except Exception as error:
            log.error("sync session failed", exc_info=error)
            self._begin_close(1011, "InternalServerError")
        finally:
            self._reading = False
            pings.discard(self)
            if self._expiry is not None:
                self._expiry.cancel()
            self.backend.sessions.discard(self)
            self.state = SessionState.CLOSED
            if self.sub is not None:
                self.backend.hub.disconnect(self.sub)
            if self._mutation_task is not None:
                self._mutation_task.cancel()
            queued, self._mutations = self._mutations, None  # never run now: release their bytes
            INBOUND.give(sum(size for _message, _identity, size in queued or ()))
            for running in list(self._tasks or ()):
                running.cancel()
            writer = self._writer
            if writer is not None:
                if not self._abandon:  # let the frames already queued (a FatalError, say) go out first
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer, timeout=5)
                writer.cancel()
            self._drop_queued()  # release queued frames now, not when the close completes
            code, reason = self._close_reason or (1000, "")
            with contextlib.suppress(Exception):
                # The close frame waits behind unread data; a client that never reads is given up on.
                await asyncio.wait_for(self.transport.close(code, reason), timeout=_CLOSE_TIMEOUT_SECONDS)

    def _begin_close(self, code: int, reason: str) -> None:
        if self._close_reason is None:
            self._close_reason = (code, reason[:120])
        self.state = SessionState.CLOSED

    def _fatal(self, message: str) -> None:
        self._push(p.fatal_error(message))
        self._begin_close(1000, "")
        raise _Closed

    # -- reading -----------------------------------------------------------------------------------------

    def _receive(self, frame: str | None) -> bool:
        """Handle one client message; False when the client went away."""
        if frame is None:
            return False
        if len(frame) > knobs.MAX_MESSAGE_BYTES:
            self._fatal(f"message larger than {knobs.MAX_MESSAGE_BYTES} bytes")
        try:
            message = p.decode_client_message(frame)
        except p.ProtocolError as error:
            self._fatal(str(error))
        except RecursionError:
            self._fatal(f"invalid message: nested deeper than {knobs.MAX_VALUE_DEPTH} levels (BACKEND_MAX_VALUE_DEPTH)")
        self._handle(message, len(frame))
        return True

    def _handle(self, message: p.ClientMessage, size: int = 0) -> None:
        if self.state is SessionState.AWAITING_CONNECT:
            if not isinstance(message, p.Connect):
                self._fatal(f"expected Connect first, got {type(message).__name__}")
            self._connect(message)  # type: ignore[arg-type]
            return
        if isinstance(message, p.Connect):
            self._fatal("Connect sent twice on one socket")
        elif isinstance(message, p.ModifyQuerySet):
            self._check_identity()
            self._modify(message)
        elif isinstance(message, p.Mutation):
            self._check_identity()
            self._check_inflight()
            self._take_inbound(size)
            if self._mutations is None:
                self._mutations = collections.deque()
            self._mutations.append((message, self.identity, size))
            if self._mutation_task is None:
                self._mutation_task = asyncio.create_task(self._mutation_worker(), name="sync-mutations")
        elif isinstance(message, p.Action):
            self._check_identity()
            self._check_inflight()
            if self._tasks is None:
                self._tasks = set()
            self._take_inbound(size)
            task = asyncio.create_task(self._action(message, self.identity))
            task.add_done_callback(lambda _task: INBOUND.give(size))  # runs even if cancelled before it started
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(message, p.Authenticate):
            self._authenticate(message)
        # Event: telemetry only.

    def _take_inbound(self, size: int) -> None:
        """Hold a request's frame bytes in the process's inbound budget while it waits and runs."""
        if not INBOUND.take(size):
            self._begin_close(1013, "TooManyConcurrentRequests: the server is receiving too much data; retry later")
            raise _Closed

    def _check_inflight(self) -> None:
        if len(self._mutations or ()) + self._inflight >= knobs.MAX_INFLIGHT_REQUESTS:
            self._begin_close(1013, "TooManyConcurrentRequests: too many requests in flight")
            raise _Closed

    def _connect(self, message: p.Connect) -> None:
        if not _UUID.fullmatch(message.sessionId):
            # Stored mutation results are keyed by it: an unguessable UUID, as every official client sends.
            self._fatal("Connect.sessionId must be a UUID (8-4-4-4-12 hexadecimal digits)")
        self.session_id = message.sessionId.lower()
        # The session's first socket: no mutation of it can have been stored yet, so no replay lookup.
        self.fresh_session = message.connectionCount == 0 and message.lastCloseReason in (None, "InitialConnect")
        if message.maxObservedTimestamp:
            try:
                plausible = self.backend.hub.observe_timestamp(p.decode_ts(message.maxObservedTimestamp))
            except p.ProtocolError as error:
                self._fatal(str(error))
            if not plausible:
                # Like the real server: fail this socket (the client retries), never move our clock there.
                self._begin_close(1011, "InternalServerError: maxObservedTimestamp is ahead of this deployment")
                raise _Closed
        self.sub = self.backend.hub.connect(self, chunked=self.chunked_transitions)
        self.state = SessionState.CONNECTED

    def _modify(self, message: p.ModifyQuerySet) -> None:
        assert self.sub is not None
        if message.baseVersion != self.received_query_set:
            self._fatal(
                f"BaseVersionMismatch: ModifyQuerySet baseVersion {message.baseVersion} != {self.received_query_set}"
            )
        if message.newVersion <= message.baseVersion:
            self._fatal("ModifyQuerySet newVersion must be greater than baseVersion")
        # Checked and handed to the hub in message order (an id may be added, removed and added again in one
        # message); argument depth is checked here, in this socket's task. A refusal closes the socket before
        # the hub sees any of the message.
        hub = self.backend.hub
        live = set(self._pending_ids)
        ops: list[QueryOp] = []
        for mod in message.modifications:
            if isinstance(mod, p.Add):
                if mod.queryId in live:
                    self._fatal(f"query id {mod.queryId} is already in the query set")
                if len(mod.args) != 1:
                    self._fatal(f"query {mod.queryId}: args must be a one-element array")
                live.add(mod.queryId)
                try:
                    path = canonical_path(mod.udfPath)
                except InvalidRequest:
                    path = mod.udfPath
                try:
                    check_depth(mod.args[0])
                except BackendError as error:
                    ops.append((mod.queryId, hub.refused(path, error)))
                else:
                    ops.append((mod.queryId, (path, mod.args[0])))  # validated when the hub applies it
            else:
                if mod.queryId not in live:
                    self._fatal(f"query id {mod.queryId} is not in the query set")
                live.discard(mod.queryId)
                ops.append((mod.queryId, None))
        if len(live) > knobs.MAX_QUERIES_PER_SESSION:
            self._fatal(f"more than {knobs.MAX_QUERIES_PER_SESSION} queries on one socket")
        self._pending_ids = live
        self.received_query_set = message.newVersion
        hub.modify(self.sub, message.newVersion, ops)

    def _authenticate(self, message: p.Authenticate) -> None:
        assert self.sub is not None
        if message.baseVersion != self.received_identity:
            self._fatal(f"Authenticate baseVersion {message.baseVersion} != {self.received_identity}")
        identity: Any | None = None
        # baseVersion of a refused Authenticate: the identity version before it (docs/protocol.md §7). It equals
        # the last transitioned version unless an earlier Authenticate's Transition is still on its way; the
        # count we received keeps the client from discarding the error as stale in that race.
        if message.tokenType == "User":
            try:
                identity = self.backend.verify_token(message.value or "")
            except BackendError as error:
                self._auth_error(error.message, self.received_identity, attempted=True)
        elif message.tokenType == "Admin":
            self._auth_error("Unauthenticated: admin keys are not accepted", self.received_identity, attempted=True)
        self.identity = identity
        self._arm_expiry()
        self.received_identity += 1
        self.backend.hub.set_identity(self.sub, identity, self.received_identity)

    def _check_identity(self) -> None:
        """An identity whose token expired mid-session gets AuthError (not attempted) and the socket closes."""
        identity = self.identity
        if identity is None or not self.backend.verifier.is_expired(identity):
            return
        assert self.sub is not None
        expired = format_time(identity.expires_at) if identity.expires_at is not None else "an earlier time"
        self._auth_error(f"TokenExpired: token expired at {expired}", self.sub.identity_version, attempted=False)

    def _arm_expiry(self) -> None:
        """Subscriptions outlive tokens: when the identity expires, the session says so and closes even if the
        client sends nothing, so no query result reaches an expired token."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = getattr(self.identity, "expires_at", None)
        if expires is None:
            return
        delay = expires + self.backend.verifier.config.leeway_seconds - time.time()
        self._expiry = asyncio.get_running_loop().call_later(max(0.0, delay) + 0.01, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry = None
        if self.state is SessionState.CLOSED or self.identity is None:
            return
        if not self.backend.verifier.is_expired(self.identity):
            self._arm_expiry()  # the timer fired a little early
            return
        try:
            self._check_identity()
        except _Closed:
            self._stop_reading()

    def _auth_error(self, message: str, base_version: int, *, attempted: bool) -> NoReturn:
        """Send AuthError and close, as the real server does; the client re-authenticates on a new socket."""
        self._push(p.auth_error(message, base_version, attempted))
        self._begin_close(1000, "")
        raise _Closed

    # -- requests ----------------------------------------------------------------------------------------

    async def _mutation_worker(self) -> None:
        """Runs the queued mutations one by one, and ends when none is left (the next one starts it again)."""
        try:
            while self._mutations and self.state is not SessionState.CLOSED:  # closed: the client replays the rest
                message, identity, size = self._mutations.popleft()
                self._inflight += 1
                try:
                    await self._mutation(message, identity)
                finally:
                    self._inflight -= 1
                    INBOUND.give(size)
        finally:
            self._mutation_task = None
            if not self._mutations:
                self._mutations = None

    async def _mutation(self, message: p.Mutation, identity: Any | None) -> None:
        assert self.sub is not None
        sub = self.sub
        runner = self.backend.runner
        hub = self.backend.hub
        args = message.args[0] if len(message.args) == 1 else None
        held = False

        async def before_commit(_txn: Txn) -> None:
            # From here until the response is queued no Transition may go out on this socket: one could carry
            # this mutation's writes before its MutationResponse (the client would count an optimistic update
            # twice). Holding only from the commit on keeps a long mutation from freezing the socket's updates.
            nonlocal held
            if not held:
                held = True
                hub.hold(sub)

        try:
            if args is None:
                raise InvalidRequest("$.args: must be a one-element array")
            check_depth(args)
            spec = runner.resolve(message.udfPath, "mutation", False)
            outcome = await runner.execute_mutation(
                spec, runner.validate_args(spec, args), identity,
                session=(self.session_id, message.requestId),
                fresh_session=self.fresh_session,
                request_id=f"{self.session_id}:{message.requestId}",
                before_commit=before_commit,
            )
        except (Overloaded, Unavailable) as error:
            # No connection for it (the caller's share or the pool is busy): nothing was done. Close the socket
            # with a reason the client backs off on; it replays this and every later mutation when it reconnects.
            if held:
                hub.release(sub)
            self.drop(1013, f"TooManyConcurrentRequests: {error.message}")
            return
        except BackendError as error:
            outcome = Outcome(error=error)
        except asyncio.CancelledError:
            if held:
                hub.release(sub)
            raise
        except Exception as error:  # a bug or a lost database: answer it, keep serving later mutations
            report(error, f"mutation {message.udfPath}", expose=self.backend.config.dev)
            outcome = Outcome(error=error)
        # Every response, failures included, goes out through the hub followed by a Transition, as the real
        # server does: the Rust client completes a mutation that failed with errorData only at a Transition.
        if not held:  # failed before committing, or a replay answered from the stored result
            hub.hold(sub)  # the completion below releases exactly one hold
        done = asyncio.get_running_loop().create_future()

        def response(ts: int) -> bytes:
            if not done.done():
                done.set_result(ts)
            if outcome.error is not None:
                return p.mutation_failure(message.requestId, outcome.error, outcome.log_lines)
            return p.mutation_success(message.requestId, outcome.value, outcome.log_lines, ts)

        hub.complete(sub, response)
        await done

    async def _action(self, message: p.Action, identity: Any | None) -> None:
        runner = self.backend.runner
        self._inflight += 1
        try:
            if len(message.args) != 1:
                raise InvalidRequest("$.args: must be a one-element array")
            check_depth(message.args[0])
            outcome = await runner.action(message.udfPath, message.args[0], identity)
            frame = p.action_response(message.requestId, outcome.value, outcome.error, outcome.log_lines)
        except BackendError as error:
            frame = p.action_response(message.requestId, None, error, [])
        finally:
            self._inflight -= 1
        self.enqueue(frame, transition=False)
