"""Turning outcomes and errors into the Convex HTTP API's response bodies (docs/protocol.md §8)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response

from ..errors import AppError, BackendError, Unavailable
from ..failures import public_message, report
from ..postgres import database_lost_under
from ..runner import Outcome
from ..values import encode_error_data

_JSON = "application/json"


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type=_JSON)


def database_unavailable() -> Unavailable:
    return Unavailable("the database is unavailable (restarting or unreachable); try again. A mutation whose "
                       "connection was lost may have been applied: send it with an Idempotency-Key so a retry "
                       "applies it at most once")


def error_response(error: BaseException) -> Response[bytes]:
    if isinstance(error, BackendError):
        return json_response(error.to_wire(), error.status)
    if database_lost_under(error):  # PostgreSQL went away under the call: retry later, not a server bug
        unavailable = database_unavailable()
        return json_response(unavailable.to_wire(), unavailable.status)
    report(error, "HTTP request")  # a no-op when the call's log line already showed it
    return json_response({"code": "InternalServerError", "message": public_message(error)}, 500)


def outcome_response(outcome: Outcome) -> Response[bytes]:
    error = outcome.error
    if error is None:
        body: dict[str, Any] = {"status": "success", "value": outcome.value, "logLines": outcome.log_lines}
        return json_response(body)
    if isinstance(error, AppError):
        data = encode_error_data(error.data)
        return json_response(
            {"status": "error", "errorMessage": error.message, "errorData": data, "logLines": outcome.log_lines}
        )
    return error_response(error)
