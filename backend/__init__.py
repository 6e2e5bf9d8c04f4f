"""A reactive backend for Python that speaks the Convex sync protocol.

Function authors import everything they need from here:

>>> from backend import query, mutation, QueryCtx, MutationCtx, Id, AppError
"""

from __future__ import annotations

from .context import ActionCtx, Auth, MutationCtx, QueryCtx
from .db import PaginationOpts, PaginationResult
from .errors import AppError, Forbidden, NotFound, Unauthenticated
from .registry import action, internal_action, internal_mutation, internal_query, mutation, query
from .scheduler import Crons, ScheduledJob
from .tenancy import require_member
from .validators import Id, Instant, LocalDate, LocalTime, TimeZone
from .values import Int64

__all__ = [
    "ActionCtx",
    "AppError",
    "Auth",
    "Crons",
    "Forbidden",
    "Id",
    "Instant",
    "Int64",
    "LocalDate",
    "LocalTime",
    "MutationCtx",
    "NotFound",
    "PaginationOpts",
    "PaginationResult",
    "QueryCtx",
    "ScheduledJob",
    "TimeZone",
    "Unauthenticated",
    "action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "query",
    "require_member",
]
