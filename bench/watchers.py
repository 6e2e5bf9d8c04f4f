"""Subscribers, an open-loop writer and the raw push server, for the latency, fan-out and session scenarios.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine), so a send
time taken in the writer and a receive time taken in a subscriber can be subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import asyncpg
import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from .wire import SyncClient, open_socket, transition_frame, updated_values
from .worker import Channel

CHANNEL = "bench_push"


def bucket_names(plan: dict[str, Any]) -> list[str]:
    """``{"same": b, "count": k}`` or ``{"prefix": p, "start": s, "count": k}``: one bucket per socket."""
    if "same" in plan:
        return [plan["same"]] * plan["count"]
    return [f"{plan['prefix']}{plan['start'] + i}" for i in range(plan["count"])]


def queries_for(kind: dict[str, Any], bucket: str) -> list[tuple[str, dict[str, Any]]]:
    if kind["name"] == "latest":
        return [("bench:latest", {"bucket": bucket})]
    width, step = kind["width"], kind["step"]
    return [("bench:span", {"bucket": bucket, "lo": j * step, "hi": j * step + width}) for j in range(kind["per_socket"])]


class _Tracker:
    """Counts the sockets that have seen a value, without polling them."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}
        self.changed = asyncio.Event()

    def saw(self, value: Any) -> None:
        self.counts[value] = self.counts.get(value, 0) + 1
        self.changed.set()

    async def wait(self, value: Any, total: int) -> None:
        while self.counts.get(value, 0) < total:
            self.changed.clear()
            await self.changed.wait()


class _Watch:
    """One subscribed socket; ``receipts`` holds (query id, value, time) of every update after the first."""

    def __init__(self, index: int, url: str, raw: bool, bucket: str, queries: list[tuple[str, dict[str, Any]]],
                 tracker: _Tracker) -> None:
        self.index, self.url, self.raw, self.bucket, self.queries = index, url, raw, bucket, queries
        self.tracker = tracker
        self.first_seen: dict[Any, float] = {}
        self.client = SyncClient(url)
        self.ws: ClientConnection | None = None
        self.ready = asyncio.Event()
        self.receipts: list[tuple[int, Any, float]] = []
        self.resubscribed_at = 0.0
        self.reconnects = 0

    async def open(self, attempts: int, last_close: str = "InitialConnect") -> None:
        if self.raw:
            self.ws = await open_socket(self.url, attempts)
            await self.ws.send(msgspec.json.encode({"bucket": self.bucket}).decode())
        else:
            await self.client.connect(attempts, last_close)
            self.ws = self.client.ws
            await self.client.subscribe(self.queries)

    async def read(self, reconnect: bool, gate: asyncio.Semaphore) -> None:
        while True:
            pending = set(range(len(self.queries)))
            try:
                while True:
                    assert self.ws is not None
                    message = msgspec.json.decode(await self.ws.recv())
                    now = time.monotonic()
                    for query_id, value in updated_values(message):
                        if pending:
                            pending.discard(query_id)
                            if not pending:
                                self.resubscribed_at = now
                                self.ready.set()
                        else:
                            self.receipts.append((query_id, value, now))
                            if value not in self.first_seen:
                                self.first_seen[value] = now
                                self.tracker.saw(value)
            except ConnectionClosed:
                if not reconnect:
                    return
            self.reconnects += 1
            await asyncio.sleep(random.uniform(0.05, 0.15))
            async with gate:
                await self.open(attempts=600, last_close="ServerRestart")


