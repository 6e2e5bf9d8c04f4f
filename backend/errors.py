"""One error hierarchy for the whole engine.

Every error has a stable short ``code`` (what clients and tests match on), an HTTP ``status`` for the
HTTP API, and a developer ``message``. ``AppError`` is raised by application code and reaches the client
with its ``data``; every other error that is not a ``BackendError`` is a bug and is redacted on the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AppError",
    "BackendError",
    "Conflict",
    "Forbidden",
    "FunctionNotFound",
    "FunctionTimeout",
    "InvalidArgs",
    "InvalidRequest",
    "InvalidReturn",
    "InvalidWrite",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "ReferenceViolation",
    "RequestIdReused",
    "SchemaError",
    "Unauthenticated",
    "Unavailable",
    "UniqueViolation",
]


class BackendError(Exception):
    """Root of the engine's errors; subclasses differ only by class attributes."""

    code: ClassVar[str] = "InternalServerError"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class InvalidRequest(BackendError):
    """The request itself is malformed (bad JSON, bad envelope, bad path)."""

    code = "BadRequest"
    status = 400


class InvalidArgs(BackendError):
    """Function arguments failed validation; the message names the field and the rule."""

    code = "BadArgs"
    status = 400


class InvalidReturn(BackendError):
    """A function returned a value its declared return type does not allow (a bug in the function)."""

    code = "BadReturn"
    status = 500


class InvalidWrite(BackendError):
    """A write broke the schema: unknown or engine-managed field, wrong type, missing required field."""

    code = "BadWrite"
    status = 400


class UniqueViolation(BackendError):
    """A write would create a second live document with the same key in a unique index."""

    code = "UniqueViolation"
    status = 409


class ReferenceViolation(BackendError):
    """A write or delete would leave a reference pointing at nothing."""

    code = "ReferenceViolation"
    status = 409


class RequestIdReused(BackendError):
    """A request id (sync ``requestId`` or HTTP ``Idempotency-Key``) already answered another caller or function.

    Stored results are replayed only to the identity that made them, for the same function; anything else is
    refused rather than answered with someone else's result or silently not run.
    """

    code = "RequestIdReused"
    status = 422


class FunctionNotFound(BackendError):
    code = "FunctionNotFound"
    status = 404


class NotFound(BackendError):
    code = "NotFound"
    status = 404


class Unauthenticated(BackendError):
    code = "Unauthenticated"
    status = 401


class Forbidden(BackendError):
    code = "Forbidden"
    status = 403


class Conflict(BackendError):
    """A mutation could not commit after the bounded number of serialization retries."""

    code = "OptimisticConcurrencyControlFailure"
    status = 409


class LimitExceeded(BackendError):
    """A per-transaction or per-request limit was hit (rows scanned, written, ranges, sizes)."""

    code = "LimitExceeded"
    status = 400


class FunctionTimeout(BackendError):
    """A function ran past its time limit; a mutation's transaction was rolled back, nothing was written."""

    code = "FunctionTimeout"
    status = 504


class Overloaded(BackendError):
    """A bounded queue is full; clients back off (the close reason is one the Convex client knows)."""

    code = "TooManyConcurrentRequests"
    status = 429


class Unavailable(BackendError):
    """The database cannot be reached or has no free connection; the request did nothing, retry later."""

    code = "ServiceUnavailable"
    status = 503


class SchemaError(BackendError):
    """The schema or a function declaration is invalid, or a migration would destroy data."""

    code = "SchemaError"
    status = 500


class AppError(Exception):
    """An error raised on purpose by application code; ``data`` reaches the client (Convex's ConvexError).

    >>> raise AppError({"reason": "already_booked"})
    """

    def __init__(self, data: Any, message: str | None = None) -> None:
        self.data = data
        text = message if message is not None else (data if isinstance(data, str) else "AppError")
        super().__init__(text)
        self.message = text
