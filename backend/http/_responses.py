"""Turning outcomes and errors into the Convex HTTP API's response bodies (docs/protocol.md §8)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Response

from ..errors import AppError, BackendError
from ..runner import Outcome
from ..values import encode_error_data

log = logging.getLogger("backend.http")

_JSON = "application/json"


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type=_JSON)


def error_response(error: BaseException) -> Response[bytes]:
    if isinstance(error, BackendError):
        return json_response(error.to_wire(), error.status)
    log.error("unexpected error", exc_info=error)
    return json_response({"code": "InternalServerError", "message": "Server Error"}, 500)


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
