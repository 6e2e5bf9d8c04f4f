"""Scenario 3: fan-out, one commit that changes a query watched by 1,000 and by 10,000 sockets.

The engine runs in this process (``TestBackend``) so its hub's re-run counter can be read; subscribers are
separate processes. The figure is the time from the mutation's start to the moment the last socket holds
the new value. The baseline is a raw ``websockets`` server, also in this process, that broadcasts a
Transition-shaped frame with the same value to the same number of sockets.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

from .harness import all_events, free_port, percentile, split, workers
from .report import Report, Row
from .wire import transition_frame


async def _fan(url: str, protocol: str, count: int, repeats: int,
               trigger: Any, reruns: Any = None) -> dict[str, Any]:
    procs = 1 if count <= 1000 else 4
    configs = [{"url": url, "protocol": protocol, "buckets": {"same": "fan", "count": n},
                "connect_concurrency": 50} for n in split(count, procs)]
    lasts: list[float] = []
    medians: list[float] = []
    runs: list[int] = []
    missing = 0
    async with workers("subscriber", configs, deadline=400) as subscribers:
        ready = await all_events(subscribers, "ready", timeout=300)
        connect_seconds = max(r["seconds"] for r in ready)
        for i in range(repeats):
            value = 1000 + i
            before = reruns() if reruns else 0
            t0 = time.monotonic()
            await trigger(value)
            for w in subscribers:
                w.send("wait", value=value, timeout=60)
            got = await all_events(subscribers, "got", timeout=90)
            times = [t for g in got for t in g["times"]]
            missing += sum(g["missing"] for g in got)
            lasts.append((max(times) - t0) * 1000)
            medians.append((percentile(times, 50) - t0) * 1000)
            if reruns:
                runs.append(reruns() - before)
            await asyncio.sleep(0.2)
    return {"last": percentile(lasts, 50), "lasts": lasts, "median": percentile(medians, 50), "reruns": runs,
            "missing": missing, "connect_seconds": connect_seconds}


async def _engine(count: int, repeats: int) -> dict[str, Any]:
    from backend.testing import TestBackend

    async with TestBackend(run_scheduler=False) as tb:
        await tb.runner.mutation("bench:add", {"bucket": "fan", "n": 0}, None)
        hub = tb.backend.hub  # type: ignore[union-attr]

        async def trigger(value: int) -> None:
            outcome = await tb.runner.mutation("bench:add", {"bucket": "fan", "n": value}, None)
            if outcome.error is not None:
                raise RuntimeError(str(outcome.error))

        url = f"ws://127.0.0.1:{tb.port}/api/1.0.0/sync"
        return await _fan(url, "sync", count, repeats, trigger, lambda: hub.stats["reruns"])


async def _broadcast(count: int, repeats: int) -> dict[str, Any]:
    sockets: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        sockets.add(ws)
        try:
            await ws.send(transition_frame(None).decode())
            await ws.wait_closed()
        finally:
            sockets.discard(ws)

    async def trigger(value: int) -> None:
        broadcast(sockets, transition_frame(float(value)).decode())

    port = free_port()
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None, backlog=4096):
        return await _fan(f"ws://127.0.0.1:{port}", "raw", count, repeats, trigger)


async def run(report: Report, quick: bool) -> None:
    sizes = [1000] if quick else [1000, 10_000]
    repeats = 3 if quick else 5
    curve: dict[str, list[tuple[int, float]]] = {"engine": [], "broadcast": []}
    for count in sizes:
        ours = await _engine(count, repeats)
        base = await _broadcast(count, repeats)
        curve["engine"].append((count, ours["last"]))
        curve["broadcast"].append((count, base["last"]))
        cond = (f"{count:,} sockets, one query (identical args), median of {repeats} commits; "
                f"median socket {ours['median']:.0f} vs {base['median']:.0f} ms; missing {ours['missing']}")
        target = "≤ 2x" if count == max(sizes) else ""
        report.add(Row("3 fan-out", f"time to last of {count:,} sockets", ours["last"], base["last"], "ms", cond,
                       target, ours["last"] <= 2 * base["last"] if target else None))
        per_commit = max(ours["reruns"]) if ours["reruns"] else None
        report.add(Row("3 fan-out", f"re-runs per commit ({count:,} sockets)", per_commit, 1, "",
                       f"re-runs per commit: {ours['reruns']}", "= 1", bool(ours["reruns"]) and per_commit == 1))
    report.data["fanout"] = curve