async def subscriber(channel: Channel, config: dict[str, Any]) -> None:
    raw = config["protocol"] == "raw"
    kind = config.get("queries", {"name": "latest"})
    buckets = bucket_names(config["buckets"])
    tracker = _Tracker()
    watches = [_Watch(i, config["url"], raw, b, queries_for(kind, b), tracker) for i, b in enumerate(buckets)]
    gate = asyncio.Semaphore(config.get("connect_concurrency", 64))
    readers: list[asyncio.Task[None]] = []

    async def start(watch: _Watch) -> None:
        async with gate:
            await watch.open(attempts=50)
        readers.append(asyncio.create_task(watch.read(config.get("reconnect", False), gate)))
        await watch.ready.wait()

    began = time.monotonic()
    await asyncio.gather(*(start(w) for w in watches))
    channel.emit("ready", seconds=time.monotonic() - began)
    while True:
        command = await channel.command()
        if command["command"] == "exit":
            break
        if command["command"] == "clear":
            for watch in watches:
                watch.receipts.clear()
                watch.first_seen.clear()
            tracker.counts.clear()
            channel.emit("cleared")
        elif command["command"] == "resubscribed":
            # Wait until every socket has reconnected (after ``since``) and received its queries again.
            since, limit = command["since"], time.monotonic() + command["timeout"]
            while time.monotonic() < limit and any(w.resubscribed_at < since for w in watches):
                await asyncio.sleep(0.05)
            times = [w.resubscribed_at for w in watches]
            channel.emit("resubscribed", times=times, missing=sum(t < since for t in times),
                         reconnects=sum(w.reconnects for w in watches))
        elif command["command"] == "wait":
            # Until every socket holds ``value`` (or the timeout): when did each first see it?
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracker.wait(command["value"], len(watches)), command["timeout"])
            firsts = [w.first_seen.get(command["value"]) for w in watches]
            channel.emit("got", times=[f for f in firsts if f is not None],
                         missing=sum(f is None for f in firsts))
        elif command["command"] == "collect":
            receipts = [(w.index, q, v, t) for w in watches for q, v, t in w.receipts]
            channel.emit("result", receipts=receipts)
    for task in readers:
        task.cancel()


async def writer(channel: Channel, config: dict[str, Any]) -> None:
    """Open loop: item i is due at start + i/rate; each connection sends the next due item when it is free."""
    raw = config["protocol"] == "raw"
    buckets = bucket_names(config["buckets"])
    conns: list[Any]
    if raw:
        conns = list(await asyncio.gather(*(asyncpg.connect(config["dsn"]) for _ in range(config["connections"]))))
    else:
        conns = [SyncClient(config["url"]) for _ in range(config["connections"])]
        await asyncio.gather(*(c.connect(attempts=20) for c in conns))
    channel.emit("ready")
    run = await channel.expect("run")
    rate, total = run["rate"], int(run["rate"] * run["duration"])
    rng = random.Random(run["n_base"])
    items = [(rng.choice(buckets), run["n_base"] + i) for i in range(total)]
    start = time.monotonic() + 0.05
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    sent: list[tuple[int, str, float, float]] = []
    lag = 0.0

    async def send(conn: Any) -> None:
        nonlocal lag
        while not queue.empty():
            i = queue.get_nowait()
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            bucket, n = items[i]
            t0 = time.monotonic()
            lag = max(lag, t0 - due)
            if raw:
                async with conn.transaction():
                    await conn.execute('INSERT INTO bench_items ("_id", "_creation_time", "bucket", "n") '
                                       "VALUES (md5(random()::text), $1, $2, $3)", time.time() * 1000, bucket, n)
                    await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", f"{bucket}|{n}")
            else:
                await conn.mutate("bench:add", {"bucket": bucket, "n": n})
            sent.append((n, bucket, t0, time.monotonic()))

    await asyncio.gather(*(send(c) for c in conns))
    channel.emit("result", sent=sent, lag=lag)
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    await channel.expect("exit")


async def pushserver(channel: Channel, config: dict[str, Any]) -> None:
    """The baseline's server: raw ``websockets``, LISTEN on PostgreSQL, push one Transition-shaped frame."""
    by_bucket: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        bucket = msgspec.json.decode(await ws.recv())["bucket"]
        by_bucket.setdefault(bucket, set()).add(ws)
        try:
            await ws.send(transition_frame(None).decode())
            await ws.wait_closed()
        finally:
            by_bucket[bucket].discard(ws)

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        bucket, n = payload.rsplit("|", 1)
        targets = by_bucket.get(bucket)
        if targets:
            broadcast(targets, transition_frame(int(n)).decode())

    listener = await asyncpg.connect(config["dsn"])
    await listener.add_listener(CHANNEL, on_notify)
    async with serve(handler, "127.0.0.1", config["port"], compression=None, max_size=None, ping_interval=None,
                     backlog=4096):
        channel.emit("ready")
        await channel.expect("exit")
    await listener.close()
