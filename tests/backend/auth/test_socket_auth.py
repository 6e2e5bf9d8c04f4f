"""Authentication over the sync socket, frame by frame (docs/protocol.md §7) with a raw websockets client.

The server confirms an accepted ``Authenticate`` only through a Transition that bumps ``identity``; a refused
token gets ``AuthError{authUpdateAttempted:true}`` carrying the identity version before it, and an identity
that expires mid-session gets ``AuthError{authUpdateAttempted:false}`` as it expires (a request arriving with it
expired is refused the same way). Both close the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from backend.auth import AuthConfig, mint_dev_token
from backend.sync.session import SyncSession, Transport
from backend.testing import TEST_SECRET, TestBackend


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TestBackend]:
    # No leeway, so a token can be made to expire within a test's lifetime.
    async with TestBackend(auth=AuthConfig(hs256_secret=TEST_SECRET, leeway_seconds=0), run_scheduler=False) as tb:
        yield tb


class Socket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] != "Ping":
                return message

    async def until_closed(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every frame the server sends before it closes the socket."""
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.append(await self.recv(timeout))
        except ConnectionClosed:
            return frames

    async def authenticate(self, base: int, value: str | None) -> None:
        if value is None:
            await self.send({"type": "Authenticate", "tokenType": "None", "baseVersion": base})
        else:
            await self.send({"type": "Authenticate", "tokenType": "User", "value": value, "baseVersion": base})


async def open_socket(server: TestBackend) -> AsyncIterator[Socket]:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/1.48.0/sync") as ws:
        sock = Socket(ws)
        await sock.send({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0,
                         "lastCloseReason": "InitialConnect", "clientTs": 0})
        yield sock


@pytest.fixture
async def sock(server: TestBackend) -> AsyncIterator[Socket]:
    async for s in open_socket(server):
        yield s


def short_token(subject: str) -> tuple[str, float]:
    """A token valid now that expires within two seconds (JWT times are whole seconds)."""
    now = time.time()
    token = mint_dev_token(TEST_SECRET, subject, ttl_seconds=2, now=now)
    return token, float(int(now + 2))


async def test_accepted_token_is_confirmed_by_an_identity_bump_and_reruns_queries(
    server: TestBackend, sock: Socket
) -> None:
    owner = f"owner-{uuid.uuid4()}"
    business = await server.mutation("businesses:create", {"name": "Barre", "timezone": "UTC"}, as_user=owner)
    await sock.send({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
        {"type": "Add", "queryId": 0, "udfPath": "businesses:get", "args": [{"businessId": business}]}]})
    first = await sock.recv()
    assert first["endVersion"]["identity"] == 0
    assert first["modifications"][0]["type"] == "QueryFailed"
    assert first["modifications"][0]["errorMessage"].startswith("[Unauthenticated]")

    await sock.authenticate(0, TestBackend.token(owner))
    confirmed = await sock.recv()
    assert confirmed["type"] == "Transition"
    assert confirmed["startVersion"] == first["endVersion"]
    assert (confirmed["startVersion"]["identity"], confirmed["endVersion"]["identity"]) == (0, 1)
    assert confirmed["endVersion"]["querySet"] == 1
    [update] = confirmed["modifications"]
    assert update["type"] == "QueryUpdated" and update["value"]["name"] == "Barre"

    await sock.authenticate(1, None)  # clearAuth: also confirmed by a bump
    cleared = await sock.recv()
    assert (cleared["startVersion"]["identity"], cleared["endVersion"]["identity"]) == (1, 2)
    assert cleared["modifications"][0]["type"] == "QueryFailed"


@pytest.mark.parametrize(("make", "rule"), [
    (lambda: "garbage", "MalformedToken"),
    (lambda: mint_dev_token("wrong-secret-" + "q" * 40, "ann"), "BadSignature"),
    (lambda: mint_dev_token(TEST_SECRET, "ann", now=time.time() - 100, ttl_seconds=10), "TokenExpired"),
], ids=["malformed", "wrongly-signed", "expired"])
async def test_refused_token_gets_auth_error_then_close(sock: Socket, make: Any, rule: str) -> None:
    await sock.authenticate(0, make())
    frames = await sock.until_closed()
    assert len(frames) == 1, frames
    error = frames[0]
    assert error["type"] == "AuthError"
    assert error["authUpdateAttempted"] is True
    assert error["baseVersion"] == 0
    assert error["error"].startswith(f"{rule}: ")
    assert sock.ws.close_code == 1000


async def test_admin_key_is_refused(sock: Socket) -> None:
    await sock.send({"type": "Authenticate", "tokenType": "Admin", "value": "admin-key", "baseVersion": 0})
    frames = await sock.until_closed()
    assert [(f["type"], f["authUpdateAttempted"], f["baseVersion"]) for f in frames] == [("AuthError", True, 0)]


async def test_refused_refresh_carries_the_version_before_it(sock: Socket) -> None:
    await sock.authenticate(0, TestBackend.token("ann"))
    confirmed = await sock.recv()
    assert confirmed["endVersion"]["identity"] == 1
    await sock.authenticate(1, "garbage")
    frames = await sock.until_closed()
    assert [(f["type"], f["baseVersion"]) for f in frames] == [("AuthError", 1)]


