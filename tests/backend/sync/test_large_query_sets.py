"""A large query-set change is applied in slices between other sockets' work: while one client adds
thousands of queries (or re-authenticates with them), another client's mutation round trips complete, and the
large change still arrives whole, in one Transition that moves to its query-set version."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.support.sync_client import RawClient

COUNT = 1500


def session_of(tb: TestBackend, client: RawClient) -> Any:
    return next(s for s in tb.backend.sessions if s.session_id == client.session)  # type: ignore[union-attr]


async def victim_round_trips(tb: TestBackend, victim: RawClient, name: str, query_id: int, big: Any) -> int:
    """Mutation round trips on the victim's socket while ``big`` is part applied; returns how many."""
    done = 0
    while big.sub.applying or done == 0:
        response, transition = await victim.mutation("counters:increment", {"name": name})
        assert response["success"] and transition is not None
        done += 1
        assert victim.results[query_id] == done
        if done >= 3:
            break
    return done


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knobs, "HUB_QUERIES_PER_PASS", 16)


async def test_a_large_add_does_not_hold_up_other_sockets(tb: TestBackend) -> None:
    marker = f"big-{uuid.uuid4().hex[:8]}"
    victim_name = f"victim-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as victim, RawClient.open(tb.port) as big:
        (query_id,) = await victim.subscribe(("counters:get", {"name": victim_name}))
        await big.modify([("counters:get", {"name": f"{marker}-{i}"}) for i in range(COUNT)])
        big_session = session_of(tb, big)
        while big_session.sub is None or not big_session.sub.applying:
            await asyncio.sleep(0.001)
        rounds = await victim_round_trips(tb, victim, victim_name, query_id, big_session)
        # The victim finished its round trips while the large change was still being applied.
        assert big_session.sub.applying, "the large add finished before the victim's round trips"
        assert rounds == 3
        transition = await big.transition(timeout=60)
        assert transition["endVersion"]["querySet"] == 1
        assert len(transition["modifications"]) == COUNT and set(big.results.values()) == {0}
        tb.backend.hub.check_invariants()  # type: ignore[union-attr]
        # A new query on the victim's socket is not queued behind the large change either.
        ids = await big.modify([("counters:get", {"name": f"{marker}-x{i}"}) for i in range(COUNT)])
        (extra,) = await victim.subscribe(("counters:get", {"name": victim_name + "-2"}))
        assert victim.results[extra] == 0
        await big.until(lambda: all(i in big.results for i in ids), timeout=60)
    tb.backend.hub.check_invariants()  # type: ignore[union-attr]


async def test_re_authenticating_a_large_query_set_is_sliced(tb: TestBackend) -> None:
    marker = f"bigauth-{uuid.uuid4().hex[:8]}"
    victim_name = f"victim-{uuid.uuid4().hex[:8]}"
    async with RawClient.open(tb.port) as victim, RawClient.open(tb.port) as big:
        (query_id,) = await victim.subscribe(("counters:get", {"name": victim_name}))
        queries = [("counters:get", {"name": f"{marker}-{i}"}) for i in range(COUNT)]
        await big.subscribe(*queries, ("counters:whoami", {}))
        big_session = session_of(tb, big)
        await big.send({"type": "Authenticate", "tokenType": "User", "value": tb.token("big-user"), "baseVersion": 0})
        while not big_session.sub.applying:
            await asyncio.sleep(0.001)
        assert await victim_round_trips(tb, victim, victim_name, query_id, big_session) == 3
        assert big_session.sub.applying, "the re-subscription finished before the victim's round trips"
        transition = await big.transition(timeout=60)
        assert transition["endVersion"]["identity"] == 1
        assert big.results[COUNT] == "big-user"
        tb.backend.hub.check_invariants()  # type: ignore[union-attr]
