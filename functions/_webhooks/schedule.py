"""When a failed delivery is tried again (H4): exponential backoff from ``retry_base_seconds`` (doubling,
capped at ``retry_max_seconds``), for ``retry_window_seconds`` (a day) after the first attempt; an attempt
that would fall later than that does not happen and the delivery is marked failed."""

from __future__ import annotations

import datetime as dt

from . import config

__all__ = ["lease_until", "next_attempt"]


def next_attempt(attempts: int, first_attempt_at: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """When to try again after ``attempts`` failed attempts, or None when the retry window is used up."""
    delay = min(config.retry_base_seconds() * 2 ** max(0, attempts - 1), config.retry_max_seconds())
    when = now + dt.timedelta(seconds=delay)
    if when - first_attempt_at > dt.timedelta(seconds=config.retry_window_seconds()):
        return None
    return when


def lease_until(now: dt.datetime) -> dt.datetime:
    """How long a claimed delivery belongs to the run that claimed it; after that another run may retry it."""
    return now + dt.timedelta(seconds=config.timeout_seconds() * 2 + 30)
