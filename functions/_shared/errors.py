"""User-facing failures with stable codes, so clients match on ``errorData.code`` and never on prose.

Every ``AppError`` raised by the booking functions carries ``{"code": ..., ...}`` in camelCase; a missing or
foreign id of a secondary argument is the engine's ``NotFound``, exactly like a foreign tenant argument.
"""

from __future__ import annotations

from typing import Any

from backend import AppError, NotFound

__all__ = ["conflict", "invalid", "not_found"]


def invalid(field: str, message: str, **data: Any) -> AppError:
    """A value the caller sent breaks a domain rule (``field`` is the wire name, e.g. ``horizonDays``).

    The message names the argument the way the engine's own validation does (``$.args.horizonDays: ...``).
    """
    return AppError({"code": "invalid_argument", "field": field, **data}, f"$.args.{field}: {message}")


def conflict(code: str, message: str, **data: Any) -> AppError:
    """The request is well formed but the current state forbids it (e.g. ``template_has_bookings``)."""
    return AppError({"code": code, **data}, message)


def not_found(field: str) -> NotFound:
    """The id in ``field`` names nothing this business can see (missing, deleted or another tenant's)."""
    return NotFound(f"$.args.{field}: not found")
