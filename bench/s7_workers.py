"""Scenario 7: every core, scenarios 1 and 3 against ``serve --workers 1`` and ``serve --workers 2``.

Throughput: the booking-shaped mutation of scenario 1 from 32 closed-loop WebSocket clients, against one
server with one worker, the same with two workers (the kernel spreads the sockets over them, SO_REUSEPORT),
and raw asyncpg in one and in two processes; variants interleaved. Fan-out: scenario 3's one commit to many
sockets, with the server as a separate process (the commit is sent over a socket like any client's), with one
and with two workers, beside the raw ``websockets`` broadcast. The scaling ratio is two workers / one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .harness import ServerProcess, fresh_database, prepare
from .report import Report, Row
from .s1_mutations import HISTORY, MEMBERS, SLOTS, _load, _merge
from .s3_fanout import _broadcast, _fan
from .wire import SyncClient


async def _throughput(report: Report, quick: bool) -> None:
    clients = 32
    duration, warmup, rounds = (3.0, 1.0, 1) if quick else (8.0, 2.0, 2)
    async with fresh_database() as dsn:
        await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
        # One server at a time: an idle server's hubs would otherwise wake for every commit of the other.
        variants: dict[str, tuple[str, dict[str, Any], int]] = {
            "1 worker": ("mutator", {}, 1),
            "2 workers": ("mutator", {}, 2),
            "asyncpg": ("rawtxn", {"dsn": dsn, "bookkeeping": False, "procs": 1}, 0),
            "asyncpg, 2 processes": ("rawtxn", {"dsn": dsn, "bookkeeping": False, "procs": 2}, 0),
        }
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
        for round_ in range(rounds):  # interleaved: a noisy neighbour hits every variant alike
            for name, (role, base, workers) in variants.items():
                tag = f"w{round_}{name[:1]}{name[-3:]}"
                if not workers:
                    runs[name].append(await _load(role, base, clients, warmup, duration, tag, dsn))
                    continue
                async with ServerProcess(dsn, workers=workers) as server:
                    config = {"url": server.ws_url}
                    runs[name].append(await _load(role, config, clients, warmup, duration, tag, dsn))
    merged = {name: _merge(results) for name, results in runs.items()}
    w1, w2, raw, wide = (merged[k] for k in ("1 worker", "2 workers", "asyncpg", "asyncpg, 2 processes"))
    cond = f"{clients} clients, {duration * rounds:.0f} s measured per variant, interleaved; 1 asyncpg process"
    report.add(Row("7 workers", "throughput, 1 worker", w1["ops"], raw["ops"], "ops/s", cond, "≥ 0.5x",
                   w1["ops"] >= 0.5 * raw["ops"]))
    report.add(Row("7 workers", "throughput, 2 workers", w2["ops"], raw["ops"], "ops/s", cond, "≥ 0.9x",
                   w2["ops"] >= 0.9 * raw["ops"]))
    report.add(Row("7 workers", "throughput scaling, 2 workers / 1", w2["ops"], w1["ops"], "ops/s",
                   "same run; baseline column is 1 worker"))
    report.add(Row("7 workers", "throughput, 2 workers vs asyncpg in 2 processes", w2["ops"], wide["ops"], "ops/s",
                   "both sides spread over both cores"))
    report.add(Row("7 workers", "latency p50, 2 workers / 1", w2["p50"], w1["p50"], "ms", "as above"))
    report.data["workers_throughput"] = {name: {k: v for k, v in m.items() if k != "latencies"}
                                         for name, m in merged.items()}
    for name in ("1 worker", "2 workers"):
        if merged[name]["errors"]:
            report.notes.append(f"{name} mutation errors: {merged[name]['errors']}")


async def _engine_fan(workers: int, count: int, repeats: int) -> dict[str, Any]:
    async with fresh_database() as dsn:
        await prepare(dsn, [])
        async with ServerProcess(dsn, workers=workers) as server:
            writer = SyncClient(server.ws_url)
            await writer.connect(attempts=20)
            try:
                await writer.mutate("bench:add", {"bucket": "fan", "n": 0})

                async def trigger(value: int) -> None:
                    await writer.send_mutation("bench:add", {"bucket": "fan", "n": value})

                return await _fan(server.ws_url, "sync", count, repeats, trigger)
            finally:
                await writer.close()


async def _fanout(report: Report, quick: bool) -> None:
    sizes = [1000] if quick else [1000, 10_000]
    repeats = 3 if quick else 5
    for count in sizes:
        one = await _engine_fan(1, count, repeats)
        two = await _engine_fan(2, count, repeats)
        base = await _broadcast(count, repeats)
        cond = (f"{count:,} sockets, median of {repeats} commits; server in its own process; "
                f"missing {one['missing']} / {two['missing']}")
        target = "≤ 1.5x" if count == max(sizes) else ""
        report.add(Row("7 workers", f"fan-out to {count:,}, 1 worker", one["last"], base["last"], "ms", cond))
        report.add(Row("7 workers", f"fan-out to {count:,}, 2 workers", two["last"], base["last"], "ms", cond,
                       target, two["last"] <= 1.5 * base["last"] if target else None))
        report.add(Row("7 workers", f"fan-out to {count:,} scaling, 2 workers / 1", two["last"], one["last"], "ms",
                       "time to last socket; baseline column is 1 worker"))
        report.data.setdefault("workers_fanout", {})[str(count)] = {
            "1 worker": one["lasts"], "2 workers": two["lasts"], "broadcast": base["lasts"]}


async def run(report: Report, quick: bool) -> None:
    await _throughput(report, quick)
    await asyncio.sleep(0.5)
    await _fanout(report, quick)
