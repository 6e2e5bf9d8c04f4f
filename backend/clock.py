"""Where functions get "now": the system clock, or a controllable one for tests."""

from __future__ import annotations

import datetime as dt

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock:
    def now(self) -> dt.datetime:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock(Clock):
    """A clock that moves only when told to, so tests can cross days without sleeping."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime.now(dt.UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")

    def now(self) -> dt.datetime:
        return self._now

    def set(self, when: dt.datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = when

    def advance(self, **delta: float) -> dt.datetime:
        self._now += dt.timedelta(**delta)
        return self._now
