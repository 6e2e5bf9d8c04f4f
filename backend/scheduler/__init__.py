"""Durable scheduled functions and crons, stored in PostgreSQL and run by every node.

Functions schedule through ``ctx.scheduler`` (``run_after``, ``run_at``, ``cancel``, ``get``, ``list``);
applications declare crons in ``functions/crons.py`` with ``Crons``. See README.md in this folder for the
guarantees.
"""

from __future__ import annotations

from ._cron import CronSchedule, IntervalSchedule, Schedule, parse_cron
from ._crons import CronJob, Crons
from ._jobs import JobKind, JobStatus, ScheduledJob

__all__ = [
    "CronJob",
    "CronSchedule",
    "Crons",
    "IntervalSchedule",
    "JobKind",
    "JobStatus",
    "Schedule",
    "ScheduledJob",
    "parse_cron",
]
