"""The hub's wake-up connections (LISTEN and NOTIFY) come back after PostgreSQL drops them, so other nodes'
commits keep reaching this node's subscribers at once rather than only at the next poll."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from backend.reactive.hub import CHANNEL
from backend.testing import TestBackend


async def test_a_terminated_listener_and_notifier_are_reopened(tb: TestBackend) -> None:
    hub = tb.backend.hub  # type: ignore[union-attr]
    old_listener, old_notifier = hub._listener, hub._notifier
    pids = [old_listener.get_server_pid(), old_notifier.get_server_pid()]
    admin = await asyncpg.connect(tb.database_url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM (SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p) t",
                                    pids) == 2
        deadline = time.monotonic() + 15
        while hub._listener is old_listener or hub._listener is None or hub._notifier is old_notifier:
            assert time.monotonic() < deadline, "the hub did not re-open its wake-up connections"
            await asyncio.sleep(0.1)
        assert not hub._listener.is_closed() and not hub._notifier.is_closed()
        # The new listener hears a NOTIFY from anywhere (another node's commit): the hub wakes at once.
        passes = hub.stats["passes"]
        await admin.execute(f"NOTIFY {CHANNEL}")
        deadline = time.monotonic() + 3
        while hub.stats["passes"] == passes:
            assert time.monotonic() < deadline, "a NOTIFY did not wake the hub"
            await asyncio.sleep(0.02)
    finally:
        await admin.close()
