"""Snapshot timestamps: a hybrid logical clock in nanoseconds that never goes backwards.

Each processed snapshot gets a stamp: wall-clock nanoseconds, bumped past every stamp this node has issued
and every timestamp a client has shown it (``maxObservedTimestamp``). The high-water mark is kept in
PostgreSQL (``_clock``), so a restarted node, or another node, never stamps below it.
"""

from __future__ import annotations

import time

__all__ = ["HybridClock"]

_MAX = (1 << 63) - 1


class HybridClock:
    def __init__(self, floor: int = 0) -> None:
        self.last = floor

    def observe(self, ts: int) -> None:
        if 0 <= ts <= _MAX and ts > self.last:
            self.last = ts

    def stamp(self) -> int:
        self.last = max(time.time_ns(), self.last + 1)
        return self.last
