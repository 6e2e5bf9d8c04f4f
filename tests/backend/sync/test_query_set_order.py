"""A ModifyQuerySet is applied in message order: an id added and removed (or removed and re-added, or added,
removed and added again) in one message ends exactly as the message says, in the session and in the hub.
Every query instance is owned and released exactly once, checked with ``Hub.check_invariants`` after hostile
sequences and after the sockets close."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


def hub(tb: TestBackend) -> Any:
    return tb.backend.hub  # type: ignore[union-attr]


def instances_for(tb: TestBackend, name: str) -> int:
    return sum(1 for key in hub(tb).instances if name.encode() in key[1])


def add(query_id: int, name: str) -> dict[str, Any]:
    return {"type": "Add", "queryId": query_id, "udfPath": "counters:get", "args": [{"name": name}]}


def remove(query_id: int) -> dict[str, Any]:
    return {"type": "Remove", "queryId": query_id}


async def modify(client: RawClient, *mods: dict[str, Any]) -> dict[str, Any]:
    """Send one ModifyQuerySet and return the Transition that confirms it."""
    base = client.sent_query_set
    client.sent_query_set += 1
    await client.send({"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1,
                       "modifications": list(mods)})
    while True:
        message = await client.recv()
        if message["type"] == "Transition" and message["endVersion"]["querySet"] == base + 1:
            return message


def updated_ids(transition: dict[str, Any]) -> set[int]:
    return {m["queryId"] for m in transition["modifications"] if m["type"] in ("QueryUpdated", "QueryFailed")}


async def test_add_then_remove_in_one_message_leaves_nothing(tb: TestBackend) -> None:
    name = f"order-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        transition = await modify(client, add(0, name), remove(0))
        assert 0 not in updated_ids(transition)
        assert instances_for(tb, name) == 0
        hub(tb).check_invariants()
        # A write the removed query would have seen sends it nothing.
        await tb.mutation("counters:increment", {"name": name})
        await client.silent(0.4)
        assert 0 not in client.results


async def test_remove_then_add_of_the_same_id_replaces_it(tb: TestBackend) -> None:
    old, new = f"order-{uuid.uuid4().hex[:8]}", f"order-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        await modify(client, add(0, old))
        await tb.mutation("counters:increment", {"name": new})
        transition = await modify(client, remove(0), add(0, new))
        assert client.results[0] == 1, transition
        assert instances_for(tb, old) == 0 and instances_for(tb, new) == 1
        hub(tb).check_invariants()
        await tb.mutation("counters:increment", {"name": new})
        await client.until(lambda: client.results.get(0) == 2)
        await tb.mutation("counters:increment", {"name": old})
        await client.silent(0.4)  # the old query is gone: its writes reach nobody
    assert instances_for(tb, old) == 0 and instances_for(tb, new) == 0
    hub(tb).check_invariants()


async def test_add_remove_add_ends_with_one_subscription(tb: TestBackend) -> None:
    first, second = f"order-{uuid.uuid4().hex[:8]}", f"order-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        await modify(client, add(0, first), remove(0), add(0, second), remove(0), add(0, second))
        assert client.results[0] == 0
        assert instances_for(tb, first) == 0 and instances_for(tb, second) == 1
        hub(tb).check_invariants()
        await tb.mutation("counters:increment", {"name": second})
        await client.until(lambda: client.results.get(0) == 1)
        # Removed, re-added and removed again across messages: nothing is left behind.
        await modify(client, remove(0), add(0, first))
        await modify(client, remove(0), add(1, first), remove(1))
        assert client.results == {} and instances_for(tb, first) == 0
        hub(tb).check_invariants()


async def test_hostile_sequences_leave_no_orphans_after_close(tb: TestBackend) -> None:
    marker = f"orph-{uuid.uuid4().hex[:8]}"
    names = [f"{marker}-{i}" for i in range(5)]
    for round_ in range(3):
        async with RawClient.open(tb.port) as a, RawClient.open(tb.port) as b:
            for client in (a, b):
                mods: list[dict[str, Any]] = []
                for i, name in enumerate(names):  # shared instances across the two sockets
                    mods += [add(i, name), remove(i), add(i, name)]
                    if i % 2:
                        mods += [remove(i), add(i, names[(i + round_) % len(names)])]
                await modify(client, *mods)
            hub(tb).check_invariants()
            await modify(a, *(remove(i) for i in range(0, 5, 2)))
            hub(tb).check_invariants()
        hub(tb).check_invariants()
    assert sum(1 for key in hub(tb).instances if marker.encode() in key[1]) == 0
    assert not any(marker.encode() in repr(owner).encode() for owner in hub(tb).index._owned)


async def test_query_limit_counts_exactly(tb: TestBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "MAX_QUERIES_PER_SESSION", 3)
    marker = f"limit-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as client:
        # Adds and removes of the same ids in one message never count a removed query.
        await modify(client, add(0, marker + "0"), remove(0), add(0, marker + "1"), add(1, marker + "2"),
                     add(2, marker + "3"), remove(2), add(2, marker + "4"))
        session = next(s for s in tb.backend.sessions if s.sub is not None and 2 in s.sub.queries)  # type: ignore[union-attr]
        assert sorted(session.sub.queries) == [0, 1, 2]
        assert instances_for(tb, marker) == 3
        # A fourth live query is refused.
        base = client.sent_query_set
        await client.send({"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1,
                           "modifications": [remove(0), add(0, marker + "5"), add(3, marker + "6")]})
        messages, _closed = await client.closed()
        assert any(m["type"] == "FatalError" and "more than 3 queries" in m["error"] for m in messages), messages
    assert instances_for(tb, marker) == 0
    hub(tb).check_invariants()
