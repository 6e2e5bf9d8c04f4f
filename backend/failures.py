"""Unexpected failures: a request id, one traceback in the server log, and what the caller may see.

A function that raises something other than ``AppError`` or a ``BackendError`` has a bug. The server logs
it once, with its traceback, under a fresh request id; the caller gets ``[Request ID: <id>] Server Error``.
In development (``python -m backend dev``) the caller also gets the exception's type and message, as
Convex shows them in the client's console in dev and redacts them in production.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

from .errors import AppError, BackendError

__all__ = ["is_failure", "public_message", "report", "reported", "request_id", "stamp"]

log = logging.getLogger("backend")

_MAX_MESSAGE_CHARS = 1000


def is_failure(error: BaseException) -> bool:
    """A bug or an outage, not an answer: neither an ``AppError`` nor a client-side ``BackendError``."""
    if isinstance(error, AppError):
        return False
    return not isinstance(error, BackendError) or error.status >= 500


def stamp(error: BaseException, *, expose: bool) -> str:
    """Give ``error`` a request id (once) and decide what the caller sees; returns the id."""
    rid: str | None = getattr(error, "_request_id", None)
    if rid is None:
        rid = secrets.token_hex(8)
        public = f"[Request ID: {rid}] Server Error"
        if expose:
            text = str(error)
            if len(text) > _MAX_MESSAGE_CHARS:
                text = text[:_MAX_MESSAGE_CHARS] + "…"
            public += f"\nUncaught {type(error).__name__}: {text}"
        with contextlib.suppress(AttributeError):  # an exception type with __slots__ keeps "Server Error"
            error._request_id = rid  # type: ignore[attr-defined]
            error._public_message = public  # type: ignore[attr-defined]
    return rid


def request_id(error: BaseException) -> str | None:
    rid: str | None = getattr(error, "_request_id", None)
    return rid


def public_message(error: BaseException) -> str:
    """What a caller is told about a failure that is not an ``AppError`` or a ``BackendError``."""
    message: str | None = getattr(error, "_public_message", None)
    return message or "Server Error"


def reported(error: BaseException) -> bool:
    return bool(getattr(error, "_reported", False))


def report(error: BaseException, what: str, *, expose: bool = False) -> str:
    """Log ``error`` with its traceback unless that was done already; returns its request id."""
    rid = stamp(error, expose=expose)
    if not reported(error):
        mark_reported(error)
        log.error("%s failed [Request ID: %s]: %s: %s", what, rid, type(error).__name__, error, exc_info=error)
    return rid


def mark_reported(error: BaseException) -> None:
    with contextlib.suppress(AttributeError):
        error._reported = True  # type: ignore[attr-defined]
