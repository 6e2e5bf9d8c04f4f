"""Which commit feed? The cost of each way of telling other nodes about a commit, measured interleaved.

A: no signal; B: a commit-log row in each transaction (our design); C: B plus a coalesced NOTIFY after
commit; D: pg_notify inside every transaction. 32 asyncpg clients run a small SERIALIZABLE write transaction
(2 primary-key reads, 1 insert, 1 update) for a fixed time per round; rounds alternate A, B, C, D so machine
noise hits every variant alike.

    python -m bench.commit_feed [--seconds 4] [--rounds 2] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from backend.testing import create_database, drop_database

SETUP = [
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)",
    "CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, amount int NOT NULL)",
    "CREATE TABLE commit_log (xid xid8 PRIMARY KEY, summary bytea NOT NULL)",
    "INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g",
]


async def transaction(conn: asyncpg.Connection, variant: str, n: int) -> None:
    a, b = n % 1000 + 1, (n * 7919) % 1000 + 1
    async with conn.transaction(isolation="serializable"):
        await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", a)
        await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", b)
        await conn.execute("INSERT INTO events (account, amount) VALUES ($1, 1)", a)
        await conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", a)
        if variant in ("B", "C"):
            await conn.execute("INSERT INTO commit_log (xid, summary) VALUES (pg_current_xact_id(), $1)", b"k" * 64)
        if variant == "D":
            await conn.execute("SELECT pg_notify('feed', $1)", "k" * 64)


async def run_variant(url: str, variant: str, clients: int, seconds: float) -> float:
    conns = [await asyncpg.connect(url) for _ in range(clients)]
    notifier = await asyncpg.connect(url)
    await notifier.execute("SET synchronous_commit = off")
    wanted = False
    sender: asyncio.Task[None] | None = None
    done = 0
    deadline = time.perf_counter() + seconds

    async def wake() -> None:
        nonlocal wanted
        while wanted:  # one NOTIFY in flight; commits meanwhile share the next
            wanted = False
            await notifier.execute("NOTIFY feed")

    async def worker(conn: asyncpg.Connection, seed: int) -> None:
        nonlocal done, wanted, sender
        n = seed
        while time.perf_counter() < deadline:
            n += clients
            try:
                await transaction(conn, variant, n)
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                continue
            done += 1
            if variant == "C":
                wanted = True
                if sender is None or sender.done():
                    sender = asyncio.get_running_loop().create_task(wake())

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, i) for i, c in enumerate(conns)))
    if sender is not None:
        await sender
    elapsed = time.perf_counter() - started
    for conn in [*conns, notifier]:
        await conn.close()
    return done / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    url = await create_database("feedbench")
    try:
        conn = await asyncpg.connect(url)
        for statement in SETUP:
            await conn.execute(statement)
        await conn.close()
        results: dict[str, list[float]] = {v: [] for v in "ABCD"}
        for _ in range(args.rounds):
            for variant in "ABCD":
                results[variant].append(await run_variant(url, variant, args.clients, args.seconds))
        base = statistics.median(results["A"])
        names = {"A": "no signal", "B": "commit-log row (ours)", "C": "B + coalesced NOTIFY after commit",
                 "D": "pg_notify inside every transaction"}
        print(f"| variant | txn/s (median of {args.rounds}) | ratio to A |")
        print("|---|---|---|")
        for variant in "ABCD":
            rate = statistics.median(results[variant])
            print(f"| {variant}: {names[variant]} | {rate:,.0f} | {rate / base:.2f} |")
    finally:
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
