"""Commit wake-ups go out only while another node listens: alone on its database a node sends no NOTIFY;
nodes that share one find each other at once (``hello`` / ``here``) and wake each other on every commit;
a node that left stops being woken once its ``here`` stops coming."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient


async def _until(condition: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)


def _knows_a_peer(node: TestBackend) -> bool:
    return bool(node.backend.hub._peers_until > time.monotonic())  # type: ignore[union-attr]


async def test_a_node_alone_on_its_database_sends_no_wakeups() -> None:
    async with TestBackend(run_scheduler=False) as node:
        hub: Any = node.backend.hub  # type: ignore[union-attr]
        name = f"alone-{uuid.uuid4().hex[:8]}"
        async with RawClient.open(node.port) as client:
            (live,) = await client.subscribe(("counters:get", {"name": name}))
            for expected in (1.0, 2.0, 3.0):
                await client.mutation("counters:increment", {"name": name})
                await client.until(lambda expected=expected: client.results.get(live) == expected)
        assert hub.stats["wakeups_sent"] == 0
        assert not _knows_a_peer(node)


async def test_nodes_on_one_database_find_each_other_and_wake_each_other() -> None:
    async with TestBackend(run_scheduler=False) as one, \
            TestBackend(database_url=one.database_url, run_scheduler=False) as two:
        # The later node asked who listens; the first answered: each knows the other at once.
        await _until(lambda: _knows_a_peer(one) and _knows_a_peer(two), 3, "the nodes did not find each other")
        name = f"pair-{uuid.uuid4().hex[:8]}"
        async with RawClient.open(two.port) as watcher, RawClient.open(one.port) as writer:
            (live,) = await watcher.subscribe(("counters:get", {"name": name}))
            started = time.monotonic()
            await writer.mutation("counters:increment", {"name": name})
            await watcher.until(lambda: watcher.results.get(live) == 1.0)
            # Well inside the hub's fallback poll (five poll periods): a wake-up carried it.
            assert time.monotonic() - started < knobs.SCHEDULER_POLL_SECONDS * 2.5
        assert one.backend.hub.stats["wakeups_sent"] > 0  # type: ignore[union-attr]


async def test_a_node_that_left_stops_being_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "SCHEDULER_POLL_SECONDS", 0.04)  # here every 0.2 s, forgotten after 0.6 s
    async with TestBackend(run_scheduler=False) as one:
        hub: Any = one.backend.hub  # type: ignore[union-attr]
        async with TestBackend(database_url=one.database_url, run_scheduler=False):
            await _until(lambda: _knows_a_peer(one), 3, "the first node did not hear the second")
            await one.mutation("counters:increment", {"name": f"left-{uuid.uuid4().hex[:8]}"})
            await _until(lambda: hub.stats["wakeups_sent"] > 0, 3, "no wake-up went to the second node")
        await _until(lambda: not _knows_a_peer(one), 3, "the node that left still counts as listening")
        sent = hub.stats["wakeups_sent"]
        for _ in range(3):
            await one.mutation("counters:increment", {"name": f"left-{uuid.uuid4().hex[:8]}"})
        await asyncio.sleep(0.1)
        assert hub.stats["wakeups_sent"] == sent
