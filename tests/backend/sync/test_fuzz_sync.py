"""Property-based fuzzing of the sync endpoint: random and mutated protocol messages on fresh sockets.

The server is a real ``python -m backend serve`` process (so its memory is its own and a crash is visible).
For every generated example, sent on a fresh socket, the server must answer or close cleanly (a close code
from the expected set, never a dropped TCP connection or an internal-error close), it must not hang, a
separate well-behaved socket must keep completing a mutate-and-see round trip, and the server's resident
memory must stay bounded over the whole run. Examples are bounded in size; each property runs a modest
number of examples so the file finishes in well under a minute.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from backend.auth import mint_dev_token
from backend.testing import create_database, drop_database
from tests.support.faults import NodeProcess

SECRET = "fuzz-secret-" + "f" * 40
PATH = "/api/1.48.0/sync"
# Close codes a server may end a hostile socket with: normal (after FatalError/AuthError), protocol error,
# unsupported or invalid data, policy, too big, try again later.
CLEAN_CLOSES = {1000, 1002, 1003, 1007, 1008, 1009, 1013}
# 1011 is the protocol's "reconnect later" only for a maxObservedTimestamp ahead of the deployment.
CLEAN_1011 = "InternalServerError: maxObservedTimestamp"
QUIET = 0.2  # seconds of silence after which an open socket counts as waiting, not hung
ANSWER_TIMEOUT = 5.0  # no single step may take longer
RSS_GROWTH_LIMIT = 150 * 1024 * 1024  # bytes the server may grow by over a whole property
EXAMPLES = 200
PROBE_REQUEST = 987_654_321  # a request id the generated messages do not use
LOG_LIMIT = 16 * 1024  # bytes of server log one example may cause

PATHS = ["counters:get", "counters:increment", "counters:range", "counters:whoami", "counters:add_later",
         "bookings:book", "credits:grant", "nope:missing", "", ":", "a:b:c", "counters", "../etc:passwd",
         "_private:x", "testing_fixtures:add_member"]


# -- the server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    import asyncio

    database = asyncio.run(create_database("fuzz"))
    node = NodeProcess(database, tmp_path_factory.mktemp("fuzz"),
                       {"BACKEND_JWT_SECRET": SECRET, "BACKEND_LOG_LEVEL": "WARNING", "BACKEND_TEST_FUNCTIONS": "1"})
    node.start()
    try:
        asyncio.run(node.wait_healthy())
        yield node
    finally:
        node.stop()
        asyncio.run(drop_database(database))


def rss(node: NodeProcess) -> int:
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def token(subject: str) -> str:
    return mint_dev_token(SECRET, subject, ttl_seconds=3600)


def ts_text(value: int) -> str:
    return base64.b64encode(struct.pack("<Q", value % (1 << 64))).decode()


def connect_message(session: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "Connect", "sessionId": session or str(uuid.uuid4()), "connectionCount": 0,
            "lastCloseReason": "InitialConnect", "clientTs": int(time.time() * 1000), **extra}


def read(ws: ClientConnection, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """The next message other than Ping."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message["type"] != "Ping":
            return dict(message)


