"""Closed-loop mutation load: the engine over sync WebSockets, and raw asyncpg running the same SQL.

Each client sends one booking-shaped mutation, waits for its answer, and sends the next. Latencies are kept
for operations that complete inside the measured window (after the warm-up); ops/s is completions in the
window divided by its length. Both loads pick slots and members the same way, so they conflict alike:
client i books as ``member{first+i}`` (a member with history, seeded beforehand) into random slots.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
import uuid
from typing import Any

import asyncpg

from .wire import SyncClient
from .worker import Channel

# The statements the engine issues for ``bench:book`` (2 index reads, 1 insert, 1 patch) ...
_COLUMNS = '"_id", "_creation_time", "bucket", "n", "v"'
READ_SLOT = (f'SELECT {_COLUMNS} FROM "bench_items" WHERE "bucket" = $1 '
             'ORDER BY "bucket" ASC, "_creation_time" ASC, "_id" ASC LIMIT 2')
READ_MEMBER = (f'SELECT {_COLUMNS} FROM "bench_items" WHERE "bucket" = $1 '
               'ORDER BY "bucket" DESC, "n" DESC, "_creation_time" DESC, "_id" DESC LIMIT 2')
INSERT = f'INSERT INTO "bench_items" ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5)'
PATCH = 'UPDATE "bench_items" SET "v" = $2 WHERE "_id" = $1'
# ... and the engine's own bookkeeping around them (exactly-once lookup, patch re-read, commit log, result).
LOOKUP = "SELECT result, log_lines FROM _session_requests WHERE session_id = $1 AND request_id = $2"
REREAD = f'SELECT {_COLUMNS} FROM "bench_items" WHERE _id = $1'
COMMIT_LOG = "INSERT INTO _commit_log (xid, summary) VALUES (pg_current_xact_id(), $1)"
REMEMBER = "INSERT INTO _session_requests (session_id, request_id, result, log_lines) VALUES ($1, $2, $3, $4)"


def _new_id() -> str:
    return base64.b32encode(os.urandom(17)).decode("ascii").rstrip("=").lower()


class Window:
    """The measured interval and what completed inside it."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.start = time.monotonic() + warmup
        self.end = self.start + duration
        self.latencies: list[float] = []
        self.failures = 0

    def done(self) -> bool:
        return time.monotonic() >= self.end

    def record(self, began: float, ok: bool) -> None:
        finished = time.monotonic()
        if self.start <= finished <= self.end:
            if ok:
                self.latencies.append((finished - began) * 1000)
            else:
                self.failures += 1


async def mutator(channel: Channel, config: dict[str, Any]) -> None:
    url, count, slots = config["url"], config["clients"], config["slots"]
    clients = [SyncClient(url) for _ in range(count)]
    await asyncio.gather(*(c.connect(attempts=20) for c in clients))
    channel.emit("ready")
    run = await channel.expect("run")
    window = Window(run["warmup"], run["duration"])
    errors: list[str] = []

    async def loop(index: int, client: SyncClient) -> None:
        rng = random.Random(f"{config['seed']}{index}")
        member = f"member{config['first'] + index}"
        while not window.done():
            began = time.monotonic()
            reply = await client.mutate("bench:book", {"slot": f"slot{rng.randrange(slots)}", "member": member})
            ok = bool(reply.get("success"))
            if not ok and len(errors) < 5:
                errors.append(str(reply.get("result"))[:200])
            window.record(began, ok)

    await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients)))
    channel.emit("result", latencies=window.latencies, failures=window.failures, errors=errors)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    await channel.expect("exit")


async def rawtxn(channel: Channel, config: dict[str, Any]) -> None:
    count, slots, bookkeeping = config["clients"], config["slots"], config["bookkeeping"]
    conns = await asyncio.gather(*(asyncpg.connect(config["dsn"]) for _ in range(count)))
    channel.emit("ready")
    run = await channel.expect("run")
    window = Window(run["warmup"], run["duration"])
    retries = 0

    async def book(conn: asyncpg.Connection, slot: str, member: str, session: str, request: int) -> None:
        if bookkeeping:
            await conn.fetchrow(LOOKUP, session, request)  # before the transaction, as the engine does
        async with conn.transaction(isolation="serializable"):
            row = await conn.fetchrow(READ_SLOT, slot)
            await conn.fetchrow(READ_MEMBER, member)
            taken = (row["v"] or 0) + 1
            await conn.execute(INSERT, _new_id(), time.time() * 1000, member, taken, None)
            if bookkeeping:
                await conn.fetchrow(REREAD, row["_id"])
            await conn.execute(PATCH, row["_id"], taken)
            if bookkeeping:
                await conn.execute(COMMIT_LOG, b'[["bench_items","by_bucket",["' + slot.encode() + b'"]]]')
                await conn.execute(REMEMBER, session, request, str(taken).encode(), b"[]")

    async def loop(index: int, conn: asyncpg.Connection) -> None:
        nonlocal retries
        rng = random.Random(f"{config['seed']}{index}")
        member = f"member{config['first'] + index}"
        session, request = str(uuid.uuid4()), 0
        while not window.done():
            began = time.monotonic()
            slot = f"slot{rng.randrange(slots)}"
            request += 1
            ok = False
            for attempt in range(1, 13):
                try:
                    await book(conn, slot, member, session, request)
                    ok = True
                    break
                except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                    retries += 1  # the engine's backoff: 2 ms doubling, full jitter, capped at 250 ms
                    await asyncio.sleep(random.uniform(0, min(0.25, 0.002 * 2 ** (attempt - 1))))
            window.record(began, ok)

    await asyncio.gather(*(loop(i, c) for i, c in enumerate(conns)))
    channel.emit("result", latencies=window.latencies, failures=window.failures, retries=retries)
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    await channel.expect("exit")
