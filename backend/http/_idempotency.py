"""``Idempotency-Key`` on HTTP mutations: a retried POST applies at most once.

The key is stored with the mutation's result in the mutation's own transaction, in the table that keeps the
sync protocol's ``(sessionId, requestId)`` results (as session ``http:<key>``, which no UUID session id can
equal), so it shares their replay rules and retention: a retry with the same key, identity and function
gets the first result without running; the same key from another identity, for another function or with
other arguments (a digest of them, so one key cannot stand for two different requests, say one booking in
each of two businesses) is refused with ``RequestIdReused``. Failed mutations store nothing, so retrying a
failure runs it again. Anonymous callers share one identity: their keys must be unguessable (a UUID).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from litestar import Request

from .. import knobs
from ..errors import InvalidRequest, RequestIdReused
from ..runner import Outcome

__all__ = ["HEADER", "args_binding", "idempotency_key", "idempotent_session", "name_the_header"]

HEADER = "Idempotency-Key"


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    """The request's key, or None; a malformed or repeated header is a 400 naming the rule."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"{HEADER}: send the header once")
    key: str = values[0]
    if not 1 <= len(key) <= knobs.MAX_IDEMPOTENCY_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        raise InvalidRequest(
            f"{HEADER}: must be 1 to {knobs.MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters (no spaces)"
        )
    return key


def idempotent_session(key: str) -> tuple[str, int]:
    """Where the runner stores and looks up the result for ``key``."""
    return f"http:{key}", 0


def args_binding(args: Any) -> str:
    """A digest of the request's arguments (object keys sorted, so key order does not matter)."""
    return hashlib.sha256(msgspec.json.encode(args, order="sorted")).hexdigest()[:32]


def name_the_header(outcome: Outcome) -> Outcome:
    """A refused replay, reworded for the HTTP caller who sent the header rather than a request id."""
    if isinstance(outcome.error, RequestIdReused):
        return Outcome(error=RequestIdReused(
            f"{HEADER}: this key was already used by another caller, for another function or with other "
            "arguments; "
            "send a new key for a new request"))
    return outcome
