"""Hostile-client measurements: ``python -m bench.hostile slices|memory``.

``slices``: one client adds 10,000 queries in one ModifyQuerySet while a victim on another socket runs
mutation round trips (MutationResponse and the Transition after it) back to back; prints the victim's round
trip times while the large add is pending, and how long the large add took. ``--per-pass N`` sets
``BACKEND_HUB_QUERIES_PER_PASS`` (a huge value applies the whole add in one pass, as before slicing).

``memory``: a server in a child process (``python -m backend serve``, on a fresh database); six sockets each
send a 14 MB frame, then twenty stall halfway through one (``--big``, ``--stalled``); prints the server's RSS
before, at its peak, and after. Runs against the code in the current directory, so it can be pointed at an older checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import uuid
from typing import Any

import websockets


def _connect_frame() -> str:
    return json.dumps({"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0})


async def _recv(ws: Any, timeout: float) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] != "Ping":
            return message


async def slices(count: int) -> None:
    from backend.testing import TestBackend

    async with TestBackend(run_scheduler=False) as tb:
        url = f"ws://127.0.0.1:{tb.port}/api/sync"
        name = f"victim-{uuid.uuid4().hex[:8]}"
        async with websockets.connect(url, max_size=None) as victim, websockets.connect(url, max_size=None) as big:
            await victim.send(_connect_frame())
            await victim.send(json.dumps({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
                {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": name}]}]}))
            await _recv(victim, 10)
            await big.send(_connect_frame())
            adds = [{"type": "Add", "queryId": i, "udfPath": "counters:get", "args": [{"name": f"big-{i}"}]}
                    for i in range(count)]
            t0 = time.monotonic()
            await big.send(json.dumps({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1,
                                       "modifications": adds}))
            big_done = asyncio.create_task(_recv(big, 120))
            trips: list[float] = []
            request = 0
            while not big_done.done():
                start = time.monotonic()
                await victim.send(json.dumps({"type": "Mutation", "requestId": request, "udfPath": "counters:increment",
                                              "args": [{"name": name}]}))
                while (await _recv(victim, 60))["type"] != "MutationResponse":
                    pass
                await _recv(victim, 60)  # its Transition
                trips.append((time.monotonic() - start) * 1000)
                request += 1
            big_seconds = (await big_done, time.monotonic() - t0)[1]
        print("in order:", " ".join(f"{t:.0f}" for t in trips))
        trips.sort()
        print(f"per pass {os.environ.get('BACKEND_HUB_QUERIES_PER_PASS', 'default')}: {count} adds took "
              f"{big_seconds:.2f} s; victim round trips meanwhile: n={len(trips)} "
              f"median={statistics.median(trips):.1f} ms p95={trips[int(len(trips) * 0.95)]:.1f} ms "
              f"max={trips[-1]:.1f} ms")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _header(length: int) -> bytes:
    return struct.pack("!BBQ", 0x81, 0x80 | 127, length) + b"\0\0\0\0"


async def _big_frame(url: str, size: int) -> None:
    items = (size - 100) // 2
    payload = ('{"type":"Mutation","requestId":0,"udfPath":"counters:increment","args":[{"name":"x","pad":['
               + ",".join(["1"] * items) + "]}]}")
    try:
        async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
            await ws.send(_connect_frame())
            await ws.send(payload)
            await asyncio.wait_for(ws.recv(), 60)
    except Exception as error:  # refused or closed: that is one of the outcomes measured
        print(f"  big frame: {type(error).__name__}: {str(error)[:80]}")


async def _stalled(url: str, size: int) -> Any:
    ws = await websockets.connect(url, max_size=None, ping_interval=None, open_timeout=120)
    await ws.send(_connect_frame())
    ws.transport.write(_header(size) + b"1" * (size // 2))
    return ws


async def memory(wait_after: float, big: int, stalled_count: int) -> None:
    from backend.testing import create_database, drop_database, free_port

    database = await create_database("bench")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "BACKEND_JWT_SECRET": "bench-" + "x" * 40}
    server = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--port", str(port), "--no-scheduler"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        await asyncio.sleep(1.0)
        url = f"ws://127.0.0.1:{port}/api/sync"
        before = _rss_mb(server.pid)
        peak = before
        bigs = asyncio.gather(*(_big_frame(url, 14_000_000) for _ in range(big)))
        await asyncio.sleep(0.5)
        stalled = [await _stalled(url, 14_000_000) for _ in range(stalled_count)]
        deadline = time.monotonic() + wait_after
        while time.monotonic() < deadline:
            peak = max(peak, _rss_mb(server.pid))
            await asyncio.sleep(0.1)
        await bigs
        open_stalled = sum(1 for ws in stalled if ws.protocol.state.name == "OPEN")
        after = _rss_mb(server.pid)
        print(f"RSS before {before:.0f} MB, peak {peak:.0f} MB, after {wait_after:.0f} s {after:.0f} MB; "
              f"stalled sockets still open: {open_stalled}/{stalled_count}")
        for ws in stalled:
            ws.transport.abort()
    finally:
        server.terminate()
        server.wait(timeout=30)
        await drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("slices")
    cmd.add_argument("--count", type=int, default=10_000)
    cmd = commands.add_parser("memory")
    cmd.add_argument("--wait", type=float, default=40.0, help="seconds to sample RSS after the frames start")
    cmd.add_argument("--big", type=int, default=6, help="sockets sending a whole 14 MB frame")
    cmd.add_argument("--stalled", type=int, default=20, help="sockets stalling halfway through a 14 MB frame")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    if args.command == "slices":
        asyncio.run(slices(args.count))
    else:
        asyncio.run(memory(args.wait, args.big, args.stalled))


if __name__ == "__main__":
    main()
