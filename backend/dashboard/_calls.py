"""The live call log: the last N function runs of this node in a ring buffer, read by sequence number.

The runner reports every run (queries re-run by the hub included) through ``Runner.on_call``; the dashboard
polls ``since(seq)`` for what is new. Memory is bounded by ``knobs.DASHBOARD_CALL_LOG_SIZE`` records, each
holding at most a few kilobytes: arguments, error text, actor and every log line are cut (the error text of
a failing function may repeat whatever a caller sent).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import knobs
from ..errors import AppError, BackendError
from ..validators import camel

__all__ = ["CallLog", "CallRecord"]

_MAX_ARGS_CHARS = 2_000
_MAX_LINES = 20


@dataclass(frozen=True, slots=True)
class CallRecord:
    seq: int
    at: float  # epoch seconds
    kind: str
    path: str
    args: str  # JSON, truncated
    actor: str | None
    tenant: str | None
    ok: bool
    error: str | None
    log_lines: tuple[str, ...]
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "kind": self.kind, "path": self.path, "args": self.args,
                "actor": self.actor, "tenant": self.tenant, "ok": self.ok, "error": self.error,
                "logLines": list(self.log_lines), "ms": round(self.ms, 3)}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, AppError | BackendError):
        return _cut(f"{type(error).__name__}: {error.message}", knobs.CALL_LOG_MAX_VALUE_CHARS)
    return _cut(f"{type(error).__name__}: {error}", knobs.CALL_LOG_MAX_VALUE_CHARS)


def _args_text(kwargs: dict[str, Any]) -> str:
    """The arguments as the caller sent them (camelCase wire names), as JSON cut to a readable length."""
    try:
        text = msgspec.json.encode({camel(k): v for k, v in kwargs.items()}, enc_hook=str).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(kwargs)
    return _cut(text, _MAX_ARGS_CHARS)


class CallLog:
    """A bounded, append-only record of function runs; ``since`` returns those after a sequence number."""

    def __init__(self, size: int) -> None:
        self._records: collections.deque[CallRecord] = collections.deque(maxlen=max(1, size))
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def record(self, kind: str, spec: Any, kwargs: dict[str, Any], identity: Any, outcome: Any, seconds: float) -> None:
        self._seq += 1
        actor = None if identity is None else _cut(getattr(identity, "actor", None) or identity.subject, 200)
        self._records.append(CallRecord(
            seq=self._seq, at=time.time(), kind=kind, path=spec.path, args=_args_text(kwargs), actor=actor,
            tenant=outcome.tenant, ok=outcome.error is None, error=_error_text(outcome.error),
            log_lines=tuple(_cut(line, knobs.CALL_LOG_MAX_VALUE_CHARS) for line in outcome.log_lines[:_MAX_LINES]),
            ms=seconds * 1000.0,
        ))

    def since(self, seq: int, *, tenant: str | None = None, limit: int = 200) -> list[CallRecord]:
        """Records after ``seq``, oldest first, at most ``limit`` (the newest ones when more are waiting)."""
        found = [r for r in self._records if r.seq > seq and (tenant is None or r.tenant == tenant)]
        return found[-limit:]
