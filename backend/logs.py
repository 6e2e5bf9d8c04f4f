"""Logs: function log lines for callers, and bounds on the engine's own log.

Function log lines: ``ctx.log`` and ``print`` inside a function come back to the caller as ``logLines``.

>>> ctx.log("booked", booking_id)          # same as ctx.log.log(...): level LOG
>>> ctx.log.info("horizon", {"days": 30})  # also .debug, .warn, .error
>>> print("plain text")                    # captured as a LOG line of this call

Values are joined with spaces; strings are quoted, everything else is JSON (``repr`` when not JSON-able).
The lines go back to the caller (the official clients print them in the browser console) and appear under
the call's line in the server's call log. A call keeps at most 256 lines of at most 4,096 characters each.

Lines look like ``[LOG] 'text'`` or ``[ERROR] …`` so the official clients print them as
``[CONVEX Q(path)] [LOG] 'text'``. ``print`` is captured per task through a context variable, so concurrent
functions never mix their lines.

The engine's log: a client controls much of what the engine logs about its requests (arguments, the depth of
a traceback), and can repeat a request as often as it likes. ``BoundedLogs`` keeps every record under
``knobs.LOG_MAX_CHARS`` and lets each place log at most ``knobs.LOG_REPEAT_LIMIT`` records per window, so no
input makes one line, or the log as a whole, grow without bound.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import time
import traceback
from typing import Any, TextIO

import msgspec

from . import knobs

__all__ = ["BoundedLogs", "LogCollector", "capture_print", "engine_logger", "limit_engine_logs"]

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


# -- bounds on the engine's own log ----------------------------------------------------------------------------

_TRACEBACK_FRAMES = 12  # innermost frames kept per exception in a chain (the outermost are the loop's own)
_LIMITED_LOGGERS = ("backend", "uvicorn.error", "asyncio", "litestar")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(0, limit - 40) // 2
    return f"{text[:keep]} …[{len(text) - 2 * keep} chars cut]… {text[len(text) - keep:]}"


class BoundedLogs(logging.Filter):
    """A filter that bounds each record and rate-limits repeats.

    A "place" is (logger, exception type, source file and line): the same bug hit by many requests is one
    place. Warnings and errors are rate-limited (informational records, such as one line per call, are only
    cut): each place logs at most ``LOG_REPEAT_LIMIT`` records per ``LOG_REPEAT_WINDOW_SECONDS``; the next
    record after a suppressed stretch says how many were suppressed. Records are cut to ``LOG_MAX_CHARS``
    (message and traceback together), tracebacks to their innermost frames.
    """

    _MAX_PLACES = 10_000

    def __init__(self) -> None:
        super().__init__()
        self._places: dict[tuple[str, str, str, int], list[float]] = {}  # place -> [window start, count, cut]

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_bounded", False):  # already seen by a filter on another logger
            return True
        if record.levelno < logging.WARNING:  # ordinary records (one per call with LOG_CALLS=all): cut only
            self._bound(record, 0)
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        place = (record.name, exc_type, record.pathname, record.lineno)
        now = time.monotonic()
        seen = self._places.get(place)
        if seen is None or now - seen[0] >= knobs.LOG_REPEAT_WINDOW_SECONDS:
            suppressed = int(seen[2]) if seen is not None else 0
            if len(self._places) >= self._MAX_PLACES:
                self._places.clear()
            seen = self._places[place] = [now, 0, 0]
        else:
            suppressed = 0
        if seen[1] >= knobs.LOG_REPEAT_LIMIT:
            seen[2] += 1
            return False
        seen[1] += 1
        self._bound(record, suppressed)
        return True

    @staticmethod
    def _bound(record: logging.LogRecord, suppressed: int) -> None:
        record._bounded = True  # type: ignore[attr-defined]
        limit = knobs.LOG_MAX_CHARS
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what there is rather than raising in logging
            message = f"{record.msg!r} % {record.args!r}"
        if suppressed:
            message += f" [{suppressed} similar records suppressed]"
        message = _cut(message, limit)
        exc_text = record.exc_text
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, value, tb = record.exc_info
            try:
                exc_text = "".join(traceback.TracebackException(
                    exc_type, value, tb, limit=-_TRACEBACK_FRAMES).format())  # type: ignore[arg-type]
            except Exception:  # formatting a hostile exception failed: keep its type only
                exc_text = f"{getattr(exc_type, '__name__', exc_type)} (traceback unavailable)"
        record.msg, record.args = message, None
        record.exc_info = None
        record.exc_text = _cut(exc_text.rstrip("\n"), max(256, limit - len(message))) if exc_text else None
        if record.stack_info:
            record.stack_info = _cut(record.stack_info, limit)


_bounded_logs = BoundedLogs()


def engine_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the engine's bounds on it."""
    logger = logging.getLogger(name)
    if _bounded_logs not in logger.filters:
        logger.addFilter(_bounded_logs)
    return logger


def limit_engine_logs() -> None:
    """Put the bounds on every engine logger created so far and on the server's own (idempotent)."""
    for name in list(logging.Logger.manager.loggerDict):
        if any(name == root or name.startswith(root + ".") for root in _LIMITED_LOGGERS):
            engine_logger(name)
    for name in _LIMITED_LOGGERS:
        engine_logger(name)
