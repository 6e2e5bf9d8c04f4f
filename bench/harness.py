"""Processes the benchmarks drive: the server under test, load-generator workers, a fresh database.

Every process here is bounded: workers carry a hard deadline (``SIGALRM``) and the server is stopped with
SIGTERM, then SIGKILL. Load generators run as separate processes on loopback, so the server under test never
shares an interpreter with the code that measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-" + "b" * 40


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one: 10,000 sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# -- the database -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new database on DATABASE_URL's server (or the embedded one), dropped afterwards."""
    from backend.testing import create_database, drop_database

    url = await create_database(prefix="bench")
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            await drop_database(url)


async def prepare(url: str, seeds: list[tuple[str, int, int, int]]) -> None:
    """Apply the schema and seed ``bench_items`` through the engine itself (ids, keys, commit log).

    Each seed is ``(prefix, buckets, first n, rows per bucket)``.
    """
    from backend.testing import TestBackend

    async with TestBackend(database_url=url, serve=False, run_scheduler=False) as tb:
        for prefix, count, n, rows in seeds:
            step = max(1, 200 // rows)  # small mutations: each must finish within the mutation time limit
            for start in range(0, count, step):
                chunk = {"prefix": prefix, "count": min(step, count - start), "n": n, "start": start, "rows": rows}
                outcome = await tb.runner.mutation("bench:seed", chunk, None, allow_internal=True)
                if outcome.error is not None:
                    raise RuntimeError(f"seeding failed: {outcome.error}")


async def pg_rollbacks(url: str) -> int:
    """Transactions rolled back in this database so far (serialization retries show up here)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await conn.fetchval(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return value
    finally:
        await conn.close()


async def pg_conditions(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
        via = "a Unix socket" if "host=/" in url or "@/" in url else "TCP loopback"
        return f"PostgreSQL {version.split()[0]} over {via}, synchronous_commit={sync}"
    finally:
        await conn.close()


# -- the server under test --------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """``python -m backend serve --no-scheduler --workers N`` on a fresh port, as a child process."""

    database_url: str
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready_at: float = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/1.0.0/sync"

    async def start(self, timeout: float = 60.0) -> None:
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backend", "serve", "--port", str(self.port), "--no-scheduler",
            "--workers", str(self.workers),
            cwd=REPO, env=child_env(
                DATABASE_URL=self.database_url, BACKEND_JWT_SECRET=JWT_SECRET,
                BACKEND_TEST_FUNCTIONS="1",  # the bench:* fixtures load only in test and benchmark servers
                # Every load generator here connects from 127.0.0.1 without a token, so the per-caller share
                # of the pool (which keys anonymous clients by address) would count them all as one client.
                BACKEND_POOL_MAX_PER_CALLER=os.environ.get("BACKEND_POOL_MAX_SIZE", "20"),
            ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=raise_nofile,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before listening")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            if self.workers > 1 and len(await self._answering(4 * self.workers)) < self.workers:
                await asyncio.sleep(0.1)  # the port is open once one worker listens; wait for all of them
                continue
            self.ready_at = time.monotonic()
            asyncio.get_running_loop().create_task(self._drain())
            return
        raise RuntimeError("server did not listen in time")

    async def _answering(self, requests: int) -> set[int]:
        """Pids that answered ``GET /health`` over ``requests`` fresh connections (the kernel picks a worker)."""
        pids: set[int] = set()
        for _ in range(requests):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                reply = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                pids.add(int(json.loads(reply.split(b"\r\n\r\n", 1)[1])["pid"]))
            except (OSError, TimeoutError, ValueError, KeyError, IndexError):
                continue
        return pids

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while await self.proc.stdout.readline():
                pass

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# -- load-generator workers -------------------------------------------------------------------------------


class Worker:
    """``python -m bench.worker ROLE CONFIG``: JSON events on stdout, commands on stdin, a hard deadline."""

    def __init__(self, role: str, config: dict[str, Any], deadline: float = 300.0) -> None:
        self.role = role
        self.config = {**config, "deadline": deadline}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.worker", self.role, json.dumps(self.config),
            cwd=REPO, env=child_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=256 * 1024 * 1024, preexec_fn=raise_nofile,
        )
        return self

    async def event(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the worker's next event called ``name`` (other events are skipped)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.role}: no {name!r} within {timeout:.0f}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(f"worker {self.role} exited (code {await self.proc.wait()}) before {name!r}")
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == "error":
                raise RuntimeError(f"worker {self.role} failed: {message.get('error')}")
            if message.get("event") == name:
                return message

    def send(self, command: str, **fields: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"command": command, **fields}) + "\n").encode())

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            self.send("exit")
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def workers(role: str, configs: list[dict[str, Any]], deadline: float = 300.0) -> AsyncIterator[list[Worker]]:
    started = [await Worker(role, config, deadline).start() for config in configs]
    try:
        yield started
    finally:
        await asyncio.gather(*(w.close() for w in started))


async def all_events(group: list[Worker], name: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(w.event(name, timeout) for w in group)))


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
