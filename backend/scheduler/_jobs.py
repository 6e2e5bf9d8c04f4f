"""Rows of ``_scheduled_jobs`` and every statement that moves a job through its states.

pending ──claim──► in_progress ──► success | failed        pending ──cancel──► canceled

Every transition out of ``in_progress`` is conditional on the job still being claimed by the node that
finishes it, so a node that lost its claim (another node recovered the job) can never overwrite the state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from .. import ids
from ..postgres import Connection
from ..values import decode_value

__all__ = [
    "JOBS_TABLE",
    "JobKind",
    "JobStatus",
    "ScheduledJob",
    "cancel_job",
    "claim_due",
    "describe_error",
    "fetch_job",
    "finish_job",
    "insert_job",
    "is_job_id",
    "job_from_row",
    "mark_success",
    "new_job_id",
    "next_due",
    "prune_history",
    "release_jobs",
    "requeue_job",
    "store_result",
]

JOBS_TABLE = "_scheduled_jobs"
JobKind = Literal["mutation", "action"]
JobStatus = Literal["pending", "in_progress", "success", "failed", "canceled"]
STATUSES: tuple[JobStatus, ...] = ("pending", "in_progress", "success", "failed", "canceled")
_MAX_ERROR_CHARS = 4096


class ScheduledJob(msgspec.Struct, kw_only=True, rename="camel"):
    """One scheduled call as functions see it (``ctx.scheduler.get`` / ``list``)."""

    id: str
    function_path: str
    args: dict[str, Any]
    kind: JobKind
    status: JobStatus
    attempts: int
    run_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    result: Any = None
    error: str | None = None
    cron_name: str | None = None
    subject: str | None = None


def new_job_id() -> str:
    """An id in the engine's format whose table part says ``_scheduled_jobs``."""
    return ids.new_id(ids.table_number(JOBS_TABLE))


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and ids.decode_table_number(value) == ids.table_number(JOBS_TABLE)


def job_from_row(row: Any) -> ScheduledJob:
    return ScheduledJob(
        id=row["id"],
        function_path=row["function_path"],
        args=decode_value(row["args"]),
        kind=row["kind"],
        status=row["status"],
        attempts=row["attempts"],
        run_at=row["run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        result=None if row["result"] is None else decode_value(row["result"]),
        error=row["error"],
        cron_name=row["cron_name"],
        subject=row["subject"],
    )


def describe_error(error: BaseException) -> str:
    """The text stored in ``error``: the stable code first, then the message."""
    from ..errors import AppError, BackendError

    if isinstance(error, AppError):
        text = f"AppError: {error.message}"
        if not isinstance(error.data, str):
            try:
                text += " " + msgspec.json.encode(error.data).decode()
            except (TypeError, msgspec.EncodeError):
                text += " " + repr(error.data)
    elif isinstance(error, BackendError):
        text = f"{error.code}: {error.message}"
    else:
        text = f"InternalServerError: {type(error).__name__}: {error}"
    return text[:_MAX_ERROR_CHARS]


async def insert_job(
    conn: Connection,
    *,
    job_id: str,
    path: str,
    args: Any,
    kind: JobKind,
    run_at: dt.datetime,
    now: dt.datetime,
    tenant: str | None = None,
    subject: str | None = None,
    identity: Any = None,
    cron_name: str | None = None,
) -> bool:
    """Insert a pending job; False when a cron already has a job for this slot."""
    inserted = await conn.fetchval(
        """INSERT INTO _scheduled_jobs (id, function_path, args, kind, status, run_at, tenant, subject, identity,
                                        cron_name, created_at, updated_at)
           VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $10)
           ON CONFLICT (cron_name, run_at) WHERE cron_name IS NOT NULL DO NOTHING
           RETURNING true""",
        job_id, path, args, kind, run_at, tenant, subject, identity, cron_name, now,
    )
    return bool(inserted)


async def fetch_job(conn: Connection, job_id: str) -> Any:
    return await conn.fetchrow("SELECT * FROM _scheduled_jobs WHERE id = $1", job_id)


async def cancel_job(conn: Connection, job_id: str, now: dt.datetime) -> bool:
    """Cancel a job that has not started; jobs already running or finished are left as they are."""
    done = await conn.fetchval(
        """UPDATE _scheduled_jobs SET status = 'canceled', completed_at = $2, updated_at = $2
           WHERE id = $1 AND status = 'pending' RETURNING true""",
        job_id, now,
    )
    return bool(done)


async def claim_due(conn: Connection, node: int, now: dt.datetime, limit: int) -> list[Any]:
    """Move up to ``limit`` due jobs to in_progress for ``node``, oldest ``run_at`` first (committed)."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT id FROM _scheduled_jobs
               WHERE status = 'pending' AND run_at <= $2
               ORDER BY run_at, id
               LIMIT $3
               FOR UPDATE SKIP LOCKED)
           UPDATE _scheduled_jobs j
           SET status = 'in_progress', claimed_by = $1, attempts = j.attempts + 1, started_at = $2, updated_at = $2
           FROM due WHERE j.id = due.id
           RETURNING j.*""",
        node, now, limit,
    )
    return sorted(rows, key=lambda r: (r["run_at"], r["id"]))


