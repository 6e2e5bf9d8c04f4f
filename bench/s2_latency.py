"""Scenario 2: commit-to-subscriber latency, 1,000 subscribers on distinct queries, ~200 mutations/s.

The engine: each socket subscribes to ``bench:latest`` on its own bucket; an open-loop writer sends
``bench:add`` mutations over sync sockets. Latency is from the mutation's send to the subscriber's
Transition carrying the new value. The baseline: raw asyncpg ``INSERT`` + ``pg_notify`` in one transaction,
and a raw ``websockets`` server (its own process) that LISTENs and pushes a Transition-shaped frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .harness import (
    ServerProcess,
    Worker,
    all_events,
    free_port,
    fresh_database,
    percentile,
    prepare,
    split,
    workers,
)
from .report import Report, Row
from .s1_mutations import _sample


async def _measure(protocol: str, url: str, dsn: str, subs: int, rate: float, duration: float,
                   n_base: int) -> dict[str, Any]:
    procs = 2
    sub_configs = [{"url": url, "protocol": protocol, "buckets": {"prefix": "sub", "start": start, "count": n}}
                   for start, n in zip([sum(split(subs, procs)[:i]) for i in range(procs)], split(subs, procs),
                                       strict=True)]
    writer_config = {"url": url, "dsn": dsn, "protocol": protocol, "connections": 8,
                     "buckets": {"prefix": "sub", "start": 0, "count": subs}}
    async with workers("subscriber", sub_configs, deadline=duration + 180) as subscribers:
        await all_events(subscribers, "ready", timeout=120)
        writer = await Worker("writer", writer_config, deadline=duration + 120).start()
        try:
            await writer.event("ready")
            writer.send("run", rate=rate, duration=duration, n_base=n_base)
            sent = (await writer.event("result", timeout=duration + 60))
        finally:
            await writer.close()
        await asyncio.sleep(1.0)  # the last pushes are in flight
        for w in subscribers:
            w.send("collect")
        results = await all_events(subscribers, "result")
    sent_at = {n: t0 for n, _bucket, t0, _done in sent["sent"]}
    latencies = [(t - sent_at[int(v)]) * 1000 for r in results for _s, _q, v, t in r["receipts"]
                 if v is not None and int(v) in sent_at]
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "sent": len(sent_at),
            "delivered": len(latencies), "writer_lag_ms": sent["lag"] * 1000, "latencies": latencies}


async def run(report: Report, quick: bool) -> None:
    subs, duration, rate = (200, 4.0, 200.0) if quick else (1000, 10.0, 200.0)
    async with fresh_database() as dsn:
        await prepare(dsn, [("sub", subs, 0, 1)])
        async with ServerProcess(dsn) as server:
            ours = await _measure("sync", server.ws_url, dsn, subs, rate, duration, 1_000_000)
        port = free_port()
        async with workers("pushserver", [{"port": port, "dsn": dsn}]) as push:
            await push[0].event("ready")
            base = await _measure("raw", f"ws://127.0.0.1:{port}", dsn, subs, rate, duration, 2_000_000)
    cond = (f"{subs:,} sockets x 1 distinct query, {rate:.0f} mutations/s for {duration:.0f} s; "
            f"delivered {ours['delivered']}/{ours['sent']} vs {base['delivered']}/{base['sent']}")
    report.add(Row("2 commit→subscriber", "latency p50", ours["p50"], base["p50"], "ms", cond, "≤ 2x",
                   ours["p50"] <= 2 * base["p50"]))
    report.add(Row("2 commit→subscriber", "latency p99", ours["p99"], base["p99"], "ms", cond))
    report.data["latency"] = {
        name: {k: v for k, v in m.items() if k != "latencies"} | {"sample": _sample(m["latencies"])}
        for name, m in (("engine", ours), ("baseline", base))
    }
    if ours["writer_lag_ms"] > 50 or base["writer_lag_ms"] > 50:
        report.notes.append(f"scenario 2: the writer fell behind its schedule by up to {ours['writer_lag_ms']:.0f} ms "
                            f"(engine) / {base['writer_lag_ms']:.0f} ms (baseline)")
