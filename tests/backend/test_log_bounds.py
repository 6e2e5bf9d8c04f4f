"""The engine's log stays bounded whatever the input: one record is cut to ``BACKEND_LOG_MAX_CHARS`` (message
and traceback, innermost frames kept), and records from one place beyond ``BACKEND_LOG_REPEAT_LIMIT`` per
window are suppressed and counted on the next record that gets through."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

from backend import knobs
from backend.logs import engine_logger


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logger() -> Any:
    log = engine_logger(f"backend.test-{uuid.uuid4().hex[:8]}")
    keep = _Keep()
    log.addHandler(keep)
    log.propagate = False
    yield log, keep.lines


def recurse(depth: int) -> None:
    if depth:
        recurse(depth - 1)
    raise RuntimeError("x" * 100_000)


def test_a_record_is_cut_to_the_limit(logger: Any) -> None:
    log, lines = logger
    log.error("argument was %r", "y" * 1_000_000)
    try:
        recurse(500)
    except RuntimeError:
        log.exception("failed with a deep traceback")
    assert len(lines) == 2
    assert all(len(line) <= knobs.LOG_MAX_CHARS + 300 for line in lines), [len(line) for line in lines]
    assert "chars cut" in lines[0]
    assert lines[1].startswith("failed with a deep traceback") and "RuntimeError" in lines[1]
    assert lines[1].count("in recurse") <= 12


def test_repeats_from_one_place_are_suppressed_and_counted(logger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "LOG_REPEAT_LIMIT", 3)
    monkeypatch.setattr(knobs, "LOG_REPEAT_WINDOW_SECONDS", 0.2)
    log, lines = logger

    def fail(i: int) -> None:
        log.warning("the same failure %d", i)  # one place, whatever the message

    for i in range(50):
        fail(i)
    assert len(lines) == 3
    time.sleep(0.25)
    fail(50)
    assert len(lines) == 4 and "[47 similar records suppressed]" in lines[-1], lines[-1]
    log.warning("from another line")  # another place is not affected
    assert len(lines) == 5


def test_informational_records_are_cut_but_never_suppressed() -> None:
    """One line per call (``BACKEND_LOG_CALLS=all``, or the dev server) comes from one place: all must print."""
    import logging as _logging

    from backend.logs import BoundedLogs

    bounded = BoundedLogs()
    records = [_logging.LogRecord("backend.calls", _logging.INFO, __file__, 1, "call %d", (n,), None) for n in range(500)]
    assert all(bounded.filter(record) for record in records)
    errors = [_logging.LogRecord("backend.calls", _logging.ERROR, __file__, 2, "failed %d", (n,), None)
              for n in range(500)]
    assert sum(bounded.filter(record) for record in errors) < 50
