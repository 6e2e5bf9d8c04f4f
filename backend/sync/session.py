"""One WebSocket speaking the sync protocol: an explicit state machine in front of the hub.

States: ``AWAITING_CONNECT`` → ``CONNECTED`` → ``CLOSED``. Client messages are handled in order by one reader
task; mutations run one after another (a client's mutations commit in the order it sent them); actions run
concurrently. Outgoing frames go through one bounded writer queue: a client that lets more than
``knobs.MAX_PENDING_TRANSITIONS`` Transitions pile up is disconnected with a close reason the official
client backs off on, so a slow reader can never grow server memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

from .. import knobs
from ..auth._identity import format_time
from ..errors import BackendError, InvalidRequest
from ..registry import canonical_path
from ..runner import Outcome
from . import protocol as p

if TYPE_CHECKING:
    from ..db import Txn
    from ..reactive.hub import Subscriber
    from ..server import Backend

__all__ = ["SessionState", "SyncSession", "Transport"]

log = logging.getLogger("backend.sync")

_MAX_SESSION_ID = 256
_CLOSE_TIMEOUT_SECONDS = 10.0


class SessionState(enum.Enum):
    AWAITING_CONNECT = "awaiting_connect"
    CONNECTED = "connected"
    CLOSED = "closed"


class Transport:
    """The socket operations a session needs (litestar's WebSocket in production)."""

    async def receive(self) -> str | None:  # None: the client went away
        raise NotImplementedError

    async def send(self, frame: bytes) -> None:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError


class _Closed(Exception):
    pass


class SyncSession:
    """Fields: ``session_id`` (from Connect), ``received_query_set`` / ``received_identity`` (versions the
    client has sent us), ``identity`` (verified user or None), ``sub`` (the hub's view of our query set)."""

    def __init__(self, backend: Backend, transport: Transport) -> None:
        self.backend = backend
        self.transport = transport
        self.state = SessionState.AWAITING_CONNECT
        self.session_id = ""
        self.fresh_session = False
        self.received_query_set = 0
        self.received_identity = 0
        self.identity: Any | None = None
        self.sub: Subscriber | None = None
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending_transitions = 0
        # Each request carries the identity in force when it arrived, so a later Authenticate cannot change it.
        self._mutations: asyncio.Queue[tuple[p.Mutation, Any | None]] = asyncio.Queue()
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_reason: tuple[int, str] | None = None
        self._last_sent = time.monotonic()
        self._pending_ids: set[int] = set()  # the query set as the client has defined it so far
        self._reader_task: asyncio.Task[None] | None = None
        self._mutation_task: asyncio.Task[None] | None = None  # started by the first mutation: most never send one
        self._abandon = False  # closing because the client is too slow: drop queued frames, do not drain
        self._expiry: asyncio.TimerHandle | None = None  # fires when the current identity's token expires

    # -- SessionLink (called by the hub) -------------------------------------------------------------------

    def enqueue(self, frame: bytes, *, transition: bool) -> bool:
        if self.state is SessionState.CLOSED:
            return True
        if transition:
            if self._pending_transitions >= knobs.MAX_PENDING_TRANSITIONS:
                return False
            self._pending_transitions += 1
            frame = b"T" + frame
        else:
            frame = b"-" + frame
        if self._outbox.qsize() >= knobs.MAX_PENDING_TRANSITIONS + knobs.MAX_INFLIGHT_REQUESTS:
            # Responses pile up too: the client is not reading at all.
            self.overloaded()
            return False
        self._outbox.put_nowait(frame)
        return True

    def overloaded(self) -> None:
        """Cut the client off now: forget its subscriptions and queued frames, then close with a reason the
        official client backs off on. Waiting for the writer would wait for the very client that is not reading."""
        self._abandon = True
        self._begin_close(1013, "TooManyConcurrentRequests: the client is not reading transitions fast enough")
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def drop(self, code: int = 1011, reason: str = "InternalServerError: connection dropped by the server") -> None:
        """Close the socket from the server side (shutdown, tests); the client reconnects."""
        self._begin_close(code, reason)
        self._stop_reading()

    async def run(self) -> None:
        self.backend.sessions.add(self)
        writer = asyncio.create_task(self._writer(), name="sync-writer")
        # The reader is a task of its own so the hub (overloaded) or the server (drop) can end the session
        # while the reader waits for a client that sends nothing.
        reader = self._reader_task = asyncio.create_task(self._reader(), name="sync-reader")
        try:
            await asyncio.wait({reader})
            error = None if reader.cancelled() else reader.exception()
            if error is not None and not isinstance(error, _Closed):
                log.error("sync session failed", exc_info=error)
                self._begin_close(1011, "InternalServerError")
        finally:
            reader.cancel()
            if self._expiry is not None:
                self._expiry.cancel()
            self.backend.sessions.discard(self)
            self.state = SessionState.CLOSED
            if self.sub is not None:
                self.backend.hub.disconnect(self.sub)
            if self._mutation_task is not None:
                self._mutation_task.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._abandon:
                writer.cancel()
            else:
                self._outbox.put_nowait(None)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer, timeout=5)
                writer.cancel()
            while not self._outbox.empty():  # release queued frames now, not when the close completes
                self._outbox.get_nowait()
            code, reason = self._close_reason or (1000, "")
            with contextlib.suppress(Exception):
                # The close frame waits behind unread data; a client that never reads is given up on.
                await asyncio.wait_for(self.transport.close(code, reason), timeout=_CLOSE_TIMEOUT_SECONDS)

    def _begin_close(self, code: int, reason: str) -> None:
        if self._close_reason is None:
            self._close_reason = (code, reason[:120])
        self.state = SessionState.CLOSED
        self._outbox.put_nowait(None)

    def _fatal(self, message: str) -> None:
        self._outbox.put_nowait(b"-" + p.fatal_error(message))
        self._begin_close(1000, "")
        raise _Closed

    async def _writer(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: no extra task per frame and none held by an idle session.
                async with asyncio.timeout(knobs.PING_INTERVAL_SECONDS):
                    frame = await self._outbox.get()
            except TimeoutError:
                frame = b"-" + p.PING
            if frame is None:
                # Drain what is already queued (a FatalError, say), then stop.
                while not self._outbox.empty():
                    rest = self._outbox.get_nowait()
                    if rest is not None:
                        await self.transport.send(rest[1:])
                return
            if frame[:1] == b"T":
                self._pending_transitions -= 1
            await self.transport.send(frame[1:])

    # -- reading -----------------------------------------------------------------------------------------

    async def _reader(self) -> None:
        while self.state is not SessionState.CLOSED:
            frame = await self.transport.receive()
            if frame is None:
                return
            if len(frame) > knobs.MAX_MESSAGE_BYTES:
                self._fatal(f"message larger than {knobs.MAX_MESSAGE_BYTES} bytes")
            try:
                message = p.decode_client_message(frame)
            except p.ProtocolError as error:
                self._fatal(str(error))
            await self._handle(message)

    async def _handle(self, message: p.ClientMessage) -> None:
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
            if self._mutations.qsize() + self._inflight >= knobs.MAX_INFLIGHT_REQUESTS:
                self._begin_close(1013, "TooManyConcurrentRequests: too many requests in flight")
                raise _Closed
            self._mutations.put_nowait((message, self.identity))
            if self._mutation_task is None:
                self._mutation_task = asyncio.create_task(self._mutation_worker(), name="sync-mutations")
        elif isinstance(message, p.Action):
            self._check_identity()
            if self._mutations.qsize() + self._inflight >= knobs.MAX_INFLIGHT_REQUESTS:
                self._begin_close(1013, "TooManyConcurrentRequests: too many requests in flight")
                raise _Closed
            task = asyncio.create_task(self._action(message, self.identity))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(message, p.Authenticate):
            self._authenticate(message)
        # Event: telemetry only.

    def _connect(self, message: p.Connect) -> None:
        if not message.sessionId or len(message.sessionId) > _MAX_SESSION_ID:
            self._fatal("Connect.sessionId must be a non-empty string of at most 256 characters")
        self.session_id = message.sessionId
        # The session's first socket: no mutation of it can have been stored yet, so no replay lookup.
        self.fresh_session = message.connectionCount == 0 and message.lastCloseReason in (None, "InitialConnect")
        if message.maxObservedTimestamp:
            try:
                self.backend.hub.observe_timestamp(p.decode_ts(message.maxObservedTimestamp))
            except p.ProtocolError as error:
                self._fatal(str(error))
        self.sub = self.backend.hub.connect(self)
        self.state = SessionState.CONNECTED

    def _modify(self, message: p.ModifyQuerySet) -> None:
        assert self.sub is not None
        if message.baseVersion != self.received_query_set:
            self._fatal(
                f"BaseVersionMismatch: ModifyQuerySet baseVersion {message.baseVersion} != {self.received_query_set}"
            )
        if message.newVersion <= message.baseVersion:
            self._fatal("ModifyQuerySet newVersion must be greater than baseVersion")
        live = set(self._pending_ids)
        adds: list[tuple[int, str, Any]] = []
        removes: list[int] = []
        for mod in message.modifications:
            if isinstance(mod, p.Add):
                if mod.queryId in live:
                    self._fatal(f"query id {mod.queryId} is already in the query set")
                if len(mod.args) != 1:
                    self._fatal(f"query {mod.queryId}: args must be a one-element array")
                try:
                    path = canonical_path(mod.udfPath)
                except InvalidRequest:
                    path = mod.udfPath
                live.add(mod.queryId)
                adds.append((mod.queryId, path, mod.args[0]))
            else:
                if mod.queryId not in live:
                    self._fatal(f"query id {mod.queryId} is not in the query set")
                live.discard(mod.queryId)
                removes.append(mod.queryId)
        if len(live) > knobs.MAX_QUERIES_PER_SESSION:
            self._fatal(f"more than {knobs.MAX_QUERIES_PER_SESSION} queries on one socket")
        self._pending_ids = live
        self.received_query_set = message.newVersion
        self.backend.hub.modify(self.sub, message.newVersion, adds, removes)

    def _authenticate(self, message: p.Authenticate) -> None:
        assert self.sub is not None
        if message.baseVersion != self.received_identity:
            self._fatal(f"Authenticate baseVersion {message.baseVersion} != {self.received_identity}")
        identity: Any | None = None
        # baseVersion of a refused Authenticate: the identity version before it (sync-protocol.md §7). It equals
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
        self._outbox.put_nowait(b"-" + p.auth_error(message, base_version, attempted))
        self._begin_close(1000, "")
        raise _Closed

    # -- requests ----------------------------------------------------------------------------------------

    async def _mutation_worker(self) -> None:
        while True:
            message, identity = await self._mutations.get()
            self._inflight += 1
            try:
                await self._mutation(message, identity)
            finally:
                self._inflight -= 1

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
            spec = runner.resolve(message.udfPath, "mutation", False)
            outcome = await runner.execute_mutation(
                spec, runner.validate_args(spec, args), identity,
                session=(self.session_id, message.requestId),
                fresh_session=self.fresh_session,
                request_id=f"{self.session_id}:{message.requestId}",
                before_commit=before_commit,
            )
        except BackendError as error:
            outcome = Outcome(error=error)
        except asyncio.CancelledError:
            if held:
                hub.release(sub)
            raise
        except Exception as error:  # a bug or a lost database: answer it, keep serving later mutations
            log.exception("mutation %s failed unexpectedly", message.udfPath)
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
            outcome = await runner.action(message.udfPath, message.args[0], identity)
            frame = p.action_response(message.requestId, outcome.value, outcome.error, outcome.log_lines)
        except BackendError as error:
            frame = p.action_response(message.requestId, None, error, [])
        finally:
            self._inflight -= 1
        self.enqueue(frame, transition=False)
