"""Snapshot timestamps: a hybrid logical clock in nanoseconds that never goes backwards.

Each processed snapshot gets a stamp: wall-clock nanoseconds, bumped past every stamp this node has issued
and every timestamp a client has shown it (``maxObservedTimestamp``). The high-water mark is kept in
PostgreSQL (``_clock``), so a restarted node, or another node, never stamps below it.
"""

from __future__ import annotations

import time

__all__ = ["HybridClock"]

_MAX = (1 << 63) - 1
#: How far ahead of this node's wall clock a client's timestamp may be (another node's clock may run ahead).
MAX_CLIENT_LEAD_NS = 300 * 1_000_000_000


class HybridClock:
    def __init__(self, floor: int = 0) -> None:
        self.last = floor

    def observe(self, ts: int) -> None:
        """Move past a timestamp seen elsewhere (the persisted high-water mark, another node's stamp)."""
        if 0 <= ts <= _MAX and ts > self.last:
            self.last = ts

    def plausible(self, ts: int) -> bool:
        """Could this deployment have issued ``ts``? A client cannot push the clock far into the future
        (which would make every later timestamp useless to every client)."""
        return 0 <= ts <= max(self.last, time.time_ns()) + MAX_CLIENT_LEAD_NS

    def stamp(self) -> int:
        self.last = max(time.time_ns(), self.last + 1)
        return self.last
