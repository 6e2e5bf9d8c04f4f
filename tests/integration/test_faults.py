"""Bookings, cancellations and credit grants under faults, checked against a recorded history.

Two ``python -m backend serve`` nodes share one PostgreSQL that this test runs itself. Clients (the
project's ``AsyncClient`` and the official npm ``convex`` client) book, cancel and grant credits while a
nemesis, driven by a seed printed at the start, terminates PostgreSQL backends, SIGKILLs a node and
restarts it, drops client sockets without a close handshake, and restarts PostgreSQL. Every operation is
recorded with its outcome; afterwards the checker in ``tests/support/history.py`` compares the history and
what the subscribers saw with what the database holds (see that module for each anomaly).

Knobs (environment): ``FAULT_TEST_SECONDS`` (default 45) how long the workload runs, ``FAULT_TEST_SEED``
replays a run's fault and operation choices, ``FAULT_TEST_MAX_OPS`` bounds the operations (default 40 per
second of run time). A long run::

    FAULT_TEST_SECONDS=600 .venv/bin/pytest -s tests/integration/test_faults.py
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backend.auth import mint_dev_token
from backend.client import AsyncClient, ClientError
from tests.support.faults import NodeProcess, OwnPostgres, terminate_backends
from tests.support.history import Facts, History, InstanceFacts, check, summary

pytestmark = pytest.mark.slow

SECRET = "fault-test-secret-" + "z" * 40
SECONDS = float(os.environ.get("FAULT_TEST_SECONDS", "45"))
MAX_OPS = int(os.environ.get("FAULT_TEST_MAX_OPS", str(int(SECONDS * 40))))
OP_TIMEOUT = 20.0  # seconds before an operation's outcome is recorded as unknown
SETTLE = 30.0  # seconds the system gets after healing for pending operations and views to settle
JS_DIR = Path(__file__).resolve().parent.parent / "js"
MEMBERS, CAPACITY, CLASSES = 10, 3, 4


def token(subject: str) -> str:
    return mint_dev_token(SECRET, subject, ttl_seconds=24 * 3600)


# -- the studio ------------------------------------------------------------------------------------------


@dataclass
class Studio:
    owner_token: str
    business_id: str
    members: list[str]
    instances: list[str]
    schedule_args: dict[str, str]
    # booking ids acknowledged so far, and those not yet cancelled by this workload, for cancellations
    bookings: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)

    def queries(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every query a subscriber watches, by name."""
        named: dict[str, tuple[str, dict[str, Any]]] = {"schedule": ("classes:list_instances", self.schedule_args)}
        for instance_id in self.instances:
            named[f"roster:{instance_id}"] = ("bookings:for_instance", {"instanceId": instance_id})
        for member_id in self.members:
            named[f"balance:{member_id}"] = ("credits:balance", {"businessId": self.business_id, "memberId": member_id})
        return named


