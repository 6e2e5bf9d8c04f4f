"""Function log lines: ``ctx.log`` and ``print`` inside a function come back to the caller as ``logLines``.

>>> ctx.log("booked", booking_id)          # same as ctx.log.log(...): level LOG
>>> ctx.log.info("horizon", {"days": 30})  # also .debug, .warn, .error
>>> print("plain text")                    # captured as a LOG line of this call

Values are joined with spaces; strings are quoted, everything else is JSON (``repr`` when not JSON-able).
The lines go back to the caller (the official clients print them in the browser console) and appear under
the call's line in the server's call log. A call keeps at most 256 lines of at most 4,096 characters each.

Lines look like ``[LOG] 'text'`` or ``[ERROR] …`` so the official clients print them as
``[CONVEX Q(path)] [LOG] 'text'``. ``print`` is captured per task through a context variable, so concurrent
functions never mix their lines.
"""

from __future__ import annotations

import contextvars
import io
import sys
from typing import Any, TextIO

import msgspec

__all__ = ["LogCollector", "capture_print"]

_MAX_LINES = 256
_MAX_LINE_CHARS = 4096
_current: contextvars.ContextVar[LogCollector | None] = contextvars.ContextVar("log_collector", default=None)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value + "'"
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


class LogCollector:
    """Collects one function run's log lines (bounded; extra lines are dropped with a note)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._dropped = 0

    def _add(self, level: str, parts: tuple[Any, ...]) -> None:
        if len(self.lines) >= _MAX_LINES:
            self._dropped += 1
            return
        text = " ".join(_render(p) for p in parts)
        self.lines.append(f"[{level}] {text[:_MAX_LINE_CHARS]}")

    def __call__(self, *parts: Any) -> None:
        """``ctx.log(...)`` is ``ctx.log.log(...)``, like ``console.log``."""
        self._add("LOG", parts)

    def log(self, *parts: Any) -> None:
        self._add("LOG", parts)

    def debug(self, *parts: Any) -> None:
        self._add("DEBUG", parts)

    def info(self, *parts: Any) -> None:
        self._add("INFO", parts)

    def warn(self, *parts: Any) -> None:
        self._add("WARN", parts)

    def error(self, *parts: Any) -> None:
        self._add("ERROR", parts)

    def finish(self) -> list[str]:
        if self._dropped:
            self.lines.append(f"[WARN] '{self._dropped} more log lines were dropped'")
            self._dropped = 0
        return self.lines

    def activate(self) -> contextvars.Token[LogCollector | None]:
        return _current.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[LogCollector | None]) -> None:
        _current.reset(token)


class _PrintRouter(io.TextIOBase):
    """Stands in for ``sys.stdout``: text printed inside a function goes to that function's log."""

    def __init__(self, real: TextIO) -> None:
        self._real = real
        self._pending: dict[int, str] = {}

    def write(self, text: str) -> int:
        collector = _current.get()
        if collector is None:
            return self._real.write(text)
        key = id(collector)
        buffered = self._pending.get(key, "") + text
        *complete, rest = buffered.split("\n")
        for line in complete:
            collector._add("LOG", (line,))
        self._pending[key] = rest
        if not rest:
            self._pending.pop(key, None)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return self._real.isatty()

    def fileno(self) -> int:
        return self._real.fileno()


def capture_print() -> None:
    """Route ``print`` inside functions to their log lines (idempotent)."""
    if not isinstance(sys.stdout, _PrintRouter):
        sys.stdout = _PrintRouter(sys.stdout)
