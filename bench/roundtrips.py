"""``python -m bench.roundtrips``: the PostgreSQL round trips of one booking-shaped mutation, listed.

A small proxy sits between the engine and PostgreSQL and reads the client side of the wire protocol: every
simple ``Query`` and every ``Sync`` (the end of an extended-protocol batch: Parse/Bind/Execute…) is one round
trip, since the client then waits for ``ReadyForQuery``. The engine runs in this process, serves a socket,
and ``bench:book`` is called over the sync protocol (as scenario 1 does) and over ``POST /api/mutation``,
one at a time; the trips seen on every connection between the calls are divided by the number of calls.
Works with or without a subscriber (``--subscribers``), so the hub's trips per commit show up too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import urllib.parse
from collections import Counter
from typing import Any

from .harness import fresh_database, prepare
from .s1_mutations import HISTORY, MEMBERS, SLOTS
from .wire import SyncClient

# Session settings and statements only one kind of connection makes: how a connection is told apart.
_ROLES = {"plan_cache_mode": "hub snapshot", "synchronous_commit = off": "hub notifier",
          "LISTEN \"": "hub listener", "pg_advisory_lock": "scheduler"}
_STARTUP_CODES = {196608}  # protocol 3.0; SSLRequest/GSSENCRequest/CancelRequest come as other codes


class _Proxy:
    """Forwards bytes unchanged and files each client round trip under a short label, per connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.trips: Counter[tuple[str, str]] = Counter()  # (connection, label) → count
        self.roles: dict[str, str] = {}  # connection → what it is, from the session settings it makes
        self.connections = 0

    def role(self, conn: str) -> str:
        return self.roles.get(conn, "pool (functions)")

    def _note(self, conn: str, sql: str) -> None:
        for marker, role in _ROLES.items():
            if marker in sql:
                self.roles[conn] = role

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = f"c{self.connections}"
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        down = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            await self._client_side(conn, reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await down
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _client_side(self, conn: str, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        names: dict[str, str] = {}
        batch: list[str] = []
        started = False
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                if not started:
                    head = await reader.readexactly(8)
                    length, code = struct.unpack("!ii", head)
                    body = await reader.readexactly(length - 8)
                    up.write(head + body)
                    started = code in _STARTUP_CODES
                    continue
                head = await reader.readexactly(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                body = await reader.readexactly(length - 4)
                up.write(head + body)
                await up.drain()
                if kind == b"Q":
                    self._note(conn, body.decode())
                    self.trips[(conn, "query: " + _short(body[:-1].decode()))] += 1
                elif kind == b"P":
                    name, _, rest = body.partition(b"\0")
                    text = rest.partition(b"\0")[0].decode()
                    names[name.decode()] = text
                    self._note(conn, text)
                    batch.append("prepare: " + _short(text))
                elif kind == b"B":
                    statement = body.partition(b"\0")[2].partition(b"\0")[0].decode()
                    batch.append("execute: " + _short(names.get(statement, statement or "(unnamed)")))
                elif kind == b"S":
                    label = " + ".join(dict.fromkeys(batch)) or "sync"
                    self.trips[(conn, label)] += 1
                    batch = []
                elif kind == b"X":
                    return


def _short(sql: str, width: int = 90) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _via(url: str, port: int) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    host, real = parts.hostname or "127.0.0.1", parts.port or 5432
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    query = (parts.query + "&" if parts.query else "") + "sslmode=disable"
    proxied = urllib.parse.urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, query, ""))
    return proxied, host, real


async def _measure(calls: int, subscribers: int) -> dict[str, Any]:
    from backend.testing import TestBackend, free_port

    async with fresh_database() as dsn:
        await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
        port = free_port()
        proxied, host, real = _via(dsn, port)
        proxy = _Proxy(host, real)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
        out: dict[str, Any] = {}
        async with server, TestBackend(database_url=proxied, run_scheduler=False) as tb:
            url = f"ws://127.0.0.1:{tb.port}/api/1.0.0/sync"
            watchers = [SyncClient(url) for _ in range(subscribers)]
            for w in watchers:
                await w.connect()
                await w.subscribe([("bench:latest", {"bucket": "slot1"})])
                await w.recv()
            client = SyncClient(url)
            await client.connect()
            await client.mutate("bench:book", {"slot": "slot1", "member": "member1"})  # warm the statement caches
            await asyncio.sleep(0.3)
            for mode in ("sync", "http"):
                before = Counter(proxy.trips)
                for i in range(calls):
                    args = {"slot": "slot1", "member": f"member{i % MEMBERS}"}
                    if mode == "sync":
                        reply = await client.mutate("bench:book", args)
                        assert reply.get("success"), reply
                    else:
                        outcome = await tb.runner.mutation("bench:book", args, None)
                        assert outcome.error is None, outcome.error
                    await asyncio.sleep(0.05)  # let the hub's iteration for this commit finish
                seen = proxy.trips - before
                per_label: Counter[str] = Counter()
                for (conn, label), count in seen.items():
                    per_label[f"[{proxy.role(conn)}] {label}"] += count
                out[mode] = {label: count / calls for label, count in per_label.most_common()}
            await client.close()
            for w in watchers:
                await w.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrips", description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=1, help="sockets watching the booked slot")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(_measure(args.calls, args.subscribers))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for mode, labels in result.items():
        via = "sync socket (scenario 1)" if mode == "sync" else "runner.mutation (HTTP path, no session)"
        print(f"\n{via}: {sum(labels.values()):.2f} round trips per call, all connections")
        for label, count in labels.items():
            print(f"  {count:5.2f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
