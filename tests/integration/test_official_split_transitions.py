"""The official clients (unmodified) get a Transition over ``BACKEND_MAX_TRANSITION_BYTES`` in a form each
accepts: the npm ``ConvexClient`` (which names its version in the socket path) as ``TransitionChunk`` frames,
joined before anything is applied; the PyPI Rust client (no version, no chunk support) as consecutive
Transitions of which only the last moves the version. Neither fails, every subscription gets its result,
and the npm client resolves ``await mutation()`` with every subscription already showing its writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from backend import knobs
from backend.testing import TestBackend
from tests.integration.official_clients import js_client, python_client

pytestmark = pytest.mark.node

CAP = 64 * 1024
QUERIES = 8


@pytest.fixture
def small_transitions() -> Iterator[None]:
    saved = knobs.MAX_TRANSITION_BYTES
    knobs.MAX_TRANSITION_BYTES = CAP
    try:
        yield
    finally:
        knobs.MAX_TRANSITION_BYTES = saved


async def test_split_transitions_are_accepted_and_resolve_the_mutation_last(
    tb: TestBackend, small_transitions: None
) -> None:
    name = f"jsplit-{uuid.uuid4().hex[:8]}"
    async with js_client(tb.url) as client:
        for i in range(QUERIES):
            await client.call("subscribe", sub=f"q{i}", path="counters:padded", args={"name": name, "size": 20_000 + i})
        for i in range(QUERIES):
            await client.expect(lambda e, i=i: e["event"] == "update" and e["sub"] == f"q{i}")
        assert await client.call("mutation", path="counters:increment", args={"name": name}) == 1
        # By the time the mutation resolved, every subscription already showed its write.
        for i in range(QUERIES):
            latest = client.updates(f"q{i}")[-1]
            assert latest["value"] == 1 and len(latest["pad"]) == 20_000 + i
        assert client.frames("in", "TransitionChunk"), "no Transition was sent in chunks"
        problems = [e for e in client.events if e["event"] == "console" and e["level"] in ("error", "warn")]
        assert not problems, problems


async def test_the_python_client_accepts_split_transitions(tb: TestBackend, small_transitions: None) -> None:
    name = f"pysplit-{uuid.uuid4().hex[:8]}"
    async with python_client(tb.url) as client:
        for i in range(QUERIES):
            await client.call("subscribe", sub=f"q{i}", path="counters:padded", args={"name": name, "size": 20_000 + i})
        for i in range(QUERIES):
            await client.expect(lambda e, i=i: e["event"] == "update" and e["sub"] == f"q{i}")
        assert await client.call("mutation", path="counters:increment", args={"name": name}) == 1
        for i in range(QUERIES):
            await client.expect(lambda e, i=i: e["event"] == "update" and e["sub"] == f"q{i}"
                                and e["value"]["value"] == 1)
        assert not [e for e in client.events if e["event"] in ("error", "exited")]
