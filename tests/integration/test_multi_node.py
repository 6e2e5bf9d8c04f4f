"""Two server processes on one database: every node learns every commit, promptly and exactly once.

The nodes are real ``python -m backend serve`` subprocesses; clients talk to them over real sockets and
HTTP, so nothing is shared between the nodes except PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backend.testing import create_database, drop_database, free_port
from tests.support.sync_client import RawClient, ts_of

ROOT = Path(__file__).resolve().parents[2]
SECRET = "multi-node-secret-" + "y" * 40
WAKE_UP_BOUND = 1.5  # seconds; the fallback poll is slower, so only the commit wake-up can meet it


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def errors(self) -> str:
        """What the node logged at WARNING or above (its stderr)."""
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    database: str
    nodes: list[Node]


def _spawn(database: str, folder: Path) -> Node:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "BACKEND_JWT_SECRET": SECRET, "BACKEND_LOG_LEVEL": "WARNING",
           "BACKEND_TEST_FUNCTIONS": "1"}
    log = folder / f"node-{port}.log"
    with log.open("wb") as sink:  # a file, not a pipe: a chatty node must never block on a full pipe
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--workers", "1", "--port", str(port), "--no-scheduler"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )
    return Node(port, process, log)


async def _wait_healthy(node: Node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"node exited: {node.errors()[-2000:]}")
            try:
                if (await http.get(node.url + "/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"node on port {node.port} did not become healthy")


def _stop(node: Node) -> None:
    node.process.terminate()
    try:
        node.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait(timeout=5)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    database = await create_database("nodes")
    folder = tmp_path_factory.mktemp("nodes")
    nodes: list[Node] = []
    try:
        nodes.append(_spawn(database, folder))
        await _wait_healthy(nodes[0])  # the first node applies the schema
        nodes.append(_spawn(database, folder))
        await _wait_healthy(nodes[1])
        yield Cluster(database, nodes)
        for node in nodes:
            assert "Traceback" not in node.errors(), node.errors()[-3000:]
    finally:
        for node in nodes:
            _stop(node)
        await drop_database(database)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def http_mutation(http: httpx.AsyncClient, node: Node, path: str, args: dict[str, Any]) -> Any:
    response = await http.post(node.url + "/api/mutation", json={"path": path, "args": args, "format": "json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


async def test_a_mutation_on_one_node_updates_a_subscriber_on_the_other(cluster: Cluster) -> None:
    one, two = cluster.nodes
    name = unique("cross")
    async with RawClient.open(two.port) as far, RawClient.open(one.port) as near, httpx.AsyncClient() as http:
        (qf,) = await far.subscribe(("counters:get", {"name": name}))
        (qn,) = await near.subscribe(("counters:get", {"name": name}))
        worst = 0.0
        for expected in range(1, 6):
            started = time.monotonic()
            await http_mutation(http, one, "counters:increment", {"name": name})
            await far.until(lambda e=expected: far.results[qf] == e, timeout=10)
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.05)
        assert worst < WAKE_UP_BOUND, f"node 2 learned of node 1's commit after {worst:.2f}s"
        # And the other way round, through a socket mutation with its read-your-writes Transition.
        response, transition = await far.mutation("counters:increment", {"name": name})
        assert transition is not None and far.results[qf] == 6
        started = time.monotonic()
        await near.until(lambda: near.results[qn] == 6, timeout=10)
        assert time.monotonic() - started < WAKE_UP_BOUND
        assert ts_of(response["ts"]) <= far.ts


async def test_a_burst_from_both_nodes_is_seen_exactly_by_both(cluster: Cluster) -> None:
    prefix = unique("burst") + "/"
    names, per_name = 40, 5
    total = names * per_name
    watchers = []
    async with RawClient.open(cluster.nodes[0].port) as w1, RawClient.open(cluster.nodes[1].port) as w2:
        for client in (w1, w2):
            (q,) = await client.subscribe(("counters:range", {"lo": prefix, "hi": prefix + "~"}))
            watchers.append((client, q))
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            jobs = [
                http_mutation(http, cluster.nodes[i % 2], "counters:increment", {"name": f"{prefix}{i % names:03d}"})
                for i in range(total)
            ]
            await asyncio.gather(*jobs)
        finished = time.monotonic()
        for client, q in watchers:
            sums: list[float] = []

            def done(c: RawClient = client, q: int = q, sums: list[float] = sums) -> bool:
                current = sum(row["value"] for row in c.results[q])
                if not sums or sums[-1] != current:
                    sums.append(current)
                return current >= total

            await client.until(done, timeout=10)
            assert time.monotonic() - finished < WAKE_UP_BOUND + 1.0, "the last commits of the burst came late"
            assert sums == sorted(sums), "a subscriber saw the count go down"
            rows = client.results[q]
            assert len(rows) == names and all(row["value"] == per_name for row in rows)
    conn = await asyncpg.connect(cluster.database)
    try:
        truth = await conn.fetchval("SELECT sum(value) FROM counters WHERE name LIKE $1", prefix + "%")
    finally:
        await conn.close()
    assert truth == total


async def test_time_and_exactly_once_hold_across_nodes(cluster: Cluster) -> None:
    one, two = cluster.nodes
    name = unique("hop")
    session = str(uuid.uuid4())
    ahead = time.time_ns() + 120 * 10**9  # node 1 is told of a timestamp two minutes ahead
    async with RawClient.open(one.port, session_id=session, max_observed=ahead) as first:
        await first.subscribe(("counters:get", {"name": name}))
        response, _ = await first.mutation("counters:increment", {"name": name, "by": 3}, request_id=0)
        assert response["result"] == 3 and first.ts >= ahead
        seen = first.ts
    # The client reconnects to node 2 with what it saw, and replays its mutation.
    async with RawClient.open(two.port, session_id=session, connection_count=1, max_observed=seen) as second:
        (q,) = await second.subscribe(("counters:get", {"name": name}))
        assert second.ts >= seen, "time went backwards across a reconnect to another node"
        replay, _ = await second.mutation("counters:increment", {"name": name, "by": 3}, request_id=0)
        assert replay["result"] == 3 and ts_of(replay["ts"]) >= seen
        assert second.results[q] == 3, "the replay ran a second time on the other node"

