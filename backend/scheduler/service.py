"""The scheduler of one node: claims due jobs and crons from PostgreSQL and runs them.

Every node runs the same loop; ``FOR UPDATE SKIP LOCKED`` hands each due job to exactly one of them. A node
is known to be alive by a session advisory lock on its number, held on a dedicated connection that also
LISTENs for wake-ups: a job due soon is announced with a NOTIFY sent in the scheduling transaction, so every
node hears of it exactly when it commits. Jobs a dead node left in_progress are settled by whichever node
first finds its lock free (at start, then periodically): mutations go back to pending, actions fail.

"Due" is decided by the engine clock (``config.clock``), passed to SQL as a parameter, so a ManualClock
moves it; ``run_due()`` processes everything due now and returns when it has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import importlib
import importlib.util
import logging
import time
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import knobs
from ..db import Txn
from ..postgres import Connection
from ..registry import Registry
from ..runner import Runner
from . import _jobs
from ._crons import Crons, fire_due_crons, sync_crons
from ._ddl import NODE_LOCK_SPACE
from ._executor import run_job
from ._handle import SchedulerHandle

if TYPE_CHECKING:
    from ..clock import Clock
    from ..server import Backend

__all__ = ["CHANNEL", "Scheduler"]

log = logging.getLogger("backend.scheduler")

CHANNEL = "backend_jobs"
#: Claims of a mutation job (crashes, lost connections) before it is failed instead of retried.
MAX_MUTATION_ATTEMPTS = 5
_RECOVER_EVERY_SECONDS = 10.0
_PRUNE_EVERY_SECONDS = 3600.0
_STOP_GRACE_SECONDS = 5.0
_MIN_WAIT_SECONDS = 0.02


class Scheduler:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.max_attempts = MAX_MUTATION_ATTEMPTS
        self.stopping = False
        self.node: int | None = None
        self._node_conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._last_recovery = -1e9
        self._last_prune = -1e9

    # -- what the rest of the engine sees ----------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.backend.pool is not None, "backend not started"
        return self.backend.pool

    @property
    def runner(self) -> Runner:
        return self.backend.runner

    @property
    def registry(self) -> Registry:
        return self.backend.registry

    @property
    def clock(self) -> Clock:
        return self.backend.config.clock

    def handle(self, txn: Txn | None, identity: Any | None) -> SchedulerHandle:
        """``ctx.scheduler`` for one mutation attempt (``txn``) or one action (``txn`` None)."""
        return SchedulerHandle(self, txn, identity)

    async def notify(self, conn: Connection) -> None:
        """Wake every node's loop when the current transaction commits."""
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)

    def wake(self) -> None:
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, *, run: bool = True) -> None:
        """Join as a node, settle what dead nodes left behind, register crons and (if ``run``) start the loop."""
        self.stopping = False
        await self._ensure_node()
        await self._recover()
        await self.register_crons(self._declared_crons(), prune=True)
        if run:
            self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        """Stop claiming, give running jobs a short grace, then settle what is left and leave."""
        self.stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=knobs.SCHEDULER_POLL_SECONDS + 10)
            except (TimeoutError, asyncio.CancelledError, Exception):
                log.exception("scheduler loop did not stop cleanly")
            self._task = None
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=_STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.node is not None:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await _jobs.release_jobs(conn, self.node, self.clock.now(), reason="node stopped",
                                             max_attempts=self.max_attempts)
            except Exception:
                log.exception("could not settle this node's jobs; another node's recovery will")
        if self._node_conn is not None:
            with contextlib.suppress(Exception):
                await self._node_conn.close()
            self._node_conn = None

    async def register_crons(self, crons: Crons, *, prune: bool = False) -> list[str]:
        """Store ``crons`` (validated against the registry); with ``prune`` drop crons not in it."""
        async with self.pool.acquire() as conn:
            names = await sync_crons(conn, crons, self.registry, self.clock.now(), prune=prune)
        self._wake.set()
        return names

    def _declared_crons(self) -> Crons:
        name = f"{self.backend.config.functions_package}.crons"
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return Crons()
        crons = getattr(importlib.import_module(name), "crons", None)
        if not isinstance(crons, Crons):
            raise TypeError(f"{name} must define `crons = Crons()`")
        return crons

    # -- processing --------------------------------------------------------------------------------------

    async def run_due(self, *, max_rounds: int = 10_000) -> int:
        """Fire due crons and run every job due now (and jobs those make due now); wait for all of them.

        Returns the number of jobs this node ran. Meant for tests with a ManualClock and for operators.
        """
        await self._ensure_node()
        await self._recover()
        ran = 0
        for _ in range(max_rounds):
            await self._fire_crons()
            launched = await self._claim_and_launch()
            ran += launched
            if not launched and not self._running:
                break
            if self._running:
                await asyncio.wait(list(self._running.values()))
        return ran

    tick = run_due

    async def _loop(self) -> None:
        while not self.stopping:
            self._wake.clear()
            wait = knobs.SCHEDULER_POLL_SECONDS
            try:
                await self._ensure_node()
                if time.monotonic() - self._last_recovery >= _RECOVER_EVERY_SECONDS:
                    await self._recover()
                if time.monotonic() - self._last_prune >= _PRUNE_EVERY_SECONDS:
                    await self._prune()
                await self._fire_crons()
                await self._claim_and_launch()
                wait = await self._wait_hint()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler iteration failed; retrying")
            if self.stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _fire_crons(self) -> None:
        async with self.pool.acquire() as conn:
            await fire_due_crons(conn, self.clock.now())

    async def _claim_and_launch(self) -> int:
        free = knobs.SCHEDULER_MAX_CONCURRENT_JOBS - len(self._running)
        if free <= 0 or self.stopping or self.node is None:
            return 0
        node = self.node
        async with self.pool.acquire() as conn:
            rows = await _jobs.claim_due(conn, node, self.clock.now(), free)
        for row in rows:
            job_id: str = row["id"]
            task = asyncio.create_task(run_job(self, row, node), name=f"job {job_id}")
            self._running[job_id] = task
            task.add_done_callback(functools.partial(self._finished, job_id))
        return len(rows)

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduled job %s: recording its end failed", job_id, exc_info=task.exception())
        self._wake.set()

    async def _wait_hint(self) -> float:
        """Seconds to sleep: until the next known due time, never longer than the poll interval."""
        poll = knobs.SCHEDULER_POLL_SECONDS
        if len(self._running) >= knobs.SCHEDULER_MAX_CONCURRENT_JOBS:
            return poll  # a finishing job wakes the loop
        async with self.pool.acquire() as conn:
            due = await _jobs.next_due(conn)
        if due is None:
            return poll
        return min(poll, max(_MIN_WAIT_SECONDS, (due - self.clock.now()).total_seconds()))

    # -- nodes and recovery ------------------------------------------------------------------------------

    async def _ensure_node(self) -> None:
        """Hold a live node number (a new one if the connection holding the lock was lost)."""
        if self._node_conn is not None and not self._node_conn.is_closed():
            return
        if self.node is not None:
            log.warning("scheduler node %s lost its lock connection; joining again as a new node", self.node)
        conn = await asyncpg.connect(self.backend.url)
        try:
            node = int(await conn.fetchval("SELECT nextval('_scheduler_nodes')::integer"))
            await conn.execute("SELECT pg_advisory_lock($1, $2)", NODE_LOCK_SPACE, node)
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._node_conn, self.node = conn, node

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _recover(self) -> int:
        """Settle jobs left in_progress by nodes whose lock is free (dead); returns how many."""
        self._last_recovery = time.monotonic()
        settled = 0
        async with self.pool.acquire() as conn:
            nodes = await conn.fetch(
                """SELECT DISTINCT claimed_by FROM _scheduled_jobs
                   WHERE status = 'in_progress' AND claimed_by IS DISTINCT FROM $1""",
                self.node,
            )
            for record in nodes:
                dead: int = record["claimed_by"]
                async with conn.transaction():
                    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", NODE_LOCK_SPACE, dead):
                        continue  # alive: its jobs are still running
                    failed, requeued = await _jobs.release_jobs(
                        conn, dead, self.clock.now(), reason="node crashed", max_attempts=self.max_attempts)
                if failed or requeued:
                    log.warning("scheduler node %s died: %d jobs failed, %d requeued", dead, failed, requeued)
                settled += failed + requeued
        return settled

    async def _prune(self) -> None:
        self._last_prune = time.monotonic()
        before = self.clock.now() - dt.timedelta(seconds=knobs.SCHEDULER_HISTORY_SECONDS)
        async with self.pool.acquire() as conn:
            await _jobs.prune_history(conn, before)
