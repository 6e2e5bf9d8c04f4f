"""Mutations and actions between being asked for and being finished (docs/protocol.md §4.3, §6.1 to §6.3).

A mutation is finished only when a Transition at or past its commit ts arrives (its effects are then in
every query result), so it stays here after a successful ``MutationResponse`` and is replayed, with the
same requestId, on every reconnect until then; the server deduplicates on (sessionId, requestId). An action
is never replayed: one that was sent and not answered when the socket closed fails.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, Literal

from ..values import decode_value
from ._errors import ClientError
from ._state import decode_ts

__all__ = ["ACTION_LOST", "Request", "RequestManager", "Status"]

ACTION_LOST = "Connection lost while action was in flight"


class Status(enum.Enum):
    NOT_SENT = "not_sent"
    SENT = "sent"
    COMPLETED = "completed"  # a mutation answered, waiting for a Transition at its ts


@dataclass
class Request:
    request_id: int
    kind: Literal["Mutation", "Action"]
    message: dict[str, Any]
    future: asyncio.Future[Any]
    status: Status = Status.NOT_SENT
    ts: int = 0
    result: Any = None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # a caller that gave up must not leave "exception never retrieved" behind


def _error_of(message: dict[str, Any]) -> ClientError:
    text = str(message.get("result", "request failed"))
    if "errorData" not in message:
        return ClientError(text)
    try:
        return ClientError(text, decode_value(message["errorData"]))
    except ValueError:
        return ClientError(text, message["errorData"])


class RequestManager:
    """Requests by requestId (one counter shared by mutations and actions, never reused)."""

    def __init__(self) -> None:
        self._requests: dict[int, Request] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._requests)

    def create(self, kind: Literal["Mutation", "Action"], path: str, encoded_args: Any) -> Request:
        request_id = self._next_id
        self._next_id += 1
        message = {"type": kind, "requestId": request_id, "udfPath": path, "args": [encoded_args]}
        request = Request(request_id, kind, message, asyncio.get_running_loop().create_future())
        self._requests[request_id] = request
        return request

    def discard(self, request_id: int) -> None:
        self._requests.pop(request_id, None)

    def mark_sent(self, request_id: int) -> None:
        request = self._requests.get(request_id)
        if request is not None and request.status is Status.NOT_SENT:
            request.status = Status.SENT

    def on_response(self, message: dict[str, Any], current_ts: int) -> list[int]:
        """Handle a MutationResponse/ActionResponse; returns the ids that are now finished."""
        request = self._requests.get(int(message.get("requestId", -1)))
        if request is None or request.status is Status.COMPLETED:
            return []  # unknown, or a replay's duplicate answer: the first result stands
        if not message.get("success"):
            del self._requests[request.request_id]
            _fail(request.future, _error_of(message))
            return [request.request_id]
        try:
            result = decode_value(message.get("result"))
        except ValueError as error:
            del self._requests[request.request_id]
            _fail(request.future, ClientError(f"could not decode the result: {error}"))
            return [request.request_id]
        if request.kind == "Action":
            del self._requests[request.request_id]
            _resolve(request.future, result)
            return [request.request_id]
        request.status, request.result, request.ts = Status.COMPLETED, result, decode_ts(message["ts"])
        # Already covered by a Transition we hold: its effects are visible, so finish now.
        return self.remove_completed(current_ts) if request.ts <= current_ts else []

    def remove_completed(self, ts: int) -> list[int]:
        """Finish every answered mutation whose commit ts is at or below ``ts``."""
        done = [r for r in self._requests.values() if r.status is Status.COMPLETED and r.ts <= ts]
        for request in done:
            del self._requests[request.request_id]
            _resolve(request.future, request.result)
        return [request.request_id for request in done]

    def on_disconnect(self) -> list[int]:
        """The socket closed: fail the actions the server may have been running; returns their ids."""
        lost = [r for r in self._requests.values() if r.kind == "Action" and r.status is Status.SENT]
        for request in lost:
            del self._requests[request.request_id]
            _fail(request.future, ClientError(ACTION_LOST))
        return [request.request_id for request in lost]

    def restart(self) -> list[Request]:
        """What a new socket must carry: every unfinished mutation, then the actions never sent."""
        ordered = sorted(self._requests.values(), key=lambda r: r.request_id)
        mutations = [r for r in ordered if r.kind == "Mutation"]
        actions = [r for r in ordered if r.kind == "Action" and r.status is Status.NOT_SENT]
        return mutations + actions

    def fail_all(self, error: ClientError) -> list[int]:
        ids = list(self._requests)
        for request in self._requests.values():
            _fail(request.future, error)
        self._requests.clear()
        return ids