async def test_refused_refresh_sent_before_the_confirmation_is_not_stale(sock: Socket) -> None:
    """Back to back: the client is at identity 2, so baseVersion must be 1 or it drops the error as stale."""
    await sock.authenticate(0, TestBackend.token("ann"))
    await sock.authenticate(1, "garbage")
    frames = await sock.until_closed()
    errors = [f for f in frames if f["type"] == "AuthError"]
    assert [(e["baseVersion"], e["authUpdateAttempted"]) for e in errors] == [(1, True)]
    transitions = [f for f in frames if f["type"] == "Transition"]
    assert all(t["endVersion"]["identity"] <= 1 for t in transitions)


async def test_token_expiring_mid_session_gets_auth_error_not_attempted_and_close(
    server: TestBackend, sock: Socket
) -> None:
    """Nothing needs to be sent: the server notices the expiry itself, so subscriptions stop with the token."""
    token, expires = short_token("shorty")
    await sock.authenticate(0, token)
    await sock.send({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
        {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": "x"}]}]})
    frames = await sock.until_closed(timeout=expires - time.time() + 5)
    closed_at = time.time()
    assert [f["type"] for f in frames][-1] == "AuthError", frames
    error = frames[-1]
    assert error["authUpdateAttempted"] is False
    assert error["baseVersion"] == 1
    assert error["error"].startswith("TokenExpired: token expired at ")
    assert all(f["type"] == "Transition" for f in frames[:-1])
    assert closed_at >= expires
    assert sock.ws.close_code == 1000


class QueueTransport(Transport):
    """An in-process socket, so a request can be made to arrive with an identity already past its expiry."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = asyncio.Event()

    async def receive(self) -> str | None:
        return await self.incoming.get()

    async def send(self, frame: bytes) -> None:
        self.sent.append(json.loads(frame))

    async def close(self, code: int, reason: str) -> None:
        self.closed.set()
        self.incoming.put_nowait(None)


@pytest.mark.parametrize("request_type", ["Mutation", "Action", "ModifyQuerySet"])
async def test_expired_identity_is_checked_before_every_request(server: TestBackend, request_type: str) -> None:
    assert server.backend is not None
    transport = QueueTransport()
    session = SyncSession(server.backend, transport)
    running = asyncio.create_task(session.run())
    transport.incoming.put_nowait(json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4())}))
    transport.incoming.put_nowait(json.dumps(
        {"type": "Authenticate", "tokenType": "User", "value": TestBackend.token("late"), "baseVersion": 0}))
    await wait_for(lambda: any(f["type"] == "Transition" for f in transport.sent))
    session.identity = msgspec.structs.replace(session.identity, expires_at=time.time() - 60)
    name = f"late-{uuid.uuid4()}"
    transport.incoming.put_nowait(json.dumps({
        "Mutation": {"type": "Mutation", "requestId": 0, "udfPath": "businesses:create",
                     "args": [{"name": name, "timezone": "UTC"}]},
        "Action": {"type": "Action", "requestId": 0, "udfPath": "counters:add_later", "args": [{"name": name}]},
        "ModifyQuerySet": {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": name}]}]},
    }[request_type]))
    await asyncio.wait_for(running, timeout=5)
    assert transport.closed.is_set()
    after = [f for f in transport.sent if f["type"] != "Transition"]
    assert [(f["type"], f["authUpdateAttempted"], f["baseVersion"]) for f in after] == [("AuthError", False, 1)]
    assert after[0]["error"].startswith("TokenExpired: token expired at ")
    assert (await server.sql("SELECT count(*) AS n FROM businesses WHERE name = $1", name))[0]["n"] == 0
    assert (await server.sql("SELECT count(*) AS n FROM counters WHERE name = $1", name))[0]["n"] == 0


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_each_mutation_runs_with_the_identity_it_was_sent_under(server: TestBackend, sock: Socket) -> None:
    """Mutations queue behind each other; a later Authenticate must not change who the queued ones run as."""
    subject = f"queued-{uuid.uuid4()}"
    names = [f"q-{uuid.uuid4()}" for _ in range(4)]
    await sock.authenticate(0, TestBackend.token(subject))
    for request_id, name in enumerate(names):
        await sock.send({"type": "Mutation", "requestId": request_id, "udfPath": "businesses:create",
                         "args": [{"name": name, "timezone": "UTC"}]})
    await sock.authenticate(1, None)
    responses: dict[int, dict[str, Any]] = {}
    while len(responses) < len(names):
        frame = await sock.recv()
        if frame["type"] == "MutationResponse":
            responses[frame["requestId"]] = frame
    assert all(r["success"] for r in responses.values()), responses
    rows = await server.sql(
        "SELECT b.name, m.subject FROM businesses b JOIN members m ON m.business_id = b._id WHERE b.name = ANY($1)",
        names)
    assert sorted((r["name"], r["subject"]) for r in rows) == sorted((n, subject) for n in names)
