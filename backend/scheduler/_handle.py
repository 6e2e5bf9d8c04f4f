"""``ctx.scheduler``: schedule, cancel and inspect jobs from a mutation or an action.

In a mutation every statement runs on the mutation's own SERIALIZABLE transaction, so a job scheduled by a
mutation that rolls back (an error, a retry after a conflict) never existed, and a cancel commits with it.
In an action each call is its own short transaction.

Jobs are scoped like tenant tables: a function running for business A sees and cancels only jobs scheduled
by functions running for A; an unscoped function only unscoped jobs; ``cross_tenant`` functions all of them.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .. import knobs
from ..db import Txn
from ..errors import InvalidArgs, LimitExceeded
from ..postgres import Connection
from ..registry import RegisteredFunction
from . import _jobs
from ._jobs import JobStatus, ScheduledJob
from ._targets import after, encode_args, function_path, parse_when, resolve_target

if TYPE_CHECKING:
    from .service import Scheduler

__all__ = ["SchedulerHandle"]

T = TypeVar("T")

_MAX_LIST = 1000


class SchedulerHandle:
    """One function run's view of the scheduler (a new one per mutation attempt)."""

    def __init__(self, service: Scheduler, txn: Txn | None, identity: Any | None) -> None:
        self._service = service
        self._txn = txn
        self._identity = identity
        self._scheduled = 0
        self._notified = False

    # -- scheduling --------------------------------------------------------------------------------------

    async def run_after(
        self, seconds: float, fn: str | RegisteredFunction[Any, Any], args: dict[str, Any] | None = None
    ) -> str:
        """Run ``fn(args)`` ``seconds`` after now (the engine clock); returns the job id."""
        return await self._schedule(after(self._now(), seconds), fn, args)

    async def run_at(
        self, when: dt.datetime | str, fn: str | RegisteredFunction[Any, Any], args: dict[str, Any] | None = None
    ) -> str:
        """Run ``fn(args)`` at ``when`` (aware datetime or ISO 8601 with offset); past times run at once."""
        return await self._schedule(parse_when(when), fn, args)

    async def _schedule(
        self, run_at: dt.datetime, fn: str | RegisteredFunction[Any, Any], args: dict[str, Any] | None
    ) -> str:
        limit = knobs.MAX_SCHEDULED_PER_MUTATION
        if self._scheduled >= limit:
            where = self._txn.function_path if self._txn is not None else "an action"
            raise LimitExceeded(
                f"{where}: scheduled more than {limit} functions in one run (MAX_SCHEDULED_PER_MUTATION)"
            )
        spec = resolve_target(self._service.registry, fn)
        encoded = encode_args(spec, args)
        identity = self._identity
        job_id = _jobs.new_job_id()
        now = self._now()
        soon = (run_at - now).total_seconds() <= knobs.SCHEDULER_POLL_SECONDS
        fields: dict[str, Any] = {
            "job_id": job_id, "path": spec.path, "args": encoded, "kind": spec.kind, "run_at": run_at, "now": now,
            "tenant": self._tenant(), "subject": None if identity is None else str(identity.subject),
            "identity": _identity_json(identity),
        }
        if self._txn is not None:
            await self._txn.flush()
            await _jobs.insert_job(self._txn.conn, **fields)
            if soon and not self._notified:
                await self._service.notify(self._txn.conn)
                self._notified = True
        else:
            async with self._service.pool.acquire() as conn, conn.transaction():
                await _jobs.insert_job(conn, **fields)
                if soon:
                    await self._service.notify(conn)
        self._scheduled += 1
        return job_id

    async def cancel(self, job_id: str) -> bool:
        """Cancel a pending job; True if it was pending. Running or finished jobs are left unchanged."""
        self._check_id(job_id)

        async def run(conn: Connection) -> bool:
            row = await _jobs.fetch_job(conn, job_id)
            if row is None or not self._visible(row):
                return False
            return await _jobs.cancel_job(conn, job_id, self._now())

        return await self._run(run)

    # -- reading -----------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> ScheduledJob | None:
        """The job with this id (None if unknown or not visible to this function)."""
        self._check_id(job_id)

        async def run(conn: Connection) -> ScheduledJob | None:
            row = await _jobs.fetch_job(conn, job_id)
            return _jobs.job_from_row(row) if row is not None and self._visible(row) else None

        return await self._run(run)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        function: str | RegisteredFunction[Any, Any] | None = None,
        cron: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ScheduledJob]:
        """Visible jobs, latest ``run_at`` first, optionally filtered by status, function or cron name."""
        if status is not None and status not in _jobs.STATUSES:
            raise InvalidArgs(f"status must be one of {', '.join(_jobs.STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIST:
            raise InvalidArgs(f"limit must be an integer from 1 to {_MAX_LIST}")
        conditions: builtins.list[str] = []
        params: builtins.list[Any] = []

        def where(clause: str, value: Any) -> None:
            params.append(value)
            conditions.append(clause.format(f"${len(params)}"))

        if status is not None:
            where("status = {}", status)
        if function is not None:
            where("function_path = {}", function_path(function))
        if cron is not None:
            where("cron_name = {}", cron)
        if not self._cross_tenant():
            tenant = self._tenant()
            if tenant is None:
                conditions.append("tenant IS NULL")
            else:
                where("tenant = {}", tenant)
        params.append(limit)
        sql = (
            "SELECT * FROM _scheduled_jobs"
            + (" WHERE " + " AND ".join(conditions) if conditions else "")
            + f" ORDER BY run_at DESC, id LIMIT ${len(params)}"
        )

        async def run(conn: Connection) -> builtins.list[ScheduledJob]:
            return [_jobs.job_from_row(r) for r in await conn.fetch(sql, *params)]

        return await self._run(run)

    # -- helpers -----------------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self._txn.now if self._txn is not None else self._service.clock.now()

    def _tenant(self) -> str | None:
        return None if self._txn is None else self._txn.tenant

    def _cross_tenant(self) -> bool:
        return self._txn is not None and self._txn.cross_tenant

    def _visible(self, row: Any) -> bool:
        return self._cross_tenant() or row["tenant"] == self._tenant()

    @staticmethod
    def _check_id(job_id: object) -> None:
        if not _jobs.is_job_id(job_id):
            raise InvalidArgs(f"{str(job_id)[:40]!r} is not a scheduled job id")

    async def _run(self, body: Callable[[Connection], Awaitable[T]]) -> T:
        if self._txn is not None:
            await self._txn.flush()
            return await body(self._txn.conn)
        async with self._service.pool.acquire() as conn:
            return await body(conn)


def _identity_json(identity: Any | None) -> Any:
    """The identity a job runs with, stored whole so the job sees the same ``ctx.auth`` as its scheduler."""
    if identity is None:
        return None
    if isinstance(identity, msgspec.Struct):
        return msgspec.to_builtins(identity)
    return {"subject": str(identity.subject)}
