"""One log line per function call: when, what kind, which path, how long, how it ended, and its log lines.

    02:31:07.123 mutation bookings:book 14.2ms ok (ws)
        [LOG] 'booked'
    02:31:07.301 query classes:list 3.0ms error invalid_argument: $.args.from: … (http)
    02:31:08.004 action exports:run 8.1ms failed ValueError [Request ID: 9f3a…]: boom (job)
        Traceback (most recent call last): …

Outcomes: ``ok``; ``error <code>`` when the function answered with an ``AppError`` (its ``data.code``) or
the request was refused (``BadArgs``, ``Forbidden``, …); ``failed <code>`` for a bug or an outage, with the
traceback printed once and a request id the caller also sees. Lines go to the ``backend.calls`` logger:
ok and error lines at INFO (shown by ``python -m backend dev``, or with ``BACKEND_LOG_CALLS=all``),
failures at ERROR (always shown). ``BACKEND_LOG_FORMAT=json`` prints every log record as one JSON object per
line. Every value is cut to ``knobs.CALL_LOG_MAX_VALUE_CHARS``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
import time
import traceback
from typing import Any

import msgspec

from . import failures, knobs
from .errors import AppError, BackendError

__all__ = ["JsonFormatter", "TextFormatter", "configure", "finished", "raised", "source", "start"]

log = logging.getLogger("backend.calls")

#: Where the current call came from: http, ws (socket), job (scheduler), cli; set by each entry point.
source: contextvars.ContextVar[str] = contextvars.ContextVar("call_source", default="")


def start() -> float:
    return time.perf_counter()


def _cut(text: str, limit: int | None = None) -> str:
    limit = limit or knobs.CALL_LOG_MAX_VALUE_CHARS
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more chars)"


def _code(error: BaseException) -> str:
    if isinstance(error, AppError):
        data = error.data
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            return str(data["code"])
        return "AppError"
    if isinstance(error, BackendError):
        return error.code
    return type(error).__name__


def finished(
    started: float, kind: str, path: str, error: BaseException | None, log_lines: list[str], *,
    expose: bool = False, attempts: int = 1,
) -> None:
    """Log one finished call (``error`` None: it succeeded)."""
    failed = error is not None and failures.is_failure(error)
    if not failed and not log.isEnabledFor(logging.INFO):
        return
    call: dict[str, Any] = {
        "kind": kind,
        "path": _cut(path),  # a refused call's path is whatever the caller sent
        "source": source.get() or None,
        "durationMs": round((time.perf_counter() - started) * 1000, 2),
        "outcome": "ok" if error is None else ("failed" if failed else "error"),
    }
    if attempts > 1:
        call["attempts"] = attempts
    exc_info = None
    if error is not None:
        call["code"] = _code(error)
        call["message"] = _cut(str(getattr(error, "message", None) or error))
        if failed and not isinstance(error, BackendError):
            call["requestId"] = failures.stamp(error, expose=expose)
            if not failures.reported(error):
                failures.mark_reported(error)
                exc_info = (type(error), error, error.__traceback__)
    shown = log_lines[: knobs.CALL_LOG_MAX_LOG_LINES]
    call["logLines"] = [_cut(line) for line in shown]
    if len(log_lines) > len(shown):
        call["logLines"].append(f"… {len(log_lines) - len(shown)} more log lines")
    log.log(logging.ERROR if failed else logging.INFO, "%s", _text(call), exc_info=exc_info, extra={"call": call})


def raised(started: float, kind: str, path: str, error: BaseException, *, expose: bool = False) -> None:
    """Log a call that raised instead of returning an outcome (refused before it ran, or the engine failed)."""
    finished(started, kind, path, error, [], expose=expose)


def _text(call: dict[str, Any]) -> str:
    parts = [call["kind"], call["path"], f"{call['durationMs']:.1f}ms", call["outcome"]]
    if "code" in call:
        parts.append(call["code"])
        if "requestId" in call:
            parts.append(f"[Request ID: {call['requestId']}]")
        parts[-1] += ":"
        parts.append(call["message"])
    if "attempts" in call:
        parts.append(f"after {call['attempts']} attempts")
    if call["source"]:
        parts.append(f"({call['source']})")
    return " ".join(parts) + "".join("\n    " + line for line in call["logLines"])


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm`` then the message; other loggers' records also name their level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        text = record.getMessage()
        if not hasattr(record, "call"):  # cut generously: a dev reload error block must stay whole
            text = f"{record.levelname} {record.name}: {_cut(text, knobs.CALL_LOG_MAX_TRACEBACK_CHARS)}"
        trace = _traceback_text(record)
        if trace:
            text += "\n" + trace
        return f"{when} {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger`` and either the call's fields or ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        call = getattr(record, "call", None)
        if call is not None:
            body.update(call)
        else:
            body["message"] = _cut(record.getMessage())
        trace = _traceback_text(record)
        if trace:
            body["traceback"] = trace
        return msgspec.json.encode(body).decode()


def _traceback_text(record: logging.LogRecord) -> str:
    """The record's traceback, bounded: from its exception, or as already rendered (and cut) by the engine's
    log filter (``logs.BoundedLogs``), which keeps the text in ``exc_text``."""
    text = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else record.exc_text or ""
    return _cut(text.rstrip("\n"), knobs.CALL_LOG_MAX_TRACEBACK_CHARS) if text else ""


def configure(*, calls: bool) -> None:
    """Send every log record to stderr in ``knobs.LOG_FORMAT``; ``calls``: also log calls that succeeded."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if knobs.LOG_FORMAT == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    log.setLevel(logging.INFO if calls or knobs.LOG_CALLS == "all" else logging.WARNING)
