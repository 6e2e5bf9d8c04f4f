"""The Convex sync protocol's client messages as frozen msgspec Structs, and the server frames we build.

Decoding happens once, at the socket edge, into one tagged union; everything past this module works with
typed messages. Server frames are built here too, so the rules of docs/protocol.md §5 live in one place:
``logLines`` always an array, ``errorData`` only for ``AppError``, ``ts`` on every successful mutation.
"""

from __future__ import annotations

import base64
import functools
import struct
from typing import Any, Literal

import msgspec

from ..errors import AppError, BackendError
from ..failures import public_message
from ..values import encode_error_data

__all__ = [
    "Action",
    "Add",
    "Authenticate",
    "ClientMessage",
    "Connect",
    "Event",
    "ModifyQuerySet",
    "Mutation",
    "ProtocolError",
    "Remove",
    "action_response",
    "auth_error",
    "decode_client_message",
    "decode_ts",
    "encode_ts",
    "fatal_error",
    "mutation_failure",
    "mutation_success",
    "query_modification",
    "query_removed",
    "transition",
]


class ProtocolError(Exception):
    """A message that breaks the protocol; the session answers with FatalError and closes."""


class Connect(msgspec.Struct, tag="Connect", tag_field="type", frozen=True):
    sessionId: str
    connectionCount: int = 0
    lastCloseReason: str | None = None
    clientTs: float | None = None
    maxObservedTimestamp: str | None = None


class Add(msgspec.Struct, tag="Add", tag_field="type", frozen=True):
    queryId: int
    udfPath: str
    args: list[Any]
    journal: str | None = None
    componentPath: str | None = None


class Remove(msgspec.Struct, tag="Remove", tag_field="type", frozen=True):
    queryId: int


class ModifyQuerySet(msgspec.Struct, tag="ModifyQuerySet", tag_field="type", frozen=True):
    baseVersion: int
    newVersion: int
    modifications: list[Add | Remove]


class Mutation(msgspec.Struct, tag="Mutation", tag_field="type", frozen=True):
    requestId: int
    udfPath: str
    args: list[Any]
    componentPath: str | None = None


class Action(msgspec.Struct, tag="Action", tag_field="type", frozen=True):
    requestId: int
    udfPath: str
    args: list[Any]
    componentPath: str | None = None


class Authenticate(msgspec.Struct, tag="Authenticate", tag_field="type", frozen=True):
    tokenType: Literal["User", "Admin", "None"]
    baseVersion: int
    value: str | None = None
    impersonating: Any = None


class Event(msgspec.Struct, tag="Event", tag_field="type", frozen=True):
    eventType: str = ""
    event: Any = None


ClientMessage = Connect | ModifyQuerySet | Mutation | Action | Authenticate | Event
_decoder = msgspec.json.Decoder(ClientMessage)


def decode_client_message(frame: str | bytes) -> ClientMessage:
    try:
        message: ClientMessage = _decoder.decode(frame)
    except msgspec.ValidationError as error:
        raise ProtocolError(f"invalid message: {error}") from None
    except msgspec.DecodeError:
        raise ProtocolError("invalid message: not JSON") from None
    return message


def encode_ts(ts: int) -> str:
    return base64.b64encode(struct.pack("<Q", ts)).decode("ascii")


def decode_ts(text: str) -> int:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolError("maxObservedTimestamp: not base64") from None
    if len(raw) != 8:
        raise ProtocolError("maxObservedTimestamp: expected 8 bytes")
    value: int = struct.unpack("<Q", raw)[0]
    if value >= 1 << 63:  # every timestamp we issue is below 2**63; honouring it would overflow the clock
        raise ProtocolError("maxObservedTimestamp: not a timestamp this deployment issued (>= 2**63)")
    return value


def _error_fields(error: BaseException) -> dict[str, Any]:
    if isinstance(error, AppError):
        return {"result": str(error.message), "errorData": encode_error_data(error.data)}
    if isinstance(error, BackendError):
        return {"result": f"[{error.code}] {error.message}"}
    return {"result": public_message(error)}


