"""``python -m bench.syscalls``: system calls per booking mutation, the engine's server beside raw asyncpg.

On a shared VM the CPU time of the same work moves by ±20% between runs; the number of system calls does not.
``strace -c`` (Debian's ``strace``) is attached to the server process (``serve --workers 1``) while four sync
sockets send ``bench:book`` one after another, and to a raw asyncpg process that runs scenario 1's booking
transaction (``BEGIN``, two reads, insert, patch, ``COMMIT``) the same number of times on four connections.
Counts are divided by the mutations completed; strace slows both down, so only the counts mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .harness import REPO, ServerProcess, fresh_database, prepare
from .s1_mutations import HISTORY, MEMBERS, SLOTS
from .wire import SyncClient

CLIENTS = 4
_RAW = """
import asyncio, random, sys, time, uuid, asyncpg
from bench.loads import INSERT, PATCH, READ_MEMBER, READ_SLOT, _new_id
async def main(dsn, calls, slots, members):
    conns = [await asyncpg.connect(dsn) for _ in range({clients})]
    async def book(conn, i):
        for attempt in range(12):
            try:
                return await attempt_book(conn, i)
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** attempt))
    async def attempt_book(conn, i):
        async with conn.transaction(isolation="serializable"):
            row = await conn.fetchrow(READ_SLOT, f"slot{{i % slots}}")
            await conn.fetchrow(READ_MEMBER, f"member{{i % members}}")
            taken = (row["v"] or 0) + 1
            await conn.execute(INSERT, _new_id(), time.time() * 1000, f"member{{i % members}}", taken, None)
            await conn.execute(PATCH, row["_id"], taken)
    await asyncio.gather(*(book(c, k) for k, c in enumerate(conns)))  # prepare the statements
    print("ready", flush=True)
    sys.stdin.readline()
    async def loop(k, conn):
        for i in range(calls // {clients}):
            await book(conn, k * 997 + i)
    await asyncio.gather(*(loop(k, c) for k, c in enumerate(conns)))
    print("done", flush=True)
    sys.stdin.readline()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def _attach(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL)


def _counts(out: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


async def _engine(dsn: str, calls: int, out: Path) -> None:
    async with ServerProcess(dsn) as server:
        clients = [SyncClient(server.ws_url) for _ in range(CLIENTS)]
        for client in clients:
            await client.connect()
            await client.mutate("bench:book", {"slot": "slot1", "member": "member1"})
        tracer = _attach(server.pid, out)
        await asyncio.sleep(1.0)  # strace is attached

        async def run(k: int, client: SyncClient) -> None:
            for i in range(calls // CLIENTS):
                reply = await client.mutate("bench:book", {"slot": f"slot{(k * 997 + i) % SLOTS}",
                                                           "member": f"member{i % MEMBERS}"})
                assert reply.get("success"), reply

        await asyncio.gather(*(run(k, c) for k, c in enumerate(clients)))
        await asyncio.sleep(0.5)  # the last hub pass
        tracer.send_signal(2)
        tracer.wait()
        for client in clients:
            await client.close()


async def _raw(dsn: str, calls: int, out: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RAW.format(clients=CLIENTS), dsn, str(calls), str(SLOTS), str(MEMBERS), cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert (await proc.stdout.readline()).strip() == b"ready"
        tracer = _attach(proc.pid, out)
        await asyncio.sleep(1.0)
        proc.stdin.write(b"go\n")
        assert (await proc.stdout.readline()).strip() == b"done"
        tracer.send_signal(2)
        tracer.wait()
        proc.stdin.write(b"end\n")
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()


async def _measure(calls: int) -> dict[str, Counter[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        async with fresh_database() as dsn:
            await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
            for name, measure in (("engine server", _engine), ("raw asyncpg", _raw)):
                out = Path(tmp) / f"{name}.txt"
                await measure(dsn, calls, out)
                results[name] = _counts(out)
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.syscalls", description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args(argv)
    if shutil.which("strace") is None:
        print("needs strace (apt-get install strace)", file=sys.stderr)
        return 2
    results = asyncio.run(_measure(args.calls))
    names = sorted({call for counts in results.values() for call, n in counts.items() if n / args.calls >= 0.05},
                   key=lambda call: -max(c[call] for c in results.values()))
    print(f"system calls per mutation, {args.calls} mutations on {CLIENTS} connections")
    print("| system call | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for call in names:
        print(f"| {call} | " + " | ".join(f"{c[call] / args.calls:.2f}" for c in results.values()) + " |")
    totals = [sum(n for call, n in c.items() if call in names) / args.calls for c in results.values()]
    print("| all of the above | " + " | ".join(f"{t:.2f}" for t in totals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
