"""Frames stay under ``BACKEND_MAX_TRANSITION_BYTES``: a larger Transition goes out as ``TransitionChunk``
frames that the client joins before applying any of it (one snapshot, all or nothing: no mutation resolves
and no query-set change is confirmed before all of it has arrived); a single result over the limit fails
that query alone."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient, ts_of

CAP = 64 * 1024
PAD = 20_000


@pytest.fixture(autouse=True)
def small_transitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "MAX_TRANSITION_BYTES", CAP)


async def transition_frames_until(client: RawClient, done: Any) -> list[tuple[int, dict[str, Any]]]:
    """(frame size, message) for every Transition or TransitionChunk frame up to the Transition for which
    ``done`` holds; chunks are joined and the whole Transition applied only when its last part arrives."""
    seen: list[tuple[int, dict[str, Any]]] = []
    while True:
        raw = await asyncio.wait_for(client.ws.recv(), 10)
        message = json.loads(raw)
        if message["type"] == "TransitionChunk":
            seen.append((len(raw), message))
            before = dict(client.results)
            whole = client.assemble(message)
            if whole is None:
                assert client.results == before, "a partial Transition changed the view"
                continue
            message = whole
        elif message["type"] == "Transition":
            seen.append((len(raw), message))
        else:
            continue
        client.apply(message)
        if done(message):
            return seen


async def test_a_large_transition_goes_out_in_chunks_applied_at_once(tb: TestBackend) -> None:
    name = f"split-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        ids = await client.modify([("counters:padded", {"name": name, "size": PAD + i}) for i in range(8)])
        frames = await transition_frames_until(client, lambda t: t["endVersion"]["querySet"] == 1)
        chunks = [message for _size, message in frames if message["type"] == "TransitionChunk"]
        assert len(chunks) >= 3, [size for size, _ in frames]
        assert all(size <= CAP for size, _ in frames)
        assert [c["partNumber"] for c in chunks] == list(range(len(chunks)))
        assert {c["totalParts"] for c in chunks} == {len(chunks)} and len({c["transitionId"] for c in chunks}) == 1
        assert [client.results[i]["value"] for i in ids] == [0] * 8
        assert [len(client.results[i]["pad"]) for i in ids] == [PAD + i for i in range(8)]

        # A mutation whose writes fill several chunks: its Transition is whole when the client applies it.
        await client.send_mutation("counters:increment", {"name": name})
        response = await client.recv()
        assert response["type"] == "MutationResponse" and response["success"], response
        frames = await transition_frames_until(client, lambda t: ts_of(t["endVersion"]["ts"]) >= ts_of(response["ts"]))
        assert sum(message["type"] == "TransitionChunk" for _size, message in frames) >= 3
        assert [client.results[i]["value"] for i in ids] == [1] * 8
    tb.backend.hub.check_invariants()  # type: ignore[union-attr]


async def test_a_result_larger_than_a_transition_fails_that_query_only(tb: TestBackend) -> None:
    name = f"huge-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        small, huge = await client.subscribe(("counters:padded", {"name": name, "size": 10}),
                                             ("counters:padded", {"name": name, "size": CAP + 1}))
        assert client.results[small]["value"] == 0
        message = client.failures[huge]["errorMessage"]
        assert "BACKEND_MAX_TRANSITION_BYTES" in message and "LimitExceeded" in message, message
        await tb.mutation("counters:increment", {"name": name})
        await client.until(lambda: client.results[small]["value"] == 1)


@pytest.mark.parametrize(("version", "chunks"), [
    ("1.48.0", True), ("1.28.0", True), ("2.0.1", True), ("1.27.9", False), (None, False), ("", False),
    ("latest", False), ("1", False),
])
def test_only_clients_that_join_chunks_get_them(version: str | None, chunks: bool) -> None:
    from backend.sync.endpoint import accepts_transition_chunks

    assert accepts_transition_chunks(version) is chunks


async def test_a_client_without_a_version_gets_consecutive_transitions(tb: TestBackend) -> None:
    """``/api/sync`` (the Rust client's path) cannot join chunks: parts chain, and only the last moves."""
    name = f"plain-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port, path="/api/sync") as client:
        ids = await client.modify([("counters:padded", {"name": name, "size": PAD + i}) for i in range(8)])
        frames = await transition_frames_until(client, lambda t: t["endVersion"]["querySet"] == 1)
        assert all(message["type"] == "Transition" for _size, message in frames)
        assert len(frames) >= 3 and all(size <= CAP for size, _ in frames)
        zero = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
        assert all(m["startVersion"] == zero and m["endVersion"] == zero for _size, m in frames[:-1])
        assert [len(client.results[i]["pad"]) for i in ids] == [PAD + i for i in range(8)]
