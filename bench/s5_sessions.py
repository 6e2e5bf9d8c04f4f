"""Scenario 5: sessions and memory, 10,000 WebSocket sessions with one subscription each.

Server memory per idle session is the growth of the server process's VmRSS (``/proc/<pid>/status``) from a
warmed-up idle server to one holding every session, divided by the sessions; each session has its own
query (``bench:latest`` on its own bucket). Then the server is restarted (SIGTERM, a new process on the same
port) and the clients reconnect as official clients do (same session id, ``maxObservedTimestamp``, the
query set re-sent, 50-150 ms jittered pauses between attempts); the figure is the time from the new
server listening to the last session holding its query result again. Baseline: the raw ``websockets``
push server holding as many connections, restarted the same way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .harness import (
    ServerProcess,
    Worker,
    all_events,
    free_port,
    fresh_database,
    prepare,
    rss_kib,
    split,
    workers,
)
from .report import Report, Row
from .wire import SyncClient


async def _warm(url: str) -> None:
    client = SyncClient(url)
    await client.connect(attempts=20)
    await client.subscribe([("bench:latest", {"bucket": "m0"})])
    await client.recv()
    await client.mutate("bench:add", {"bucket": "warm", "n": 1})
    await client.close()


async def _hold(url: str, protocol: str, sessions: int, pid_of: Any, restart: Any) -> dict[str, Any]:
    procs = 1 if sessions <= 1000 else 4
    starts = [sum(split(sessions, procs)[:i]) for i in range(procs)]
    configs = [{"url": url, "protocol": protocol, "reconnect": True, "connect_concurrency": 50,
                "buckets": {"prefix": "m", "start": s, "count": n}} for s, n in zip(starts, split(sessions, procs),
                                                                                    strict=True)]
    await asyncio.sleep(1.0)
    before = rss_kib(pid_of())
    async with workers("subscriber", configs, deadline=600) as holders:
        ready = await all_events(holders, "ready", timeout=400)
        await asyncio.sleep(2.0)
        after = rss_kib(pid_of())
        stopped_at = time.monotonic()
        listening_at = await restart()
        for w in holders:
            w.send("resubscribed", since=stopped_at, timeout=240)
        back = await all_events(holders, "resubscribed", timeout=300)
    last = max(t for b in back for t in b["times"])
    return {"kib_per_session": (after - before) / sessions, "rss_before_kib": before, "rss_after_kib": after,
            "connect_seconds": max(r["seconds"] for r in ready), "reconnect_seconds": last - listening_at,
            "restart_seconds": listening_at - stopped_at, "missing": sum(b["missing"] for b in back)}


async def run(report: Report, quick: bool) -> None:
    sessions = 1000 if quick else 10_000
    async with fresh_database() as dsn:
        await prepare(dsn, [("m", sessions, 0, 1)])
        server = ServerProcess(dsn)
        await server.start()
        try:
            await _warm(server.ws_url)

            async def restart_engine() -> float:
                nonlocal server
                await server.stop(timeout=30)
                server = ServerProcess(dsn, port=server.port)
                await server.start()
                return server.ready_at

            ours = await _hold(server.ws_url, "sync", sessions, lambda: server.pid, restart_engine)
        finally:
            await server.stop()
        port = free_port()
        push = await Worker("pushserver", {"port": port, "dsn": dsn}, deadline=600).start()
        try:
            await push.event("ready")

            async def restart_push() -> float:
                nonlocal push
                await push.close()
                push = await Worker("pushserver", {"port": port, "dsn": dsn}, deadline=600).start()
                await push.event("ready")
                return time.monotonic()

            def push_pid() -> int:
                assert push.proc is not None
                return push.proc.pid

            base = await _hold(f"ws://127.0.0.1:{port}", "raw", sessions, push_pid, restart_push)
        finally:
            await push.close()
    cond = (f"{sessions:,} idle sessions, 1 distinct query each; RSS {ours['rss_before_kib'] / 1024:.0f} → "
            f"{ours['rss_after_kib'] / 1024:.0f} MiB")
    report.add(Row("5 sessions", "server memory per idle session", ours["kib_per_session"], base["kib_per_session"],
                   "KiB", cond + "; baseline: raw websockets connection", "≤ 30 KiB", ours["kib_per_session"] <= 30))
    report.add(Row("5 sessions", "reconnect all after a restart", ours["reconnect_seconds"], base["reconnect_seconds"],
                   "s", f"from the new server listening to the last query result; the stop + start took "
                   f"{ours['restart_seconds']:.1f} s vs {base['restart_seconds']:.1f} s; sessions that never came back: "
                   f"{ours['missing']} vs {base['missing']}"))
    report.add(Row("5 sessions", "connect + subscribe all", ours["connect_seconds"], base["connect_seconds"], "s",
                   f"{sessions:,} sockets from {1 if sessions <= 1000 else 4} processes, 50 handshakes in flight each"))
    report.data["sessions"] = {"engine": ours, "baseline": base}
