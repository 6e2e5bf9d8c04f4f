"""``serve --workers N``: N server processes on one port, each a full node, kept alive by a supervisor.

Each worker binds its own listening socket with ``SO_REUSEPORT``, so the kernel spreads new connections over
the workers and no process hands sockets to another. The workers share nothing but PostgreSQL: every one runs
its own hub, woken by the commit log's ``NOTIFY`` like separate nodes (see docs/design.md), so a mutation on
one updates subscribers on all. The supervisor starts the embedded PostgreSQL once (when there is no
``DATABASE_URL``) and hands its URL to the workers, gives each a share of the connection budget, forwards
SIGTERM/SIGINT, and restarts a worker that dies, at a bounded rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

from . import knobs

__all__ = ["WORKER_FLAG", "bind_reuse_port", "pool_share", "supervise"]

log = logging.getLogger("backend.workers")

#: The hidden ``serve`` flag that makes a process a worker: bind with SO_REUSEPORT, run one node.
WORKER_FLAG = "--reuse-port"


def pool_share(workers: int) -> int:
    """Each worker's pool: the budget divided by the workers, at least 2 (the pool's own minimum)."""
    return max(2, knobs.POOL_MAX_SIZE // max(1, workers))


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other workers may bind too (the kernel balances them)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(knobs.LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: a worker gets SIGTERM if the supervisor itself is killed, so no orphan keeps the port."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Supervisor:
    def __init__(self, argv: list[str], workers: int, env: dict[str, str]) -> None:
        self.argv = argv
        self.count = workers
        self.env = env
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.restarts: deque[float] = deque()
        self.failed = False

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backend", *self.argv,
            env={**self.env, "BACKEND_WORKER_INDEX": str(slot)},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.procs[slot] = proc
        return proc

    def _may_restart(self) -> bool:
        """At most ``WORKER_MAX_RESTARTS`` restarts in any ``WORKER_RESTART_WINDOW_SECONDS``."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > knobs.WORKER_RESTART_WINDOW_SECONDS:
            self.restarts.popleft()
        if len(self.restarts) >= knobs.WORKER_MAX_RESTARTS:
            return False
        self.restarts.append(now)
        return True

    async def _keep(self, slot: int) -> None:
        """Run the worker in ``slot`` until the supervisor stops; restart it when it dies on its own."""
        proc = await self._spawn(slot)
        while True:
            code = await proc.wait()
            if self.stopping.is_set():
                return
            if not self._may_restart():
                print(f"error: worker {proc.pid} exited ({code}); more than {knobs.WORKER_MAX_RESTARTS} restarts "
                      f"in {knobs.WORKER_RESTART_WINDOW_SECONDS:.0f} s, stopping", file=sys.stderr, flush=True)
                self.failed = True
                self.stopping.set()
                return
            print(f"worker {proc.pid} exited ({code}); restarting", file=sys.stderr, flush=True)
            await asyncio.sleep(knobs.WORKER_RESTART_DELAY_SECONDS)
            if self.stopping.is_set():
                return
            proc = await self._spawn(slot)

    def _signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        keepers = [asyncio.create_task(self._keep(slot), name=f"worker-{slot}") for slot in range(self.count)]
        await self.stopping.wait()
        self._signal_all(signal.SIGTERM)
        waits = [proc.wait() for proc in self.procs.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), knobs.WORKER_STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            self._signal_all(signal.SIGKILL)
            await asyncio.gather(*(proc.wait() for proc in self.procs.values()))
        await asyncio.gather(*keepers, return_exceptions=True)  # each returns once its worker exited
        self._signal_all(signal.SIGTERM)  # one spawned while the signal arrived
        await asyncio.gather(*(proc.wait() for proc in self.procs.values()))
        return 1 if self.failed else 0


def supervise(worker_argv: list[str], workers: int, data_dir: Path, host: str, port: int) -> int:
    """Start the shared database once, run ``workers`` copies of ``worker_argv``, stop everything on a signal."""
    from .auth import AuthConfig
    from .postgres import locate_database

    AuthConfig.from_env(data_dir)  # the dev secret (when used) exists before any worker reads it
    database = locate_database(data_dir)
    env = {**os.environ, "DATABASE_URL": database.url, "BACKEND_POOL_MAX_SIZE": str(pool_share(workers))}
    try:
        print(f"backend listening on http://{host}:{port} ({workers} workers)", flush=True)
        code = asyncio.run(_Supervisor(worker_argv, workers, env).run())
    finally:
        database.stop()
    print("backend stopped", flush=True)
    return code
