"""Running one claimed job.

A mutation job marks itself ``success`` inside the mutation's own transaction (the runner's
``before_commit`` hook), so the state change commits if and only if the mutation's writes do: a rollback or
a serialization retry leaves nothing marked, and a crash before commit leaves the job in_progress, which
recovery may safely hand back to pending. If the claim was lost meanwhile (another node recovered the job)
the hook aborts the transaction, so the mutation can never commit twice.

An action job was committed as in_progress before it started, so after a crash it is failed, never rerun.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from .. import calllog
from ..auth import UserIdentity
from ..db import Txn
from ..errors import BackendError, Conflict
from ..postgres import Connection
from ..runner import Outcome
from . import _jobs

if TYPE_CHECKING:
    from .service import Scheduler

__all__ = ["LostClaim", "run_job"]

log = logging.getLogger("backend.scheduler")

#: Failures of the database or the connection to it (not of the function): retried when recording an end.
_DATABASE_TROUBLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class LostClaim(Exception):
    """The job is no longer claimed by this node; its transaction must not commit."""


def identity_from(stored: Any) -> Any | None:
    if stored is None:
        return None
    try:
        return msgspec.convert(stored, UserIdentity)
    except msgspec.ValidationError:
        subject = str(stored.get("subject"))
        return UserIdentity(subject=subject, issuer=None, token_identifier=f"|{subject}")


async def run_job(service: Scheduler, row: Any, node: int) -> None:
    """Run a job this node has claimed and record how it ended (never leaving it in_progress)."""
    calllog.source.set("job")
    try:
        await _run_job(service, row, node)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a defect in the engine: settle the job the way a crash would
        log.exception("scheduled job %s (%s) could not be run", row["id"], row["function_path"])
        text = f"internal error ({_jobs.describe_error(error)})"
        await _settle(service, lambda c: _jobs.release_jobs(
            c, node, service.clock.now(), reason=text, max_attempts=service.max_attempts, job_id=row["id"]))


async def _run_job(service: Scheduler, row: Any, node: int) -> None:
    job_id: str = row["id"]
    try:
        spec = service.registry.resolve(row["function_path"], kind=row["kind"], allow_internal=True)
        kwargs = service.runner.validate_args(spec, row["args"])
    except BackendError as error:
        refused = _jobs.describe_error(error)
        await _settle(service, lambda c: _jobs.finish_job(
            c, job_id, node, service.clock.now(), status="failed", error=refused))
        return
    identity = identity_from(row["identity"])
    if row["kind"] == "mutation":
        await _run_mutation(service, row, node, spec, kwargs, identity)
    else:
        await _run_action(service, job_id, node, spec, kwargs, identity)


async def _run_mutation(service: Scheduler, row: Any, node: int, spec: Any, kwargs: dict[str, Any],
                        identity: Any | None) -> None:
    job_id: str = row["id"]

    async def before_commit(txn: Txn) -> None:
        if not await _jobs.mark_success(txn.conn, job_id, node, service.clock.now()):
            raise LostClaim(job_id)

    try:
        outcome = await service.runner.execute_mutation(spec, kwargs, identity, before_commit=before_commit)
    except LostClaim:
        log.warning("scheduled job %s (%s) was recovered by another node; not committing it", job_id, spec.path)
        return
    except asyncio.CancelledError:
        raise
    except BackendError as error:  # refused before its body ran (NotFound, Unauthenticated, ...)
        outcome = Outcome(error=error)
    except Exception as error:
        # The database, not the function, failed. Success is marked atomically with the commit, so a job
        # still in_progress provably did not commit and may run again.
        await _retry_later(service, row, node, error)
        return
    if outcome.ok:
        await _settle(service, lambda c: _jobs.store_result(c, job_id, node, outcome.value, outcome.log_lines))
    elif isinstance(outcome.error, Conflict):
        await _retry_later(service, row, node, outcome.error)
    else:
        assert outcome.error is not None
        error_text = _jobs.describe_error(outcome.error)
        await _settle(service, lambda c: _jobs.finish_job(
            c, job_id, node, service.clock.now(), status="failed", error=error_text, log_lines=outcome.log_lines))


async def _retry_later(service: Scheduler, row: Any, node: int, error: BaseException) -> None:
    """Give an uncommitted mutation job back to pending, or fail it once it has been claimed too often."""
    job_id: str = row["id"]
    log.warning("scheduled job %s (%s) did not commit (%r); giving it back", job_id, row["function_path"], error)
    if row["attempts"] >= service.max_attempts:
        gave_up = f"gave up after {row['attempts']} attempts: {_jobs.describe_error(error)}"
        await _settle(service, lambda c: _jobs.finish_job(
            c, job_id, node, service.clock.now(), status="failed", error=gave_up))
    else:
        await _settle(service, lambda c: _jobs.requeue_job(c, job_id, node, service.clock.now()))


async def _run_action(service: Scheduler, job_id: str, node: int, spec: Any, kwargs: dict[str, Any],
                      identity: Any | None) -> None:
    try:
        outcome = await service.runner.execute_action(spec, kwargs, identity)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        outcome = Outcome(error=error)
    now = service.clock.now()
    if outcome.ok:
        await _settle(service, lambda c: _jobs.finish_job(
            c, job_id, node, now, status="success", result=outcome.value, log_lines=outcome.log_lines))
    else:
        assert outcome.error is not None
        error_text = _jobs.describe_error(outcome.error)
        await _settle(service, lambda c: _jobs.finish_job(
            c, job_id, node, now, status="failed", error=error_text, log_lines=outcome.log_lines))


async def _settle(service: Scheduler, update: Callable[[Connection], Awaitable[Any]]) -> None:
    """Record a job's end, retrying through database trouble until it sticks or the node stops.

    If the node stops first the job stays in_progress under this node's number and is settled by the
    recovery that runs when the node's lock is released.
    """
    delay = 0.05
    while True:
        try:
            async with service.pool.acquire() as conn:
                await update(conn)
            return
        except asyncio.CancelledError:
            raise
        except _DATABASE_TROUBLE as error:
            if service.stopping:
                log.warning("could not record a scheduled job's end (%r); recovery will settle it", error)
                return
            log.warning("could not record a scheduled job's end (%r); retrying", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