async def _call(http: httpx.AsyncClient, node: NodeProcess, kind: str, path: str, args: dict[str, Any],
                bearer: str) -> Any:
    response = await http.post(f"{node.url}/api/{kind}", json={"path": path, "args": args, "format": "json"},
                               headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (path, response.status_code, body)
    return body["value"]


async def make_studio(node: NodeProcess, history: History, tag: str) -> Studio:
    owner = token(f"{tag}-owner")
    async with httpx.AsyncClient() as http:
        business = await _call(http, node, "mutation", "businesses:create",
                               {"name": f"Faults {tag}", "timezone": "UTC"}, owner)
        await _call(http, node, "mutation", "businesses:update_settings",
                    {"businessId": business, "waitlistLimit": 100}, owner)
        members = [
            await _call(http, node, "mutation", "members:add",
                        {"businessId": business, "subject": f"{tag}-m{i}", "role": "customer", "name": f"m{i}"}, owner)
            for i in range(MEMBERS)
        ]
        venue = await _call(http, node, "mutation", "venues:create", {"businessId": business, "name": "Hall"}, owner)
        first = dt.date.today() + dt.timedelta(days=3)  # far from every cancellation and promotion cutoff
        await _call(http, node, "mutation", "classes:create_template", {
            "businessId": business, "venueId": venue, "name": "Flow", "startDate": first.isoformat(),
            "startTime": "09:00", "durationMinutes": 60, "rrule": f"FREQ=DAILY;COUNT={CLASSES}", "capacity": CAPACITY,
        }, owner)
        schedule_args = {"businessId": business, "from": f"{first.isoformat()}T00:00:00Z",
                         "to": f"{(first + dt.timedelta(days=CLASSES + 1)).isoformat()}T00:00:00Z"}
        instances = [i["_id"] for i in await _call(http, node, "query", "classes:list_instances", schedule_args, owner)]
        assert len(instances) == CLASSES, instances
        for member_id in members:  # enough credits for every booking; each seed grant is a recorded op too
            op = history.invoke("setup", "grant", f"op-seed-{member_id}", {"memberId": member_id, "credits": 500})
            value = await _call(http, node, "mutation", "credits:grant", {
                "businessId": business, "memberId": member_id, "credits": 500, "expiresOn": "2099-12-31",
                "note": op.tag}, owner)
            op.finish("ok", value)
    return Studio(owner, business, members, instances, schedule_args)


def pair_samples(values: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Pairs that must agree within one Transition: the schedule's seat counters vs each class's roster."""
    schedule = values.get("schedule")
    if not isinstance(schedule, list):
        return []
    out: list[tuple[str, Any, Any]] = []
    for row in schedule:
        roster = values.get(f"roster:{row['_id']}")
        if not isinstance(roster, dict):
            continue
        out.append((f"seats of {row['_id']} (schedule vs roster)", row["booked"], len(roster["attendees"])))
        out.append((f"waitlist of {row['_id']} (schedule vs roster)", row["waitlisted"], len(roster["waitlist"])))
    return out


# -- clients ---------------------------------------------------------------------------------------------


class RecordingClient(AsyncClient):
    """The project's client, recording each Transition's timestamp and the watched pairs it leaves behind."""

    def __init__(self, url: str, *, token: str, name: str, history: History, names: dict[str, str]) -> None:
        super().__init__(url, token=token)
        self.name = name
        self.history = history
        self.names = names  # query token -> name

    def _on_transition(self, message: dict[str, Any]) -> None:
        before = self._remote.version
        super()._on_transition(message)
        after = self._remote.version
        if after is before:
            return  # not applied (a start-version mismatch makes the client reconnect)
        self.history.saw_ts(self.name, after.ts)
        values = {self.names[t]: r.value for t, r in self._remote.server_view().items()
                  if t in self.names and r.error is None}
        for label, left, right in pair_samples(values):
            self.history.pairs.append((self.name, label, after.ts, left, right))

    def drop(self) -> None:
        """Abort the TCP connection under the socket: no close frame, as a network failure would."""
        socket = self._conn._socket
        if socket is not None:
            socket.transport.abort()


class Worker:
    """One client doing a seeded random sequence of operations, recorded in the history."""

    kind = "python"

    def __init__(self, name: str, node: NodeProcess, studio: Studio, history: History, rng: random.Random) -> None:
        self.name, self.node, self.studio, self.history, self.rng = name, node, studio, history, rng
        self.serial = itertools.count()
        self.views: dict[str, Any] = {}

    async def start(self) -> None:
        names: dict[str, str] = {}
        self.client = RecordingClient(self.node.url, token=self.studio.owner_token, name=self.name,
                                      history=self.history, names=names)
        for name, (path, args) in self.studio.queries().items():
            sub = self.client.subscribe(path, args)
            names[sub.token] = name
            sub.on_update(lambda value, name=name: self.views.__setitem__(name, value))
        await self.client.connect(timeout=30)

    async def stop(self) -> None:
        await self.client.close()

    def drop(self) -> None:
        self.client.drop()

    async def mutate(self, path: str, args: dict[str, Any]) -> tuple[str, Any, str | None]:
        try:
            return "ok", await self.client.mutation(path, args), None
        except ClientError as error:
            return "fail", None, f"{error.message} {error.data!r}"[:300]

    def view(self, name: str) -> Any:
        return self.views.get(name)

    async def fresh(self, path: str, args: dict[str, Any]) -> Any:
        async with AsyncClient(self.node.url, token=self.studio.owner_token) as client:
            return await asyncio.wait_for(client.query(path, args), 15)

    async def run(self, deadline: float, budget: Callable[[], bool]) -> None:
        studio = self.studio
        while time.monotonic() < deadline and budget():
            n = next(self.serial)
            tag = f"op-{self.name}-{n}"
            roll = self.rng.random()
            if roll < 0.45 or not studio.bookings:
                kind, path = "book", "bookings:book"
                args: dict[str, Any] = {"instanceId": self.rng.choice(studio.instances),
                                        "memberId": self.rng.choice(studio.members), "payWith": "credits",
                                        "overrideReason": tag}
            elif roll < 0.8:  # mostly a booking still active; sometimes any, to be refused
                kind, path = "cancel", "bookings:cancel"
                pool = studio.active if studio.active and self.rng.random() < 0.85 else studio.bookings
                args = {"bookingId": self.rng.choice(pool), "reason": tag}
            else:
                kind, path = "grant", "credits:grant"
                args = {"businessId": studio.business_id, "memberId": self.rng.choice(studio.members),
                        "credits": self.rng.randint(1, 5), "expiresOn": "2099-12-31", "note": tag}
            op = self.history.invoke(self.name, kind, tag, args)
            try:
                outcome, value, error = await asyncio.wait_for(self.mutate(path, args), OP_TIMEOUT)
            except TimeoutError:
                outcome, value, error = "unknown", None, f"no answer within {OP_TIMEOUT:g}s"
            except (ConnectionError, OSError) as lost:  # the client process itself went away
                op.finish("unknown", None, repr(lost))
                self.history.incidents.append(f"{self.name}: the client stopped: {lost!r}")
                return
            op.finish(outcome, value, error)  # type: ignore[arg-type]
            if outcome == "ok" and kind == "book":
                studio.bookings.append(value["bookingId"])
                studio.active.append(value["bookingId"])
            elif kind == "cancel" and args["bookingId"] in studio.active and outcome != "unknown":
                studio.active.remove(args["bookingId"])
            await asyncio.sleep(self.rng.uniform(0.0, 0.15))


class NodeDriverWorker(Worker):
    """The same workload through the official npm client (tests/js/fault_driver.mjs)."""

    kind = "js"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", "fault_driver.mjs", self.node.url, cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=64 * 1024 * 1024,
        )
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.tags = itertools.count()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready, 30)
        assert await self.command("setAuth", token=self.studio.owner_token)
        for name, (path, args) in self.studio.queries().items():
            await self.command("subscribe", sub=name, path=path, args=args,
                               watch=name == "schedule" or name.startswith("roster:"))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            event = json.loads(line)
            if event["event"] == "ready":
                self.ready.set_result(None)
            elif event["event"] == "transition":
                ts = int(event["ts"])
                self.history.saw_ts(self.name, ts)
                for label, left, right in pair_samples(event["values"]):
                    self.history.pairs.append((self.name, label, ts, left, right))
            elif event["event"] == "result":
                future = self.pending.pop(event["tag"], None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif event["event"] == "uncaught":
                self.history.incidents.append(f"{self.name}: the npm client crashed: {event['message'][:500]}")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the node driver exited"))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        tag = f"c{next(self.tags)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[tag] = future
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "tag": tag, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        try:
            return await future
        finally:
            self.pending.pop(tag, None)

    async def command(self, op: str, **fields: Any) -> Any:
        event = await self.request(op, **fields)
        assert event["ok"], event
        return event["value"]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.request("exit"), 5)
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        self.reader.cancel()

    def drop(self) -> None:
        asyncio.get_running_loop().create_task(self.request("drop"))

    async def mutate(self, path: str, args: dict[str, Any]) -> tuple[str, Any, str | None]:
        event = await self.request("mutation", path=path, args=args)
        if event["ok"]:
            return "ok", event["value"], None
        return "fail", None, f"{event['kind']}: {event['message']} {event.get('data')!r}"[:300]

    def view(self, name: str) -> Any:
        return self._views.get(name)

    async def load_views(self) -> None:
        self._views = {}
        for name in self.studio.queries():
            answer = await self.command("view", sub=name)
            self._views[name] = None if answer is None else answer["value"]

    async def fresh(self, path: str, args: dict[str, Any]) -> Any:
        # The same JSON the npm client turns results into, so the comparison is like for like.
        async with httpx.AsyncClient() as http:
            return await _call(http, self.node, "query", path, args, self.studio.owner_token)


# -- the nemesis -----------------------------------------------------------------------------------------


@dataclass
class Cluster:
    pg: OwnPostgres
    database: str
    database_name: str
    nodes: list[NodeProcess]
    workers: list[Worker] = field(default_factory=list)


async def nemesis(cluster: Cluster, history: History, rng: random.Random, deadline: float) -> None:
    while True:
        await asyncio.sleep(rng.uniform(1.5, 4.0))
        if time.monotonic() >= deadline:
            return
        for node in cluster.nodes:
            if not node.alive():
                history.incidents.append(f"node {node.port} exited by itself: {node.errors()[-1500:]}")
                node.start()
                await node.wait_healthy()
        kind = rng.choice(["terminate_backends", "kill_node", "drop_sockets", "restart_postgres"])
        history.faults[kind] += 1
        if kind == "terminate_backends":
            await terminate_backends(cluster.pg.url, cluster.database_name, rng.uniform(0.2, 1.0), rng.random())
        elif kind == "kill_node":
            node = rng.choice(cluster.nodes)
            node.kill()
            await asyncio.sleep(rng.uniform(0.3, 2.0))
            node.start()
            await node.wait_healthy()
        elif kind == "drop_sockets":
            for worker in cluster.workers:
                if rng.random() < 0.6:
                    worker.drop()
        else:
            mode = rng.choice(["fast", "immediate"])
            await asyncio.to_thread(cluster.pg.stop, mode)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(cluster.pg.start)


# -- reading the outcome ---------------------------------------------------------------------------------


async def read_facts(cluster: Cluster, studio: Studio) -> Facts:
    facts = Facts()
    conn = await asyncpg.connect(cluster.database, timeout=10)
    try:
        for row in await conn.fetch(
            "SELECT after->>'reason' AS tag, document_id FROM audit_log WHERE table_name = 'bookings' "
            "AND after->>'reason' LIKE 'op-%' ORDER BY _creation_time"
        ):
            facts.applied.setdefault(row["tag"], []).append(row["document_id"])
        for row in await conn.fetch("SELECT note, _id FROM credit_lots WHERE note LIKE 'op-%'"):
            facts.applied.setdefault(row["note"], []).append(row["_id"])
        for member_id in studio.members:
            lots = await conn.fetchval("SELECT COALESCE(SUM(remaining), 0) FROM credit_lots "
                                       "WHERE member_id = $1 AND NOT deleted", member_id)
            ledger = await conn.fetchval("SELECT COALESCE(SUM(amount), 0) FROM credit_ledger WHERE member_id = $1",
                                         member_id)
            facts.balances[member_id] = (int(lots), int(ledger))
        async with httpx.AsyncClient() as http:
            for instance_id in studio.instances:
                row = await conn.fetchrow("SELECT capacity, booked, waitlisted FROM class_instances WHERE _id = $1",
                                          instance_id)
                counts = dict(await conn.fetch(
                    "SELECT status, count(*) FROM bookings WHERE instance_id = $1 AND NOT deleted GROUP BY status",
                    instance_id))
                roster = await _call(http, cluster.nodes[0], "query", "bookings:for_instance",
                                     {"instanceId": instance_id}, studio.owner_token)
                joined = {r["_id"]: (r["priority"], r["joined_at"].isoformat()) for r in await conn.fetch(
                    "SELECT _id, priority, joined_at FROM bookings WHERE instance_id = $1", instance_id)}
                facts.instances.append(InstanceFacts(
                    instance_id=instance_id, capacity=row["capacity"], booked=row["booked"],
                    waitlisted=row["waitlisted"],
                    seated=sum(counts.get(s, 0) for s in ("confirmed", "checked_in", "no_show")),
                    waiting=counts.get("waitlisted", 0),
                    roster_waitlist=[(e["position"], *joined[e["bookingId"]], e["bookingId"]) for e in roster["waitlist"]],
                ))
    finally:
        await conn.close()
    return facts


async def settled_views(workers: list[Worker], studio: Studio, facts: Facts) -> None:
    """Each subscriber's final view against a fresh read, given time to converge after the last write."""
    deadline = time.monotonic() + SETTLE
    while True:
        mismatched: dict[tuple[str, str], tuple[Any, Any]] = {}
        for worker in workers:
            if isinstance(worker, NodeDriverWorker):
                await worker.load_views()
            for name, (path, args) in studio.queries().items():
                fresh = await worker.fresh(path, args)
                seen = worker.view(name)
                if seen != fresh:
                    mismatched[(worker.name, name)] = (seen, fresh)
        if not mismatched or time.monotonic() > deadline:
            facts.views.update(mismatched)
            return
        await asyncio.sleep(1.0)


async def heal(cluster: Cluster) -> None:
    with contextlib.suppress(Exception):
        await asyncio.to_thread(cluster.pg.start)  # when it is already running pg_ctl refuses: fine
    for node in cluster.nodes:
        if not node.alive():
            node.start()
        await node.wait_healthy()


# -- the test --------------------------------------------------------------------------------------------


async def test_no_anomalies_under_faults(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULT_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nfault test: seed {seed} (replay with FAULT_TEST_SEED={seed}), {SECONDS:g}s, at most {MAX_OPS} ops")
    rng = random.Random(seed)
    history = History()
    pg = await asyncio.to_thread(OwnPostgres)
    nodes: list[NodeProcess] = []
    workers: list[Worker] = []
    try:
        admin = await asyncpg.connect(pg.url)
        await admin.execute('CREATE DATABASE "faults"')
        await admin.close()
        database = pg.url.rsplit("/", 1)[0] + "/faults"
        env = {"BACKEND_JWT_SECRET": SECRET, "BACKEND_LOG_LEVEL": "WARNING", "BACKEND_POOL_MAX_SIZE": "10"}
        nodes = [NodeProcess(database, tmp_path, env) for _ in range(2)]
        for node in nodes:  # one after the other: the first applies the schema
            node.start()
            await node.wait_healthy()
        cluster = Cluster(pg, database, "faults", nodes)
        studio = await make_studio(nodes[0], history, f"f{seed}")
        worker_rngs = [random.Random(rng.random()) for _ in range(4)]
        workers = [Worker(f"py{i}", nodes[i % 2], studio, history, worker_rngs[i]) for i in range(3)]
        if shutil.which("node") and (JS_DIR / "node_modules" / "convex").is_dir():
            workers.append(NodeDriverWorker("js0", nodes[1], studio, history, worker_rngs[3]))
        else:
            print("node or tests/js/node_modules missing: running without the npm client")
        for worker in workers:
            await worker.start()
        cluster.workers = workers

        deadline = time.monotonic() + SECONDS
        started = len(history.ops)
        load = [asyncio.create_task(w.run(deadline, lambda: len(history.ops) - started < MAX_OPS)) for w in workers]
        faults = asyncio.create_task(nemesis(cluster, history, random.Random(rng.random()), deadline))
        await faults
        await heal(cluster)
        done, late = await asyncio.wait(load, timeout=OP_TIMEOUT + 10)
        for task in done:
            task.result()
        assert not late, "workers did not stop"

        facts = await read_facts(cluster, studio)
        await settled_views(workers, studio, facts)
        anomalies = check(history, facts)
        print(summary(history, anomalies))
        for node in nodes:  # faults make nodes log; these figures say how loudly (not judged)
            text = node.errors()
            errors = sum(1 for line in text.splitlines() if line.startswith("ERROR"))
            print(f"node {node.port}: {node.starts} starts, {errors} error lines, {text.count('Traceback')} tracebacks, {len(text)} bytes of log")
        assert not anomalies, summary(history, anomalies)
        assert len(history.ops) > 50, "too few operations ran to judge anything"
        for worker in workers:  # the time and torn-pair checks saw something from every client
            assert history.timestamps.get(worker.name), f"{worker.name} recorded no Transition"
            assert any(pair[0] == worker.name for pair in history.pairs), f"{worker.name} sampled no pair"
        assert all(op.outcome != "pending" for op in history.ops)
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.stop()
        for node in nodes:
            node.stop()
        await asyncio.to_thread(pg.close)


# -- the commit wake-up across nodes survives a PostgreSQL restart ---------------------------------------

WAKE_UP_BOUND = 2.0  # seconds; the hub's fallback poll is slower, so only a working wake-up meets it


async def _cross_node_delay(one: NodeProcess, two: NodeProcess, name: str) -> float:
    """Seconds from a mutation's response on node one until a subscriber on node two sees its effect."""
    async with AsyncClient(two.url) as watcher, httpx.AsyncClient() as http:
        seen: asyncio.Queue[Any] = asyncio.Queue()
        watcher.subscribe("counters:get", {"name": name}).on_update(seen.put_nowait)
        before = await asyncio.wait_for(seen.get(), 15)
        response = await http.post(f"{one.url}/api/mutation", timeout=15, json={
            "path": "counters:increment", "args": {"name": name}, "format": "json"})
        assert response.json().get("status") == "success", response.text
        started = time.monotonic()
        while (await asyncio.wait_for(seen.get(), 15)) == before:
            pass
        return time.monotonic() - started


async def test_nodes_wake_each_other_again_after_postgres_restarts(tmp_path: Path) -> None:
    pg = await asyncio.to_thread(OwnPostgres)
    nodes: list[NodeProcess] = []
    try:
        database = pg.url
        env = {"BACKEND_JWT_SECRET": SECRET, "BACKEND_LOG_LEVEL": "WARNING", "BACKEND_TEST_FUNCTIONS": "1"}
        nodes = [NodeProcess(database, tmp_path, env) for _ in range(2)]
        for node in nodes:
            node.start()
            await node.wait_healthy()
        one, two = nodes
        assert await _cross_node_delay(one, two, "before") < WAKE_UP_BOUND  # the bound holds without faults
        await asyncio.to_thread(pg.restart, "fast")
        for node in nodes:
            await node.wait_healthy()
        log_from = [len(node.errors()) for node in nodes]
        delays = [await _cross_node_delay(a, b, f"after-{i}") for i, (a, b) in enumerate([(one, two), (two, one)])]
        assert max(delays) < WAKE_UP_BOUND, f"after the restart commits reached the other node after {delays}"
        logged = [node.errors()[start:] for node, start in zip(nodes, log_from, strict=True)]
        assert not any("Traceback" in text for text in logged), logged[0][-2000:] + logged[1][-2000:]
    finally:
        for node in nodes:
            node.stop()
        await asyncio.to_thread(pg.close)
