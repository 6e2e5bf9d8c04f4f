"""Transitions stay under ``BACKEND_MAX_TRANSITION_BYTES``: a larger one goes out as consecutive Transitions
that chain, where only the last moves the version (so no mutation resolves and no query-set change is
confirmed before all of it has arrived); a single result over the limit fails that query alone."""

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


async def transitions_until(client: RawClient, done: Any) -> list[tuple[int, dict[str, Any]]]:
    """(frame size, Transition) for every frame up to the Transition for which ``done`` holds."""
    seen: list[tuple[int, dict[str, Any]]] = []
    while True:
        raw = await asyncio.wait_for(client.ws.recv(), 10)
        message = json.loads(raw)
        if message["type"] != "Transition":
            continue
        client.apply(message)
        seen.append((len(raw), message))
        if done(message):
            return seen


async def test_a_large_transition_is_split_into_chained_parts(tb: TestBackend) -> None:
    name = f"split-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        ids = await client.modify([("counters:padded", {"name": name, "size": PAD + i}) for i in range(8)])
        parts = await transitions_until(client, lambda t: t["endVersion"]["querySet"] == 1)
        assert len(parts) >= 3, [size for size, _ in parts]
        assert all(size <= CAP for size, _ in parts)
        zero = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
        for _size, part in parts[:-1]:
            assert part["startVersion"] == zero and part["endVersion"] == zero and part["modifications"]
        assert [client.results[i]["value"] for i in ids] == [0] * 8
        assert [len(client.results[i]["pad"]) for i in ids] == [PAD + i for i in range(8)]

        # A mutation whose writes fill several parts: only the last part reaches the mutation's ts.
        await client.send_mutation("counters:increment", {"name": name})
        response = await client.recv()
        assert response["type"] == "MutationResponse" and response["success"], response
        parts = await transitions_until(client, lambda t: ts_of(t["endVersion"]["ts"]) >= ts_of(response["ts"]))
        assert len(parts) >= 3
        for _size, part in parts[:-1]:
            assert ts_of(part["endVersion"]["ts"]) < ts_of(response["ts"])
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
