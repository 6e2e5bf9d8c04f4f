"""Scenario 1: mutation throughput and latency, the engine over WebSockets beside raw asyncpg.

``bench:book`` (2 index reads, 1 insert, 1 patch) from N closed-loop clients; the baseline runs the same
statements in SERIALIZABLE transactions over N asyncpg connections, with the engine's retry policy. A second
baseline adds the engine's bookkeeping statements (exactly-once lookup and record, the patch's re-read, the
commit-log row), which separates the cost of the extra SQL from the cost of Python. Retries are counted by
PostgreSQL (``xact_rollback``), the same way for every variant.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .harness import (
    ServerProcess,
    all_events,
    fresh_database,
    percentile,
    pg_rollbacks,
    prepare,
    split,
    workers,
)
from .report import Report, Row

SLOTS = 1000
MEMBERS = 64  # each with HISTORY earlier rows: a member's reads and inserts stay on its own index pages
HISTORY = 300


async def _load(role: str, base: dict[str, Any], clients: int, warmup: float, duration: float,
                tag: str, dsn: str) -> dict[str, Any]:
    procs = base.get("procs", 1 if clients < 8 else 2)
    sizes = split(clients, procs)
    configs = [{**base, "clients": n, "slots": SLOTS, "seed": f"{tag}p{i}", "first": sum(sizes[:i])}
               for i, n in enumerate(sizes)]
    before = await pg_rollbacks(dsn)
    async with workers(role, configs, deadline=warmup + duration + 120) as group:
        await all_events(group, "ready")
        for w in group:
            w.send("run", warmup=warmup, duration=duration)
        results = await all_events(group, "result", timeout=warmup + duration + 60)
    await asyncio.sleep(1.2)  # statistics reach pg_stat_database within a second
    rollbacks = await pg_rollbacks(dsn) - before
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r.get("errors", [])]
    return {
        "ops": len(latencies) / duration, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
        "failures": sum(r["failures"] for r in results), "retries": rollbacks, "errors": errors[:3],
        "client_retries": sum(r.get("retries", 0) for r in results), "latencies": latencies,
    }


async def run(report: Report, quick: bool) -> None:
    clients = 32
    duration, warmup, rounds = (3.0, 1.0, 1) if quick else (10.0, 2.0, 2)
    sweep = [] if quick else [1, 4, 16, 64]
    async with fresh_database() as dsn:
        await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
        async with ServerProcess(dsn) as server:
            engine = {"url": server.ws_url}
            # The baselines run in one process, as the engine does; the last one shows the machine's limit.
            raw = {"dsn": dsn, "bookkeeping": False, "procs": 1}
            kept = {"dsn": dsn, "bookkeeping": True, "procs": 1}
            wide = {"dsn": dsn, "bookkeeping": False, "procs": 2}
            variants = {"engine": ("mutator", engine), "asyncpg": ("rawtxn", raw),
                        "asyncpg+bookkeeping": ("rawtxn", kept), "asyncpg, 2 processes": ("rawtxn", wide)}
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
            for round_ in range(rounds):  # interleaved rounds: a noisy neighbour hits every variant alike
                for name, (role, base) in variants.items():
                    runs[name].append(await _load(role, base, clients, warmup, duration, f"r{round_}{name[:3]}", dsn))
            curve: dict[str, list[tuple[int, float]]] = {"engine": [], "asyncpg": []}
            for level in sweep:
                for name in ("engine", "asyncpg"):
                    role, base = variants[name]
                    result = await _load(role, base, level, 1.0, 4.0, f"s{level}{name[:3]}", dsn)
                    curve[name].append((level, result["ops"]))
    merged = {name: _merge(results) for name, results in runs.items()}
    for name in ("engine", "asyncpg"):
        curve[name].append((clients, merged[name]["ops"]))
        curve[name].sort()
    ours, raw_, kept_ = merged["engine"], merged["asyncpg"], merged["asyncpg+bookkeeping"]
    wide_ = merged["asyncpg, 2 processes"]
    cond = (f"{clients} clients, {duration * rounds:.0f} s measured; engine: 1 server process, baseline: 1 asyncpg "
            f"process; {SLOTS} slots, members with {HISTORY} rows")
    report.add(Row("1 mutations", "throughput", ours["ops"], raw_["ops"], "ops/s", cond, "≥ 0.5x",
                   ours["ops"] >= 0.5 * raw_["ops"]))
    report.add(Row("1 mutations", "latency p50", ours["p50"], raw_["p50"], "ms", "as above"))
    report.add(Row("1 mutations", "latency p99", ours["p99"], raw_["p99"], "ms", "as above"))
    report.add(Row("1 mutations", "retries (rolled-back txns)", ours["retries"], raw_["retries"], "",
                   f"counted by PostgreSQL (xact_rollback); failed mutations: {ours['failures']} vs {raw_['failures']}"))
    report.add(Row("1 mutations", "throughput vs asyncpg + engine bookkeeping SQL", ours["ops"], kept_["ops"],
                   "ops/s", "baseline sends the engine's SQL (lookup, 2 reads, insert, re-read, patch, log, result)"))
    report.add(Row("1 mutations", "throughput vs asyncpg in 2 processes", ours["ops"], wide_["ops"], "ops/s",
                   "the machine's limit: client-side Python spread over both cores"))
    report.data["mutations"] = {
        name: {k: v for k, v in m.items() if k != "latencies"} | {"sample": _sample(m["latencies"])}
        for name, m in merged.items()
    }
    report.data["mutations_curve"] = curve
    if ours["errors"]:
        report.notes.append(f"engine mutation errors: {ours['errors']}")


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in results for x in r["latencies"]]
    return {
        "ops": sum(r["ops"] for r in results) / len(results),
        "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
        "failures": sum(r["failures"] for r in results), "retries": sum(r["retries"] for r in results),
        "client_retries": sum(r["client_retries"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:3], "latencies": latencies,
    }


def _sample(values: list[float], limit: int = 3000) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= limit:
        return [round(v, 3) for v in ordered]
    step = len(ordered) / limit
    return [round(ordered[int(i * step)], 3) for i in range(limit)]
