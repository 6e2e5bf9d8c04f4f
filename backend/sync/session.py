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
from typing import TYPE_CHECKING, Any

from .. import knobs
from ..errors import BackendError, InvalidRequest
from ..registry import canonical_path
from . import protocol as p

if TYPE_CHECKING:
    from ..reactive.hub import Subscriber
    from ..server import Backend

__all__ = ["SessionState", "SyncSession", "Transport"]

log = logging.getLogger("backend.sync")

_MAX_SESSION_ID = 256


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
        self.received_query_set = 0
        self.received_identity = 0
        self.identity: Any | None = None
        self.sub: Subscriber | None = None
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending_transitions = 0
        self._mutations: asyncio.Queue[p.Mutation] = asyncio.Queue()
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_reason: tuple[int, str] | None = None
        self._last_sent = time.monotonic()

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
        self._outbox.put_nowait(frame)
        return True

    def overloaded(self) -> None:
        self._begin_close(1013, "TooManyConcurrentRequests: the client is not reading transitions fast enough")

    # -- lifecycle ---------------------------------------------------------------------------------------

    def drop(self, code: int = 1011, reason: str = "InternalServerError: connection dropped by the server") -> None:
        """Close the socket from the server side (shutdown, tests); the client reconnects."""
        self._begin_close(code, reason)
        task = asyncio.get_running_loop().create_task(self.transport.close(code, reason))
        self._tasks.add(task)

    async def run(self) -> None:
        self.backend.sessions.add(self)
        writer = asyncio.create_task(self._writer(), name="sync-writer")
        mutations = asyncio.create_task(self._mutation_worker(), name="sync-mutations")
        try:
            await self._reader()
        except _Closed:
            pass
        except Exception:
            log.exception("sync session failed")
            self._begin_close(1011, "InternalServerError")
        finally:
            self.backend.sessions.discard(self)
            self.state = SessionState.CLOSED
            if self.sub is not None:
                self.backend.hub.disconnect(self.sub)
            mutations.cancel()
            for task in list(self._tasks):
                task.cancel()
            self._outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=5)
            writer.cancel()
            code, reason = self._close_reason or (1000, "")
            with contextlib.suppress(Exception):
                await self.transport.close(code, reason)

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
                frame = await asyncio.wait_for(self._outbox.get(), timeout=knobs.PING_INTERVAL_SECONDS)
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
            self._modify(message)
        elif isinstance(message, p.Mutation):
            self._check_identity()
            if self._mutations.qsize() + self._inflight >= knobs.MAX_INFLIGHT_REQUESTS:
                self._begin_close(1013, "TooManyConcurrentRequests: too many requests in flight")
                raise _Closed
            self._mutations.put_nowait(message)
        elif isinstance(message, p.Action):
            self._check_identity()
            if self._mutations.qsize() + self._inflight >= knobs.MAX_INFLIGHT_REQUESTS:
                self._begin_close(1013, "TooManyConcurrentRequests: too many requests in flight")
                raise _Closed
            task = asyncio.create_task(self._action(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(message, p.Authenticate):
            self._authenticate(message)
        # Event: telemetry only.

    def _connect(self, message: p.Connect) -> None:
        if not message.sessionId or len(message.sessionId) > _MAX_SESSION_ID:
            self._fatal("Connect.sessionId must be a non-empty string of at most 256 characters")
        self.session_id = message.sessionId
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
        live = set(self.sub.queries) | set(self._pending_ids)
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

    _pending_ids: set[int] = set()

    def _authenticate(self, message: p.Authenticate) -> None:
        assert self.sub is not None
        if message.baseVersion != self.received_identity:
            self._fatal(f"Authenticate baseVersion {message.baseVersion} != {self.received_identity}")
        identity: Any | None = None
        if message.tokenType == "User":
            try:
                identity = self.backend.verify_token(message.value or "")
            except BackendError as error:
                self._outbox.put_nowait(b"-" + p.auth_error(error.message, self.sub.identity_version, True))
                self._begin_close(1000, "")
                raise _Closed from None
        elif message.tokenType == "Admin":
            self._outbox.put_nowait(b"-" + p.auth_error("admin keys are not accepted", self.sub.identity_version, True))
            self._begin_close(1000, "")
            raise _Closed
        self.identity = identity
        self.received_identity += 1
        self.backend.hub.set_identity(self.sub, identity, self.received_identity)

    def _check_identity(self) -> None:
        """An identity whose token expired mid-session gets AuthError (not attempted) and the socket closes."""
        identity = self.identity
        if identity is None or not self.backend.verifier.is_expired(identity):
            return
        assert self.sub is not None
        self._outbox.put_nowait(b"-" + p.auth_error("token expired", self.sub.identity_version, False))
        self._begin_close(1000, "")
        raise _Closed

    # -- requests ----------------------------------------------------------------------------------------

    async def _mutation_worker(self) -> None:
        while True:
            message = await self._mutations.get()
            self._inflight += 1
            try:
                await self._mutation(message)
            finally:
                self._inflight -= 1

    async def _mutation(self, message: p.Mutation) -> None:
        assert self.sub is not None
        runner = self.backend.runner
        args = message.args[0] if len(message.args) == 1 else None
        try:
            if args is None:
                raise InvalidRequest("$.args: must be a one-element array")
            outcome = await runner.mutation(
                message.udfPath, args, self.identity,
                session=(self.session_id, message.requestId),
                request_id=f"{self.session_id}:{message.requestId}",
            )
        except BackendError as error:
            self.enqueue(p.mutation_failure(message.requestId, error, []), transition=False)
            return
        if outcome.error is not None:
            self.enqueue(p.mutation_failure(message.requestId, outcome.error, outcome.log_lines), transition=False)
            return
        done = asyncio.get_running_loop().create_future()

        def response(ts: int) -> bytes:
            if not done.done():
                done.set_result(ts)
            return p.mutation_success(message.requestId, outcome.value, outcome.log_lines, ts)

        self.backend.hub.complete(self.sub, response)
        await done

    async def _action(self, message: p.Action) -> None:
        runner = self.backend.runner
        self._inflight += 1
        try:
            if len(message.args) != 1:
                raise InvalidRequest("$.args: must be a one-element array")
            outcome = await runner.action(message.udfPath, message.args[0], self.identity)
            frame = p.action_response(message.requestId, outcome.value, outcome.error, outcome.log_lines)
        except BackendError as error:
            frame = p.action_response(message.requestId, None, error, [])
        finally:
            self._inflight -= 1
        self.enqueue(frame, transition=False)
