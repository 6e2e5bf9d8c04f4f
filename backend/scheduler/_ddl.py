"""The scheduler's system tables, created with the engine's other system tables at start.

``_scheduled_jobs`` holds every scheduled call, pending or finished (the history of a cron is its jobs,
found by ``cron_name``). ``_crons`` holds one row per declared cron with its next firing. The sequence
``_scheduler_nodes`` numbers executor nodes; a node holds a session advisory lock on its number for as
long as it lives, so any other node can tell a dead claimant from a busy one.
"""

from __future__ import annotations

__all__ = ["NODE_LOCK_SPACE", "SCHEDULER_DDL"]

#: First key of the two-key advisory locks that mark a live executor node (the second is its number).
NODE_LOCK_SPACE = 0x5C4E_D01E & 0x7FFF_FFFF

SCHEDULER_DDL = [
    """CREATE TABLE IF NOT EXISTS _scheduled_jobs (
        id text PRIMARY KEY,
        function_path text NOT NULL,
        args jsonb NOT NULL,
        kind text NOT NULL CHECK (kind IN ('mutation', 'action')),
        status text NOT NULL CHECK (status IN ('pending', 'in_progress', 'success', 'failed', 'canceled')),
        attempts integer NOT NULL DEFAULT 0,
        run_at timestamptz NOT NULL,
        tenant text,
        subject text,
        identity jsonb,
        cron_name text,
        claimed_by integer,
        result jsonb,
        error text,
        log_lines jsonb,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        started_at timestamptz,
        completed_at timestamptz)""",
    "CREATE INDEX IF NOT EXISTS _scheduled_jobs_due ON _scheduled_jobs (run_at, id) WHERE status = 'pending'",
    """CREATE INDEX IF NOT EXISTS _scheduled_jobs_running ON _scheduled_jobs (claimed_by)
        WHERE status = 'in_progress'""",
    """CREATE UNIQUE INDEX IF NOT EXISTS _scheduled_jobs_cron_slot ON _scheduled_jobs (cron_name, run_at)
        WHERE cron_name IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS _scheduled_jobs_tenant ON _scheduled_jobs (tenant, run_at)",
    """CREATE INDEX IF NOT EXISTS _scheduled_jobs_completed ON _scheduled_jobs (completed_at)
        WHERE completed_at IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS _crons (
        name text PRIMARY KEY,
        function_path text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('mutation', 'action')),
        args jsonb NOT NULL,
        schedule jsonb NOT NULL,
        next_run timestamptz NOT NULL,
        last_run timestamptz,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS _crons_next_run ON _crons (next_run)",
    "CREATE SEQUENCE IF NOT EXISTS _scheduler_nodes AS integer",
]
