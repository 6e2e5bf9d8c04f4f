"""Runs functions: queries in a read-only snapshot, mutations in SERIALIZABLE transactions, actions outside.

A mutation that hits a serialization failure (40001) or deadlock (40P01) is retried from scratch with
jittered exponential backoff, up to ``knobs.MUTATION_MAX_ATTEMPTS``, then fails with ``Conflict``. When a
mutation carries a ``(sessionId, requestId)`` its result is stored in the same transaction, so a replay
after a reconnect returns the first result without running again. Errors raised by the function body are
returned as a failed ``Outcome`` (the transaction rolled back, nothing is left behind); errors found before
the body runs (unknown function, bad arguments, no access) are raised. Every call runs under a time limit
(``_limits``), its result under a size cap, and takes its connection through the fair pool gate (``db._pool``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from . import calllog, knobs
from ._limits import check_after_timeout, limit_for, run_limited, timed_out
from .clock import Clock, SystemClock
from .context import ActionCtx, Auth, MutationCtx, QueryCtx
from .db import DatabaseReader, DatabaseWriter, ReadSet, Txn, encode_keys
from .db._commit import FinalWrites, serializable
from .db._literals import Unrenderable
from .db._pool import PoolGate
from .errors import (
    BackendError,
    Conflict,
    FunctionTimeout,
    InvalidArgs,
    InvalidReturn,
    LimitExceeded,
    RequestIdReused,
    UniqueViolation,
)
from .logs import LogCollector
from .postgres import CONNECTION_LOST, Connection
from .registry import FunctionSpec, Kind, RegisteredFunction, Registry
from .schema import Schema
from .tenancy import resolve_tenant
from .validators import ValidationFailure
from .values import ValueError_, decode_value, encode_value, value_size

__all__ = ["Outcome", "Runner"]

log = logging.getLogger("backend.runner")

_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
#: Seconds to let a backend that may still be committing finish before its stored result is looked up.
_SETTLE_SECONDS = 0.05


@dataclass
class Outcome:
    """The result of one function call: an encoded value, or the error its body raised."""

    value: Any = None
    log_lines: list[str] = field(default_factory=list)
    error: BaseException | None = None
    read_set: ReadSet | None = None
    wrote: bool = False
    attempts: int = 1
    tenant: str | None = None  # the business the call ran for, once resolved

    @property
    def ok(self) -> bool:
        return self.error is None


SchedulerFactory = Callable[[Txn | None, Any], Any]
#: ``(kind, spec, kwargs, identity, outcome, seconds)`` after every run; feeds the dashboard's call log.
CallObserver = Callable[[str, FunctionSpec, dict[str, Any], Any, Outcome, float], None]


class Runner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: Schema,
        registry: Registry,
        *,
        clock: Clock | None = None,
        on_commit: Callable[[], None] | None = None,
        scheduler_factory: SchedulerFactory | None = None,
    ) -> None:
        self.pool = pool
        self.gate = PoolGate(pool)  # every function call's connection: bounded wait, a fair share per caller
        self.schema = schema
        self.registry = registry
        self.clock = clock or SystemClock()
        self.on_commit = on_commit
        self.scheduler_factory = scheduler_factory
        self.on_call: CallObserver | None = None
        self.retries = 0
        #: Tell callers what an unexpected exception said (development), not only its request id.
        self.expose_errors = False
        self._lanes: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    # -- shared ------------------------------------------------------------------------------------------

    def resolve(self, path: str | RegisteredFunction[Any, Any], kind: Kind, allow_internal: bool) -> FunctionSpec:
        if isinstance(path, RegisteredFunction):
            path = path.spec.path
        return self.registry.resolve(path, kind=kind, allow_internal=allow_internal)

    @staticmethod
    def validate_args(spec: FunctionSpec, args: Any) -> dict[str, Any]:
        try:
            decoded = args if isinstance(args, dict) and not args else decode_value(args, "$.args")
            return spec.args.validate(decoded)
        except (ValidationFailure, ValueError_) as error:
            raise InvalidArgs(str(error)) from None

    @staticmethod
    def encode_result(spec: FunctionSpec, result: Any) -> Any:
        try:
            checked = spec.returns.validate(result)
            encoded = encode_value(checked, "$.returns")
        except (ValidationFailure, ValueError_) as error:
            raise InvalidReturn(f"{spec.path} returned a bad value: {error}") from None
        size = value_size(encoded)
        if size > knobs.MAX_RESULT_BYTES:
            raise LimitExceeded(f"{spec.path}: the result is {size:,} bytes, over the limit of "
                                f"{knobs.MAX_RESULT_BYTES:,} bytes (BACKEND_MAX_RESULT_BYTES)")
        return encoded

    @staticmethod
    def _body_failed(spec: FunctionSpec, error: BaseException) -> BaseException:
        """The body's error, reported once by the call log line (with its traceback when it is a bug)."""
        return error

    async def _observed(
        self, kind: Kind, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None, call: Awaitable[Outcome]
    ) -> Outcome:
        """Await one call and report it once: its call-log line, and the dashboard's ``on_call`` when set."""
        started = calllog.start()
        try:
            outcome = await call
        except Exception as error:
            calllog.raised(started, kind, spec.path, error, expose=self.expose_errors)
            raise
        calllog.finished(started, kind, spec.path, outcome.error, outcome.log_lines,
                         expose=self.expose_errors, attempts=outcome.attempts)
        if self.on_call is not None:
            self.on_call(kind, spec, kwargs, identity, outcome, time.perf_counter() - started)
        return outcome

    def _refused(self, started: float, kind: Kind, path: Any, error: BaseException) -> None:
        shown = path.spec.path if isinstance(path, RegisteredFunction) else str(path)
        calllog.raised(started, kind, shown, error, expose=self.expose_errors)

    # -- queries -----------------------------------------------------------------------------------------

    async def query(
        self, path: str | RegisteredFunction[Any, Any], args: Any, identity: Any | None, *, allow_internal: bool = False
    ) -> Outcome:
        started = calllog.start()
        try:
            spec = self.resolve(path, "query", allow_internal)
            kwargs = self.validate_args(spec, args)
        except BackendError as error:
            self._refused(started, "query", path, error)
            raise
        async with self.gate.acquire(identity) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await self.execute_query(conn, spec, kwargs, identity)

    async def execute_query(
        self, conn: Connection, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None
    ) -> Outcome:
        """Run a query inside the caller's open read-only transaction (one snapshot for a whole batch)."""
        return await self._observed("query", spec, kwargs, identity, self._execute_query(conn, spec, kwargs, identity))

    async def _execute_query(
        self, conn: Connection, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None
    ) -> Outcome:
        now = self.clock.now()
        txn = Txn(conn, self.schema, now, read_only=True, function_path=spec.path,
                  actor=_subject(identity), cross_tenant=spec.cross_tenant)
        try:
            tenant, member = await resolve_tenant(txn, spec, kwargs, identity)
        except BackendError as error:
            # Refused before the body ran. What the check read (the document, the membership) is the read
            # set all the same, so a live query refused now is re-run when, say, the caller joins.
            return Outcome(error=error, read_set=txn.read_set)
        txn.tenant = tenant
        collector = LogCollector()
        ctx = QueryCtx(DatabaseReader(txn), Auth(identity), collector, now, tenant, member)
        token = collector.activate()
        try:
            result = await run_limited(spec.fn(ctx, **kwargs), "query", spec.path)
            value = self.encode_result(spec, result)
        except Exception as error:  # the function's own failure becomes a failed outcome
            if isinstance(error, FunctionTimeout):
                await check_after_timeout(conn, error)
            return Outcome(error=self._body_failed(spec, error), log_lines=collector.finish(), read_set=txn.read_set,
                           tenant=tenant)
        finally:
            LogCollector.deactivate(token)
        return Outcome(value=value, log_lines=collector.finish(), read_set=txn.read_set, tenant=tenant)

    # -- mutations ---------------------------------------------------------------------------------------

    async def mutation(
        self,
        path: str | RegisteredFunction[Any, Any],
        args: Any,
        identity: Any | None,
        *,
        session: tuple[str, int] | None = None,
        allow_internal: bool = False,
        request_id: str | None = None,
        binding: str | None = None,
    ) -> Outcome:
        """``binding``: what else a stored result is bound to beside the identity and the function (the HTTP
        ``Idempotency-Key`` binds the arguments' digest)."""
        started = calllog.start()
        try:
            spec = self.resolve(path, "mutation", allow_internal)
            kwargs = self.validate_args(spec, args)
        except BackendError as error:
            self._refused(started, "mutation", path, error)
            raise
        return await self.execute_mutation(spec, kwargs, identity, session=session, request_id=request_id,
                                           binding=binding)

    async def execute_mutation(
        self,
        spec: FunctionSpec,
        kwargs: dict[str, Any],
        identity: Any | None,
        *,
        session: tuple[str, int] | None = None,
        request_id: str | None = None,
        before_commit: Callable[[Txn], Awaitable[None]] | None = None,
        fresh_session: bool = False,
        binding: str | None = None,
    ) -> Outcome:
        """``fresh_session``: the socket is its session's first, so nothing can have been stored for it yet
        and its attempts skip the replay lookup (the stored row's primary key still catches a duplicate
        committed meanwhile by a reconnected socket, and the retry after that unique violation looks it up).
        A retry after a serialization failure needs no lookup: that attempt committed nothing."""
        return await self._observed("mutation", spec, kwargs, identity, self._execute_mutation(
            spec, kwargs, identity, session=session, request_id=request_id, before_commit=before_commit,
            fresh_session=fresh_session, binding=binding,
        ))

    async def _execute_mutation(
        self,
        spec: FunctionSpec,
        kwargs: dict[str, Any],
        identity: Any | None,
        *,
        session: tuple[str, int] | None,
        request_id: str | None,
        before_commit: Callable[[Txn], Awaitable[None]] | None,
        fresh_session: bool,
        binding: str | None,
    ) -> Outcome:
        bound = spec.path if binding is None else f"{spec.path}#{binding}"  # what a stored result answers
        attempt = 0
        unique_retries = 0
        lane: asyncio.Lock | None = None
        while True:
            attempt += 1
            collector = LogCollector()
            try:
                if lane is None:
                    outcome = await self._attempt(
                        spec, kwargs, identity, collector, session, request_id, before_commit,
                        lookup=not fresh_session or unique_retries > 0, bound=bound,
                    )
                else:
                    async with lane:
                        outcome = await self._attempt(
                            spec, kwargs, identity, collector, session, request_id, before_commit,
                            lookup=not fresh_session or unique_retries > 0, bound=bound,
                        )
            except _RETRYABLE as error:
                if attempt >= knobs.MUTATION_MAX_ATTEMPTS:
                    return Outcome(
                        error=Conflict(f"{spec.path}: gave up after {attempt} attempts (serialization conflicts)"),
                        attempts=attempt,
                    )
                self.retries += 1
                if lane is None:
                    lane = self._retry_lane(spec, kwargs, getattr(error, "retry_lane", None))
                await _backoff(attempt)
                continue
            except CONNECTION_LOST:
                # The stored result is written in the mutation's own transaction: if it is there, the
                # commit happened and the caller gets its result rather than a failure it would wrongly act on.
                if session is None:
                    raise
                stored = await self._stored_after_lost_connection(session, identity, bound)
                if stored is None:
                    raise
                stored.attempts = attempt
                if self.on_commit is not None:
                    self.on_commit()
                return stored
            except _UniqueRace as race:
                unique_retries += 1
                if unique_retries > 2 or attempt >= knobs.MUTATION_MAX_ATTEMPTS:
                    # Not a race after all: the key is taken. The caller gets the violation, not a crash.
                    return Outcome(error=race.violation(), attempts=attempt)
                await _backoff(attempt)
                continue
            outcome.attempts = attempt
            if outcome.wrote and self.on_commit is not None:
                self.on_commit()
            return outcome

    async def _stored_after_lost_connection(
        self, session: tuple[str, int], identity: Any | None, bound: str
    ) -> Outcome | None:
        """The stored result of a request whose connection was lost around its COMMIT, looked up on another
        connection; None when it is not there (then it did not commit) or the database cannot be reached."""
        await asyncio.sleep(_SETTLE_SECONDS)
        try:
            async with self.gate.acquire(identity) as conn:
                return await _stored_result(conn, session, identity, bound)
        except Exception:  # the database is still away: the caller gets the original failure
            return None

    async def _attempt(
        self,
        spec: FunctionSpec,
        kwargs: dict[str, Any],
        identity: Any | None,
        collector: LogCollector,
        session: tuple[str, int] | None,
        request_id: str | None,
        before_commit: Callable[[Txn], Awaitable[None]] | None,
        *,
        lookup: bool = True,
        bound: str,
    ) -> Outcome:
        """``bound``: what a stored result answers (the function's path, plus any argument binding)."""
        looked_up = session if lookup else None  # the stored result to look for before the transaction
        async with self.gate.acquire(identity, serializable=looked_up is None) as conn:
            if looked_up is not None:
                # Looked up before the transaction, not inside it: a SERIALIZABLE read here would put a
                # predicate lock on the index page other sessions insert their results into, and abort them
                # (measured in bench/: 3x fewer mutations/s). A replay racing its first run is caught by the
                # primary key of _session_requests instead; its retry then finds the stored result here.
                stored = await _stored_result(conn, looked_up, identity, bound)
                if stored is not None:
                    return stored
            failure: Outcome | None = None
            resolved: str | None = None
            lines: list[str] = []
            try:
                # The bookkeeping rows go with the COMMIT, and maybe the next mutation's BEGIN.
                async with serializable(conn, begin_next=self.gate.keep_next) as final:
                    now = self.clock.now()
                    txn = Txn(conn, self.schema, now, read_only=False, function_path=spec.path,
                              actor=_subject(identity), request_id=request_id, cross_tenant=spec.cross_tenant)
                    tenant, member = await resolve_tenant(txn, spec, kwargs, identity)
                    txn.tenant = resolved = tenant
                    scheduler = self.scheduler_factory(txn, identity) if self.scheduler_factory else None
                    ctx = MutationCtx(DatabaseWriter(txn), Auth(identity), collector, now, scheduler, tenant, member)
                    token = collector.activate()
                    started = time.monotonic()
                    try:
                        result = await run_limited(spec.fn(ctx, **kwargs), "mutation", spec.path)
                        if txn.write_failed is not None:  # the function went on past a held write that failed
                            raise _held_write_error(txn.write_failed)
                        value = self.encode_result(spec, result)
                    except _RETRYABLE:
                        raise
                    except Exception as error:
                        cause = error.__cause__
                        if isinstance(cause, asyncpg.UniqueViolationError):
                            raise _UniqueRace() from error
                        failure = Outcome(error=self._body_failed(spec, error), log_lines=collector.finish(),
                                          tenant=tenant)
                        raise _Rollback() from None
                    finally:
                        LogCollector.deactivate(token)
                    if before_commit is not None:
                        await before_commit(txn)
                    lines = collector.finish()
                    wrote = bool(txn.writes)
                    if txn.held:
                        failure = await self._finish_held(spec, txn, final, started, lines, tenant)
                        if failure is not None:
                            raise _Rollback()
                    if wrote:
                        final.commit_log(encode_keys(txn.written_keys()))
                    if session is not None:
                        final.session_result(session[0], session[1], msgspec.json.encode(value),
                                             msgspec.json.encode(lines), _caller_key(identity), bound)
            except _Rollback:
                assert failure is not None
            except asyncpg.UniqueViolationError as error:
                raise _UniqueRace() from error
            except asyncpg.LockNotAvailableError:
                # A held write waited for a row lock past the mutation's time limit: nothing was committed.
                failure = Outcome(error=timed_out("mutation", spec.path), log_lines=lines, tenant=resolved)
            except _RETRYABLE as error:
                error.retry_lane = resolved  # type: ignore[union-attr]
                raise
            if failure is None:
                return Outcome(value=value, log_lines=lines, wrote=wrote, tenant=resolved)
            if session is not None:
                # The same request may have committed on another socket meanwhile (a reconnect racing a
                # half-open old socket): then its stored result is the answer, not this run's failure.
                stored = await _stored_result(conn, session, identity, bound)
                if stored is not None:
                    return stored
            return failure

    async def _finish_held(self, spec: FunctionSpec, txn: Txn, final: FinalWrites, started: float,
                           lines: list[str], tenant: str | None) -> Outcome | None:
        """Put the writes still held into the ``COMMIT`` message. A value with no literal form sends them as
        statements first, within what is left of the time limit; a failure there is the mutation's (None: sent
        or in the message)."""
        left = limit_for("mutation") - (time.monotonic() - started)
        try:
            final.held_writes(txn.held, left)
            return None
        except Unrenderable:
            pass
        try:
            async with asyncio.timeout(max(left, 0.001)):
                await txn.flush()
        except _RETRYABLE:
            raise
        except TimeoutError:
            return Outcome(error=timed_out("mutation", spec.path), log_lines=lines, tenant=tenant)
        except Exception as error:
            return Outcome(error=self._body_failed(spec, error), log_lines=lines, tenant=tenant)
        return None

    def _retry_lane(self, spec: FunctionSpec, kwargs: dict[str, Any], tenant: str | None) -> asyncio.Lock:
        """Retries within one tenant (or, unscoped, of one function on one argument) take turns on this node.

        Under a burst on a hot row (fifty people booking the last seats of one class) every attempt but one
        fails each round; letting the retries run one at a time turns that into one round per request
        instead of up to one per competitor, while first attempts still run freely.
        """
        key = ("", tenant) if tenant else (spec.path, str(kwargs.get(spec.tenant_arg)) if spec.tenant_arg else "")
        lane = self._lanes.get(key)
        if lane is None:
            lane = asyncio.Lock()
            self._lanes[key] = lane
        return lane

    # -- actions -----------------------------------------------------------------------------------------

    async def action(
        self, path: str | RegisteredFunction[Any, Any], args: Any, identity: Any | None, *, allow_internal: bool = False
    ) -> Outcome:
        started = calllog.start()
        try:
            spec = self.resolve(path, "action", allow_internal)
            kwargs = self.validate_args(spec, args)
        except BackendError as error:
            self._refused(started, "action", path, error)
            raise
        return await self.execute_action(spec, kwargs, identity)

    async def execute_action(self, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None) -> Outcome:
        return await self._observed("action", spec, kwargs, identity, self._execute_action(spec, kwargs, identity))

    async def _execute_action(self, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None) -> Outcome:
        collector = LogCollector()
        now = self.clock.now()

        async def unwrap(outcome: Outcome) -> Any:
            collector.lines.extend(outcome.log_lines)
            if outcome.error is not None:
                raise outcome.error
            return decode_value(outcome.value)

        async def run_query(fn: Any, args: dict[str, Any] | None = None) -> Any:
            return await unwrap(await self.query(fn, encode_value(args or {}), identity, allow_internal=True))

        async def run_mutation(fn: Any, args: dict[str, Any] | None = None) -> Any:
            return await unwrap(await self.mutation(fn, encode_value(args or {}), identity, allow_internal=True))

        async def run_action(fn: Any, args: dict[str, Any] | None = None) -> Any:
            return await unwrap(await self.action(fn, encode_value(args or {}), identity, allow_internal=True))

        scheduler = self.scheduler_factory(None, identity) if self.scheduler_factory else None
        ctx = ActionCtx(Auth(identity), collector, now, scheduler, run_query, run_mutation, run_action)
        token = collector.activate()
        try:
            result = await run_limited(spec.fn(ctx, **kwargs), "action", spec.path)
            value = self.encode_result(spec, result)
        except Exception as error:
            return Outcome(error=self._body_failed(spec, error), log_lines=collector.finish())
        finally:
            LogCollector.deactivate(token)
        return Outcome(value=value, log_lines=collector.finish())


