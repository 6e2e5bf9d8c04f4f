"""``python -m bench.cpu``: where the machine's CPU goes per booking mutation, the engine beside raw asyncpg.

Scenario 1's closed-loop load runs against the engine (``serve --workers N``) and against raw asyncpg. Over
the measured window the CPU time of every process is read from ``/proc`` and grouped: the server, the
PostgreSQL backends, the load generators, and everything else on the machine. Divided by the operations
completed, that is CPU milliseconds per mutation per group; beside it the machine's busy share. When the
machine is near 100% busy, throughput is (cores x 1000) / (total CPU ms per op), so the table says exactly
which process's cost keeps a ratio where it is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import ServerProcess, all_events, fresh_database, prepare, split, workers
from .s1_mutations import HISTORY, MEMBERS, SLOTS

_TICK = os.sysconf("SC_CLK_TCK")
GROUPS = ("server", "postgres", "load generators", "other")


def _group(pid: int, server: int | None) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "other"
    if b"bench.worker" in cmdline:
        return "load generators"
    if comm.startswith("postgres") or cmdline.startswith(b"postgres"):
        return "postgres"
    if server is not None and (pid == server or _parent_chain_has(pid, server)):
        return "server"
    return "other"


def _parent_chain_has(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of one process (its threads included), in clock ticks; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return int(fields[11]), int(fields[12])


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Snapshot:
    per_pid: dict[int, tuple[int, int]] = field(default_factory=dict)
    machine: tuple[int, int] = (0, 0)

    @classmethod
    def take(cls) -> Snapshot:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        return cls({pid: _cpu_ticks(pid) for pid in pids}, _machine_ticks())


def _by_group(before: Snapshot, after: Snapshot, server: int | None) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds per group between two snapshots (processes present in both), classified while they run;
    and the part of it spent in the kernel (system time)."""
    seconds = dict.fromkeys(GROUPS, 0.0)
    kernel = dict.fromkeys(GROUPS, 0.0)
    for pid, (user, system) in after.per_pid.items():
        if pid in before.per_pid and pid != os.getpid():
            group = _group(pid, server)
            user0, system0 = before.per_pid[pid]
            seconds[group] += (user - user0 + system - system0) / _TICK
            kernel[group] += (system - system0) / _TICK
    return seconds, kernel


async def _measure(role: str, base: dict[str, Any], clients: int, seconds: float, server: int | None,
                   warmup: float = 2.0) -> dict[str, Any]:
    procs = base.get("procs", 1 if clients < 8 else 2)
    sizes = split(clients, procs)
    configs = [{**base, "clients": n, "slots": SLOTS, "seed": f"cpu{role}{i}", "first": sum(sizes[:i])}
               for i, n in enumerate(sizes)]
    async with workers(role, configs, deadline=warmup + seconds + 120) as group:
        await all_events(group, "ready")
        for w in group:
            w.send("run", warmup=warmup, duration=seconds)
        await asyncio.sleep(warmup)
        before = Snapshot.take()
        await asyncio.sleep(seconds)
        after = Snapshot.take()
        cpu, kernel = _by_group(before, after, server)
        results = await all_events(group, "result", timeout=seconds + 60)
    ops = sum(len(r["latencies"]) for r in results)
    busy = (after.machine[0] - before.machine[0]) / max(1, after.machine[1] - before.machine[1])
    return {"ops": ops / seconds, "cpu": cpu, "kernel": kernel, "busy": busy, "count": ops}


def table(rows: dict[str, dict[str, Any]]) -> str:
    """CPU ms per operation by group; in brackets the part spent in the kernel (system calls, sockets)."""
    head = "| variant | ops/s | machine busy | " + " | ".join(f"{g} ms/op" for g in GROUPS) + " | total ms/op |"
    out = [head, "|" + "---|" * (len(GROUPS) + 4)]
    for name, r in rows.items():
        count = max(1, r["count"])
        per = [1000 * r["cpu"][g] / count for g in GROUPS]
        sys_ = [1000 * r["kernel"][g] / count for g in GROUPS]
        cells = [f"{v:.3f} ({k:.3f})" for v, k in zip(per, sys_, strict=True)]
        out.append(f"| {name} | {r['ops']:,.0f} | {100 * r['busy']:.0f}% | " + " | ".join(cells)
                   + f" | {sum(per):.3f} |")
    return "\n".join(out)


async def _run(seconds: float, clients: int, worker_counts: list[int]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    async with fresh_database() as dsn:
        await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
        rows["asyncpg (1 process)"] = await _measure("rawtxn", {"dsn": dsn, "bookkeeping": False, "procs": 1},
                                                     clients, seconds, None)
        for n in worker_counts:
            async with ServerProcess(dsn, workers=n) as server:
                rows[f"engine, {n} worker{'s' if n > 1 else ''}"] = await _measure(
                    "mutator", {"url": server.ws_url}, clients, seconds, server.pid)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    rows = asyncio.run(_run(args.seconds, args.clients, counts))
    print(f"{os.cpu_count()} cores; CPU per completed mutation over a {args.seconds:.0f} s window, "
          f"{args.clients} closed-loop clients")
    print(table(rows))
    print("(in brackets: the part spent in the kernel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