async def mark_success(conn: Connection, job_id: str, node: int, now: dt.datetime) -> bool:
    """Inside the job's own mutation transaction: success commits if and only if the mutation does."""
    done = await conn.fetchval(
        """UPDATE _scheduled_jobs SET status = 'success', completed_at = $3, updated_at = $3
           WHERE id = $1 AND status = 'in_progress' AND claimed_by = $2 RETURNING true""",
        job_id, node, now,
    )
    return bool(done)


async def store_result(conn: Connection, job_id: str, node: int, result: Any, log_lines: list[str]) -> None:
    await conn.execute(
        """UPDATE _scheduled_jobs SET result = $3, log_lines = $4
           WHERE id = $1 AND claimed_by = $2 AND status = 'success'""",
        job_id, node, result, log_lines,
    )


async def finish_job(
    conn: Connection,
    job_id: str,
    node: int,
    now: dt.datetime,
    *,
    status: Literal["success", "failed"],
    result: Any = None,
    error: str | None = None,
    log_lines: list[str] | None = None,
) -> bool:
    done = await conn.fetchval(
        """UPDATE _scheduled_jobs
           SET status = $3, result = $4, error = $5, log_lines = $6, completed_at = $7, updated_at = $7
           WHERE id = $1 AND status = 'in_progress' AND claimed_by = $2 RETURNING true""",
        job_id, node, status, result, error, log_lines or [], now,
    )
    return bool(done)


async def requeue_job(conn: Connection, job_id: str, node: int, now: dt.datetime) -> bool:
    """Give a mutation job back (its transaction never committed, so running it again is safe)."""
    done = await conn.fetchval(
        """UPDATE _scheduled_jobs SET status = 'pending', claimed_by = NULL, updated_at = $3
           WHERE id = $1 AND status = 'in_progress' AND claimed_by = $2 RETURNING true""",
        job_id, node, now,
    )
    return bool(done)


async def release_jobs(
    conn: Connection, node: int, now: dt.datetime, *, reason: str, max_attempts: int, job_id: str | None = None
) -> tuple[int, int]:
    """Settle every job ``node`` left in_progress (or just ``job_id``): (jobs failed, mutations requeued).

    A mutation never committed while its job is in_progress, so it goes back to pending (or fails once it
    has been claimed ``max_attempts`` times). An action may have done part of its work, so it fails: actions
    run at most once.
    """
    rows = await conn.fetch(
        """SELECT id, kind, attempts FROM _scheduled_jobs
           WHERE status = 'in_progress' AND claimed_by = $1 AND ($2::text IS NULL OR id = $2) FOR UPDATE""",
        node, job_id,
    )
    failed = requeued = 0
    for row in rows:
        if row["kind"] == "action" or row["attempts"] >= max_attempts:
            error = (f"{reason} mid-action" if row["kind"] == "action"
                     else f"{reason} mid-mutation (gave up after {row['attempts']} attempts)")
            await conn.execute(
                """UPDATE _scheduled_jobs SET status = 'failed', error = $2, completed_at = $3, updated_at = $3
                   WHERE id = $1""",
                row["id"], error, now,
            )
            failed += 1
        else:
            await conn.execute(
                "UPDATE _scheduled_jobs SET status = 'pending', claimed_by = NULL, updated_at = $2 WHERE id = $1",
                row["id"], now,
            )
            requeued += 1
    return failed, requeued


async def next_due(conn: Connection) -> dt.datetime | None:
    """The earliest time anything (a pending job or a cron) becomes due."""
    value: dt.datetime | None = await conn.fetchval(
        """SELECT least((SELECT min(run_at) FROM _scheduled_jobs WHERE status = 'pending'),
                        (SELECT min(next_run) FROM _crons))"""
    )
    return value


async def prune_history(conn: Connection, before: dt.datetime, batch: int = 10_000) -> int:
    """Delete finished jobs completed before ``before`` (bounded per call)."""
    deleted = await conn.fetch(
        """DELETE FROM _scheduled_jobs WHERE id IN (
               SELECT id FROM _scheduled_jobs WHERE completed_at < $1 AND status IN ('success', 'failed', 'canceled')
               LIMIT $2)
           RETURNING 1""",
        before, batch,
    )
    return len(deleted)