class _Rollback(Exception):
    """Unwinds the transaction block when the function body failed."""


def _held_write_error(error: BaseException) -> Exception:
    """What a held write's failure makes of the mutation: its own error (a conflict is retried as any), or,
    for a cancelled send, one that says so without cancelling the caller."""
    if isinstance(error, Exception):
        return error
    return RuntimeError(f"sending a held write was interrupted ({type(error).__name__})")


class _UniqueRace(Exception):
    """A unique violation that a retry may resolve (another transaction inserted the same key first)."""

    def violation(self) -> UniqueViolation:
        cause = self.__cause__
        if isinstance(cause, UniqueViolation):
            return cause
        name = getattr(cause, "constraint_name", None) or "?"
        return UniqueViolation(f"unique index {name}: a live document with this key exists")


async def _stored_result(conn: Connection, session: tuple[str, int], identity: Any | None, path: str) -> Outcome | None:
    """The outcome stored by the first committed run of ``(sessionId, requestId)``, if there was one.

    It answers only the identity that made it, calling the same function: anyone else presenting the same
    ids gets ``RequestIdReused`` (never the stored value, and its own call is not run). Rows stored before
    the identity was recorded (``function_path`` NULL) answer nobody.
    """
    stored = await conn.fetchrow(
        "SELECT result, log_lines, identity, function_path FROM _session_requests "
        "WHERE session_id = $1 AND request_id = $2",
        session[0], session[1],
    )
    if stored is None:
        return None
    if stored["function_path"] != path or stored["identity"] != _caller_key(identity):
        return Outcome(error=RequestIdReused(
            f"request {session[1]} of this session was already used by another caller or function; "
            "send a new request id"))
    return Outcome(value=msgspec.json.decode(stored["result"]), log_lines=msgspec.json.decode(stored["log_lines"]))


def _caller_key(identity: Any | None) -> str | None:
    """What a stored result is bound to: the token identifier (issuer and subject), None for anonymous."""
    if identity is None:
        return None
    token_identifier = getattr(identity, "token_identifier", None)
    return str(token_identifier) if token_identifier is not None else f"|{identity.subject}"


def _subject(identity: Any | None) -> str | None:
    """The audit actor: the caller's subject, or the admin acting through the dashboard (``admin:<name>``)."""
    if identity is None:
        return None
    actor = getattr(identity, "actor", None)
    return str(actor) if actor else str(identity.subject)


async def _backoff(attempt: int) -> None:
    ceiling = min(knobs.MUTATION_RETRY_MAX_SECONDS, knobs.MUTATION_RETRY_BASE_SECONDS * (2 ** (attempt - 1)))
    await asyncio.sleep(random.uniform(0, ceiling))