class Healthy:
    """A well-behaved socket: subscribes to a counter, then increments it and sees the result, each round."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.name = f"healthy-{uuid.uuid4().hex[:8]}"
        self.ws.send(json.dumps(connect_message()))
        self.ws.send(json.dumps({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": self.name}]}]}))
        self.value = self._next_value()
        self.request = 0

    def _next_value(self) -> Any:
        while True:
            message = read(self.ws)
            if message["type"] == "Transition":
                for mod in message["modifications"]:
                    if mod["queryId"] == 0 and mod["type"] == "QueryUpdated":
                        return mod["value"]

    def round_trip(self) -> None:
        """Mutate and see the new value arrive, within the answer timeout."""
        started = time.monotonic()
        self.ws.send(json.dumps({"type": "Mutation", "requestId": self.request, "udfPath": "counters:increment",
                                 "args": [{"name": self.name}]}))
        self.request += 1
        response = read(self.ws)
        while response["type"] != "MutationResponse":
            response = read(self.ws)
        assert response["success"], response
        expected = response["result"]
        while self.value != expected:
            self.value = self._next_value()
        assert time.monotonic() - started < ANSWER_TIMEOUT


@pytest.fixture(scope="module")
def healthy(server: NodeProcess) -> Iterator[Healthy]:
    with connect(f"ws://127.0.0.1:{server.port}{PATH}", open_timeout=ANSWER_TIMEOUT) as ws:
        yield Healthy(ws)


@pytest.fixture(scope="module")
def baseline(server: NodeProcess, healthy: Healthy) -> int:
    healthy.round_trip()
    return rss(server)


def exercise(node: NodeProcess, frames: list[str | bytes]) -> list[dict[str, Any]]:
    """Send the frames on a fresh socket; read until the server closes it or goes quiet. Returns what came."""
    received: list[dict[str, Any]] = []
    with connect(f"ws://127.0.0.1:{node.port}{PATH}", open_timeout=ANSWER_TIMEOUT, close_timeout=ANSWER_TIMEOUT,
                 max_size=64 * 1024 * 1024) as ws:
        try:
            for frame in frames:
                ws.send(frame)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    raw = ws.recv(timeout=QUIET)
                except TimeoutError:
                    break  # the server is waiting for more: it answered what needed an answer
                received.append(json.loads(raw))
            # Still open (so a Connect was accepted): the session must still answer a well-formed request.
            ws.send(encode({"type": "Mutation", "requestId": PROBE_REQUEST, "udfPath": "counters:increment",
                            "args": [{"name": "fuzz-probe"}]}))
            while True:
                message = read(ws)
                received.append(message)
                if message["type"] == "MutationResponse" and message["requestId"] == PROBE_REQUEST:
                    break
        except TimeoutError:
            raise AssertionError(f"an open socket stopped answering after {frames!r:.2000}") from None
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, "")
            assert closed.rcvd is not None, f"the server dropped the connection without a close frame: {closed}"
            assert code in CLEAN_CLOSES or (code == 1011 and reason.startswith(CLEAN_1011)), \
                f"closed with {code} {reason!r} after {received[-3:]}"
    return received


def log_size(node: NodeProcess) -> int:
    return node.log.stat().st_size


def after_each(node: NodeProcess, healthy: Healthy, baseline: int, log_from: int) -> None:
    """The server lives, serves a well-behaved socket, stays within its memory, and logged no traceback
    and little text for this example."""
    assert node.alive(), node.errors()[-3000:]
    healthy.round_trip()
    grown = rss(node) - baseline
    assert grown < RSS_GROWTH_LIMIT, f"server RSS grew by {grown / 2**20:.0f} MiB"
    with node.log.open("rb") as log:
        log.seek(log_from)
        logged = log.read()
    assert b"Traceback" not in logged, logged[-3000:].decode(errors="replace")
    assert len(logged) < LOG_LIMIT, f"one example added {len(logged)} bytes of server log"


# -- strategies ------------------------------------------------------------------------------------------

huge_ints = st.sampled_from([-1, -(2**63), 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, 2**1000])
numbers = st.one_of(st.integers(min_value=-5, max_value=5), huge_ints,
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1.5, -0.0, 1e308]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=16)
args = st.one_of(
    st.fixed_dictionaries({"name": st.text(max_size=20)}, optional={"by": numbers}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    json_values,
)
query_ids = st.one_of(st.integers(min_value=0, max_value=3), huge_ints)
versions = st.one_of(st.integers(min_value=0, max_value=3), huge_ints)
tokens = st.one_of(st.builds(token, st.text(min_size=1, max_size=20)), st.text(max_size=60),
                   st.just("a.b.c"), st.just(""))


@st.composite
def adds(draw: st.DrawFn) -> dict[str, Any]:
    return {"type": "Add", "queryId": draw(query_ids), "udfPath": draw(st.sampled_from(PATHS)),
            "args": draw(st.one_of(st.lists(args, min_size=1, max_size=1), st.lists(args, max_size=3)))}


modifications = st.one_of(adds(), st.builds(lambda q: {"type": "Remove", "queryId": q}, query_ids))


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Connect", "ModifyQuerySet", "Mutation", "Action", "Authenticate", "Event"]))
    if kind == "Connect":
        extra: dict[str, Any] = {"connectionCount": draw(st.integers(min_value=0, max_value=3))}
        if draw(st.booleans()):
            extra["maxObservedTimestamp"] = draw(st.one_of(
                st.builds(ts_text, st.one_of(st.integers(min_value=0, max_value=2**64), huge_ints)),
                st.text(max_size=16)))
        return connect_message(**extra)
    if kind == "ModifyQuerySet":
        base = draw(versions)
        return {"type": kind, "baseVersion": base, "newVersion": draw(st.one_of(st.just(base + 1), versions)),
                "modifications": draw(st.lists(modifications, max_size=4))}
    if kind in ("Mutation", "Action"):
        return {"type": kind, "requestId": draw(versions), "udfPath": draw(st.sampled_from(PATHS)),
                "args": draw(st.lists(args, min_size=1, max_size=1))}
    if kind == "Authenticate":
        token_type = draw(st.sampled_from(["User", "Admin", "None", "Bogus"]))
        message = {"type": kind, "tokenType": token_type, "baseVersion": draw(versions)}
        if token_type != "None":
            message["value"] = draw(tokens)
        return message
    return {"type": "Event", "eventType": draw(st.text(max_size=10)), "event": draw(json_values)}


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any] | list[Any]:
    """A valid message with one thing wrong: a field missing, of the wrong type, huge, or a wrong type tag."""
    message = draw(valid_messages())
    keys = sorted(message)
    how = draw(st.sampled_from(["drop", "retype", "huge", "tag", "extra", "array"]))
    key = draw(st.sampled_from(keys))
    if how == "drop":
        message.pop(key)
    elif how == "retype":
        message[key] = draw(json_values)
    elif how == "huge":
        message[key] = draw(huge_ints)
    elif how == "tag":
        message["type"] = draw(st.one_of(st.text(max_size=16), json_values))
    elif how == "extra":
        message[draw(st.text(max_size=12))] = draw(json_values)
    else:
        return [message]
    return message


def encode(message: Any) -> str:
    return json.dumps(message)


garbage = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),  # a binary frame
    st.builds(lambda m, cut: encode(m)[:cut], valid_messages(), st.integers(min_value=0, max_value=40)),
    st.sampled_from(["", "null", "[]", "{}", "NaN", '{"type": null}', '"Connect"', "1e999999", "[" * 50]),
)
frames_after_connect = st.one_of(st.builds(encode, valid_messages()), st.builds(encode, mutated()), garbage)


@st.composite
def conversations(draw: st.DrawFn) -> list[str | bytes]:
    """One to four frames; usually opened by a valid Connect so the fuzzing reaches past the handshake."""
    frames: list[str | bytes] = []
    if draw(st.integers(min_value=0, max_value=9)) < 8:
        frames.append(encode(connect_message()))
    frames += draw(st.lists(frames_after_connect, min_size=1, max_size=4))
    return frames


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


# -- properties ------------------------------------------------------------------------------------------


@FUZZ
@given(frames=conversations())
def test_random_and_mutated_messages_are_answered_or_closed_cleanly(
    server: NodeProcess, healthy: Healthy, baseline: int, frames: list[str | bytes]
) -> None:
    log_from = log_size(server)
    exercise(server, frames)
    after_each(server, healthy, baseline, log_from)


def nested(depth: int) -> str:
    """JSON text of a value ``depth`` levels deep (objects and arrays in turn), written out directly: the
    encoder of the test itself must not be what runs out of stack."""
    opens = "".join('[' if i % 2 else '{"k":' for i in range(depth))
    closes = "".join(']' if i % 2 else '}' for i in reversed(range(depth)))
    return opens + '"x"' + closes


@settings(FUZZ, max_examples=10)
@given(depth=st.integers(min_value=100, max_value=3000),
       kind=st.sampled_from(["query", "mutation", "action"]))
def test_deeply_nested_arguments_fail_only_their_own_request(
    server: NodeProcess, healthy: Healthy, baseline: int, depth: int, kind: str
) -> None:
    log_from = log_size(server)
    arguments = '{"name":' + nested(depth) + "}"
    if kind == "query":
        message = ('{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add",'
                   '"queryId":0,"udfPath":"counters:get","args":[' + arguments + "]}]}")
    else:
        path = "counters:increment" if kind == "mutation" else "counters:add_later"
        message = f'{{"type":"{kind.capitalize()}","requestId":0,"udfPath":"{path}","args":[{arguments}]}}'
    received = exercise(server, [encode(connect_message()), message])
    answered = [m for m in received if m["type"] in ("Transition", "MutationResponse", "ActionResponse", "FatalError")]
    assert answered, f"no answer to a {depth}-deep {kind}: {received}"
    after_each(server, healthy, baseline, log_from)


@st.composite
def query_set_scripts(draw: st.DrawFn) -> list[list[tuple[str, int]]]:
    """ModifyQuerySet messages as (add|remove, queryId) lists that are valid against the live set so far."""
    live: set[int] = set()
    script: list[list[tuple[str, int]]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        message: list[tuple[str, int]] = []
        for _ in range(draw(st.integers(min_value=1, max_value=5))):
            if live and draw(st.booleans()):
                query_id = draw(st.sampled_from(sorted(live)))
                live.discard(query_id)
                message.append(("remove", query_id))
            else:
                query_id = draw(st.integers(min_value=0, max_value=5).filter(lambda q: q not in live))
                live.add(query_id)
                message.append(("add", query_id))
        script.append(message)
    return script


@settings(FUZZ, max_examples=60)
@given(script=query_set_scripts())
def test_query_set_changes_apply_in_message_order(
    server: NodeProcess, healthy: Healthy, baseline: int, script: list[list[tuple[str, int]]]
) -> None:
    name, log_from = f"qs-{uuid.uuid4().hex[:8]}", log_size(server)
    with connect(f"ws://127.0.0.1:{server.port}{PATH}", open_timeout=ANSWER_TIMEOUT) as ws:
        ws.send(encode(connect_message()))
        live: set[int] = set()
        view: set[int] = set()
        for version, changes in enumerate(script):
            mods = [{"type": "Add", "queryId": q, "udfPath": "counters:get", "args": [{"name": name}]}
                    if op == "add" else {"type": "Remove", "queryId": q} for op, q in changes]
            ws.send(encode({"type": "ModifyQuerySet", "baseVersion": version, "newVersion": version + 1,
                            "modifications": mods}))
            for op, q in changes:
                (live.add if op == "add" else live.discard)(q)
            while True:  # the Transition that confirms this query-set version
                message = read(ws)
                assert message["type"] == "Transition", message
                for mod in message["modifications"]:
                    if mod["type"] == "QueryRemoved":
                        view.discard(mod["queryId"])
                    else:
                        view.add(mod["queryId"])
                if message["endVersion"]["querySet"] >= version + 1:
                    break
            assert view == live, f"after {script[: version + 1]} the client holds {sorted(view)}, not {sorted(live)}"
        # A write to the counter must update exactly the live queries, nothing removed.
        ws.send(encode({"type": "Mutation", "requestId": 0, "udfPath": "counters:increment", "args": [{"name": name}]}))
        updated: set[int] = set()
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            try:
                message = read(ws, timeout=QUIET)
            except TimeoutError:
                break
            if message["type"] == "Transition":
                updated |= {m["queryId"] for m in message["modifications"] if m["type"] == "QueryUpdated"}
        assert updated <= live, f"updates for removed queries {sorted(updated - live)} after {script}"
    after_each(server, healthy, baseline, log_from)


@settings(FUZZ, max_examples=10)
@given(session=st.text(min_size=1, max_size=80).filter(lambda s: not _is_uuid(s)))
def test_a_session_id_that_is_not_a_uuid_is_refused(
    server: NodeProcess, healthy: Healthy, baseline: int, session: str
) -> None:
    log_from = log_size(server)
    # The Connect alone: a second frame could race the server's close and hide its FatalError.
    received = exercise(server, [encode(connect_message(session))])
    assert any(m["type"] == "FatalError" for m in received), received
    after_each(server, healthy, baseline, log_from)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@settings(FUZZ, max_examples=20)
@given(who=st.sampled_from(["anonymous", "other", "same"]), same_path=st.booleans())
def test_a_stored_result_is_replayed_only_to_its_owner(
    server: NodeProcess, healthy: Healthy, baseline: int, who: str, same_path: bool
) -> None:
    session, owner, name = str(uuid.uuid4()), f"u-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    log_from = log_size(server)

    def run(identity: str | None, count: int, path: str, args: dict[str, Any]) -> dict[str, Any]:
        with connect(f"ws://127.0.0.1:{server.port}{PATH}", open_timeout=ANSWER_TIMEOUT) as ws:
            ws.send(encode(connect_message(session, connectionCount=count,
                                           lastCloseReason="InitialConnect" if count == 0 else "closed")))
            if identity is not None:
                ws.send(encode({"type": "Authenticate", "tokenType": "User", "baseVersion": 0,
                                "value": token(identity)}))
            ws.send(encode({"type": "Mutation", "requestId": 0, "udfPath": path, "args": [args]}))
            while True:
                message = read(ws)
                if message["type"] in ("MutationResponse", "FatalError", "AuthError"):
                    return message

    first = run(owner, 0, "counters:increment", {"name": name, "by": 5})
    assert first["success"] and first["result"] == 5
    identity = {"anonymous": None, "other": f"x-{owner}", "same": owner}[who]
    path = "counters:increment" if same_path else "counters:reset"
    second = run(identity, 1, path, {"name": f"{name}-2"} if not same_path else {"name": f"{name}-2", "by": 1})
    if who == "same" and same_path:
        assert second.get("result") == 5, second  # a genuine replay: the stored result, nothing run again
    else:
        assert second.get("result") != 5 or second["type"] != "MutationResponse", \
            f"{who} identity on path {path} got the owner's stored result: {second}"
    after_each(server, healthy, baseline, log_from)