def mutation_success(request_id: int, value: Any, log_lines: list[str], ts: int) -> bytes:
    return msgspec.json.encode(
        {"type": "MutationResponse", "requestId": request_id, "success": True,
         "result": msgspec.Raw(msgspec.json.encode(value)), "ts": encode_ts(ts), "logLines": log_lines}
    )


def mutation_failure(request_id: int, error: BaseException, log_lines: list[str]) -> bytes:
    return msgspec.json.encode(
        {"type": "MutationResponse", "requestId": request_id, "success": False, "logLines": log_lines,
         **_error_fields(error)}
    )


def action_response(request_id: int, value: Any, error: BaseException | None, log_lines: list[str]) -> bytes:
    body: dict[str, Any] = {"type": "ActionResponse", "requestId": request_id, "logLines": log_lines}
    if error is None:
        body.update(success=True, result=msgspec.Raw(msgspec.json.encode(value)))
    else:
        body.update(success=False, **_error_fields(error))
    return msgspec.json.encode(body)


def auth_error(message: str, base_version: int, attempted: bool) -> bytes:
    return msgspec.json.encode(
        {"type": "AuthError", "error": message, "baseVersion": base_version, "authUpdateAttempted": attempted}
    )


def fatal_error(message: str) -> bytes:
    return msgspec.json.encode({"type": "FatalError", "error": message})


# -- Transitions: built once per socket from parts encoded once per commit ----------------------------------

Version = tuple[int, int, int]  # querySet, identity, ts

_last_modification: tuple[bytes, int, bytes] = (b"", -1, b"")


def query_modification(body: bytes, query_id: int) -> bytes:
    """A query instance's encoded ``QueryUpdated``/``QueryFailed`` body (an object without ``queryId``) as
    one socket's modification. The sockets of a fan-out watch the same instance, mostly under the same id:
    they share the last result instead of each copying the body."""
    global _last_modification
    last_body, last_id, framed = _last_modification
    if body is last_body and query_id == last_id:
        return framed
    framed = b"".join((memoryview(body)[:-1], b',"queryId":%d}' % query_id))
    _last_modification = (body, query_id, framed)
    return framed


def query_removed(query_id: int) -> bytes:
    return b'{"type":"QueryRemoved","queryId":%d}' % query_id


@functools.lru_cache(maxsize=64)
def _ts_json(ts: int) -> bytes:
    return b'"%b"' % base64.b64encode(struct.pack("<Q", ts))


def _version(version: Version) -> bytes:
    query_set, identity, ts = version
    return b'{"querySet":%d,"identity":%d,"ts":%b}' % (query_set, identity, _ts_json(ts))


def transition(start: Version, end: Version, modifications: list[bytes]) -> bytes:
    """A ``Transition`` frame from already encoded modifications (``query_modification``, ``query_removed``)."""
    return b'{"type":"Transition","startVersion":%b,"endVersion":%b,"modifications":[%b]}' % (
        _version(start), _version(end), b",".join(modifications))


def transition_chunks(frame: bytes, transition_id: str, max_bytes: int) -> list[bytes]:
    """A ``Transition`` frame too large for one WebSocket frame as ``TransitionChunk`` frames: consecutive
    pieces of its JSON text that the official clients join and parse before applying any of it, so the
    update stays one snapshot, all or nothing. Each chunk frame stays within ``max_bytes``: a character
    takes at most 4 bytes in UTF-8, and re-encoding a piece of JSON text as a string at most doubles it."""
    text = frame.decode("utf-8")
    step = max(1, (max_bytes - 256) // 4)
    pieces = [text[i:i + step] for i in range(0, len(text), step)]
    return [
        msgspec.json.encode({"type": "TransitionChunk", "chunk": piece, "partNumber": number,
                             "totalParts": len(pieces), "transitionId": transition_id})
        for number, piece in enumerate(pieces)
    ]


PING = b'{"type":"Ping"}'
