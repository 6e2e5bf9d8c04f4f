"""What the server holds for us: our query set, the results it sent, and the versions that order them.

The server only accepts messages that continue its versions exactly (``ModifyQuerySet.baseVersion``,
``Authenticate.baseVersion``) and only sends Transitions that continue ours (``startVersion``), so both
counters live here together with the results they describe (docs/protocol.md §4.2, §4.4, §5.1, §5.2).
A new socket starts every version at zero; ``restart`` rebuilds the query set on it with the original ids.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import msgspec

from ..sync.protocol import encode_ts
from ..values import decode_value, encode_value
from ._errors import ClientError

__all__ = [
    "LocalQuery",
    "RemoteQuerySet",
    "Result",
    "StartVersionMismatch",
    "StateVersion",
    "canonical_query_path",
    "decode_ts",
    "encode_ts",
    "query_token",
]


class StartVersionMismatch(Exception):
    """A Transition that does not continue our version: the socket's state is unknown, so reconnect."""


def decode_ts(text: object) -> int:
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be base64 text, got {type(text).__name__}")
    raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    if len(raw) != 8:
        raise ValueError("timestamp must hold exactly 8 bytes")
    value: int = struct.unpack("<Q", raw)[0]
    return value


@dataclass(frozen=True)
class StateVersion:
    query_set: int = 0
    identity: int = 0
    ts: int = 0

    @classmethod
    def from_wire(cls, raw: Any) -> StateVersion:
        return cls(int(raw["querySet"]), int(raw["identity"]), decode_ts(raw["ts"]))


@dataclass(frozen=True, eq=False)
class Result:
    """One query's outcome: a value, or the error the function raised."""

    value: Any = None
    error: ClientError | None = None

    def same_as(self, other: Result | None) -> bool:
        """Equal outcome (``1`` and ``True`` differ); used to skip notifying a subscriber twice."""
        if other is None:
            return False
        if self.error is not None or other.error is not None:
            return self.error is other.error
        return type(self.value) is type(other.value) and bool(self.value == other.value)


def canonical_query_path(path: str) -> str:
    """``m``, ``m:default`` and ``m.js:default`` name one function (docs/protocol.md §3)."""
    module, sep, name = path.rpartition(":")
    if not sep:
        module, name = path, "default"
    if module.endswith(".js"):
        module = module[:-3]
    return f"{module}:{name}"


def encode_args(args: Any) -> Any:
    try:
        return encode_value({} if args is None else args)
    except ValueError as error:
        raise ClientError(f"invalid arguments: {error}") from None


def query_token(path: str, encoded_args: Any) -> str:
    """The identity of a query: its canonical path plus the JSON of its encoded args, keys sorted."""
    return canonical_query_path(path) + "|" + msgspec.json.encode(encoded_args, order="sorted").decode()


@dataclass
class LocalQuery:
    query_id: int
    token: str
    path: str
    args: Any
    encoded_args: Any
    journal: str | None = None
    has_journal: bool = False
    subscribers: int = 0

    def add_modification(self) -> dict[str, Any]:
        mod: dict[str, Any] = {"type": "Add", "queryId": self.query_id, "udfPath": self.path,
                               "args": [self.encoded_args]}
        if self.has_journal:
            mod["journal"] = self.journal
        return mod


def _decode_result(mod: dict[str, Any]) -> Result:
    try:
        if mod["type"] == "QueryUpdated":
            return Result(value=decode_value(mod.get("value")))
        data = decode_value(mod["errorData"]) if "errorData" in mod else None
        return Result(error=ClientError(str(mod.get("errorMessage", "query failed")), data))
    except ValueError as error:
        return Result(error=ClientError(f"could not decode the query result: {error}"))


class RemoteQuerySet:
    """Live queries by token and id, the server's latest results, and the versions of this socket."""

    def __init__(self) -> None:
        self.queries: dict[str, LocalQuery] = {}
        self.by_id: dict[int, LocalQuery] = {}
        self.results: dict[int, Result] = {}
        self.version = StateVersion()
        self.query_set_version = 0  # the last newVersion sent on this socket
        self.identity_version = 0  # Authenticate messages sent on this socket
        self.max_observed_ts: int | None = None
        self._next_query_id = 0

    # -- the query set -----------------------------------------------------------------------------------

    def add(self, path: str, args: Any) -> tuple[LocalQuery, bool]:
        """Count one more subscriber; True when the query is new and the server must be told."""
        encoded = encode_args(args)
        token = query_token(path, encoded)
        query = self.queries.get(token)
        if query is not None:
            query.subscribers += 1
            return query, False
        query = LocalQuery(self._next_query_id, token, canonical_query_path(path), args, encoded, subscribers=1)
        self._next_query_id += 1
        self.queries[token] = query
        self.by_id[query.query_id] = query
        return query, True

    def release(self, token: str) -> LocalQuery | None:
        """Count one subscriber less; returns the query when it is gone and the server must be told."""
        query = self.queries.get(token)
        if query is None:
            return None
        query.subscribers -= 1
        if query.subscribers > 0:
            return None
        del self.queries[token]
        del self.by_id[query.query_id]
        self.results.pop(query.query_id, None)
        return query

    def modify(self, modifications: list[dict[str, Any]]) -> dict[str, Any]:
        base = self.query_set_version
        self.query_set_version += 1
        return {"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1,
                "modifications": modifications}

    def authenticate(self, token: str | None) -> dict[str, Any]:
        base = self.identity_version
        self.identity_version += 1
        if token is None:
            return {"type": "Authenticate", "tokenType": "None", "baseVersion": base}
        return {"type": "Authenticate", "tokenType": "User", "value": token, "baseVersion": base}

    def restart(self, token: str | None) -> list[dict[str, Any]]:
        """A new socket: versions from zero, then auth and one ModifyQuerySet 0→1 re-adding everything.

        Results stay until the server replaces them, so subscribers never see a query fall back to loading.
        """
        self.version = StateVersion()
        self.query_set_version = 0
        self.identity_version = 0
        messages = [] if token is None else [self.authenticate(token)]
        adds = [query.add_modification() for query in sorted(self.by_id.values(), key=lambda q: q.query_id)]
        messages.append(self.modify(adds))
        return messages

    def observe_ts(self, ts: int) -> None:
        if self.max_observed_ts is None or ts > self.max_observed_ts:
            self.max_observed_ts = ts

    # -- transitions -------------------------------------------------------------------------------------

    def apply_transition(self, message: dict[str, Any]) -> set[int]:
        """Apply a Transition; returns the ids of queries whose result changed."""
        start = StateVersion.from_wire(message["startVersion"])
        if start != self.version:
            raise StartVersionMismatch(f"Transition starts at {start}, client is at {self.version}")
        end = StateVersion.from_wire(message["endVersion"])
        changed: set[int] = set()
        for mod in message.get("modifications") or []:
            query = self.by_id.get(int(mod.get("queryId", -1)))
            if query is None:
                continue  # removed by us while the server was still answering for it
            kind = mod.get("type")
            if kind in ("QueryUpdated", "QueryFailed"):
                self.results[query.query_id] = _decode_result(mod)
                if "journal" in mod:
                    query.journal, query.has_journal = mod["journal"], True
                changed.add(query.query_id)
            elif kind == "QueryRemoved":
                self.results.pop(query.query_id, None)
                changed.add(query.query_id)
        self.version = end
        self.observe_ts(end.ts)
        return changed

    def server_view(self) -> dict[str, Result]:
        """The server's results by query token, for the optimistic layer to build on."""
        return {query.token: self.results[query.query_id]
                for query in self.queries.values() if query.query_id in self.results}
