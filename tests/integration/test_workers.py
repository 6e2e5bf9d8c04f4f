"""``python -m backend serve --workers 2``: two worker processes on one port, each a full node.

A real supervisor process with real workers; which worker holds a client's socket is read from the kernel
(``/proc/net/tcp`` and each worker's open file descriptors), so nothing in the server reports on itself
except ``/health``'s ``pid``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.client import AsyncClient
from backend.testing import create_database, drop_database, free_port
from tests.support.sync_client import RawClient

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux /proc")

ROOT = Path(__file__).resolve().parents[2]
SECRET = "workers-secret-" + "w" * 40


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The supervisor's live child processes."""
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return set()
        return {int(p) for p in text.split()}

    def owner_of(self, client_port: int) -> int | None:
        """The worker whose accepted socket talks to ``127.0.0.1:client_port``."""
        inode = _server_side_inode(self.port, client_port)
        if inode is None:
            return None
        for pid in self.workers():
            if inode in _socket_inodes(pid):
                return pid
        return None

    def connections_of(self, pid: int) -> int:
        """Established sockets on the server's port held by worker ``pid``."""
        mine = _socket_inodes(pid)
        return sum(1 for inode in _established(self.port).values() if inode in mine)


def _established(port: int) -> dict[int, str]:
    """Server-side established TCP sockets on ``port``: remote port → socket inode."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                found[int(remote.rsplit(":", 1)[1], 16)] = inode
    return found


def _server_side_inode(port: int, client_port: int) -> str | None:
    return _established(port).get(client_port)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


async def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


async def _health_pids(server: Server, requests: int) -> set[int]:
    """``/health`` over ``requests`` fresh connections: the pids that answered."""
    pids: set[int] = set()
    for _ in range(requests):
        async with httpx.AsyncClient() as http:  # a new connection each time: the kernel picks a worker
            try:
                response = await http.get(server.url + "/health", timeout=5)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                pids.add(response.json()["pid"])
    return pids


async def _wait_serving(server: Server, timeout: float = 60.0) -> set[int]:
    """Until each of the two workers has answered ``/health``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-2000:]}")
        workers = server.workers()
        if len(workers) == 2 and await _health_pids(server, 12) == workers:
            return workers
        await asyncio.sleep(0.2)
    raise TimeoutError(f"both workers did not serve in time: {server.log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    database = await create_database("workers")
    folder = tmp_path_factory.mktemp("workers")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "BACKEND_JWT_SECRET": SECRET, "BACKEND_LOG_LEVEL": "WARNING",
           # counters:* are engine-test functions; the switch keeps them loaded where fixtures are opt-in.
           "BACKEND_TEST_FUNCTIONS": "1", "BACKEND_WORKER_RESTART_DELAY_SECONDS": "0.1"}
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--workers", "2", "--port", str(port), "--no-scheduler",
             "--data-dir", str(folder / "data")],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    running = Server(port, process, log)
    try:
        await _wait_serving(running)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        await drop_database(database)


async def _client_on(server: Server, worker: int, opened: list[Any]) -> RawClient:
    """A sync client whose socket the kernel gave to ``worker`` (new sockets until one lands there)."""
    for _ in range(60):
        context = RawClient.open(server.port)
        client = await context.__aenter__()
        opened.append(context)
        if server.owner_of(client.ws.local_address[1]) == worker:
            return client
    raise AssertionError(f"60 sockets and none reached worker {worker}")


async def test_both_workers_serve_requests_on_one_port(server: Server) -> None:
    workers = server.workers()
    assert len(workers) == 2 and server.process.pid not in workers
    assert await _health_pids(server, 40) == workers


async def test_a_mutation_on_one_worker_updates_a_subscriber_on_the_other(server: Server) -> None:
    one, two = sorted(server.workers())
    name = f"cross-{uuid.uuid4().hex[:8]}"
    opened: list[Any] = []
    try:
        near = await _client_on(server, one, opened)
        far = await _client_on(server, two, opened)
        (q,) = await far.subscribe(("counters:get", {"name": name}))
        assert far.results[q] == 0
        for expected in (1, 2, 3):
            response, _ = await near.mutation("counters:increment", {"name": name})
            assert response["success"] is True
            await far.until(lambda e=expected: far.results[q] == e, timeout=10)
    finally:
        for context in reversed(opened):
            await context.__aexit__(None, None, None)


async def test_a_killed_worker_is_restarted_and_its_clients_reconnect(server: Server) -> None:
    before = server.workers()
    name = f"kill-{uuid.uuid4().hex[:8]}"
    clients: list[AsyncClient] = []
    try:
        # Clients until each worker holds at least one of them.
        while len(clients) < 40 and not all(server.connections_of(pid) for pid in before):
            client = AsyncClient(server.url)
            await client.connect()
            clients.append(client)
            await asyncio.sleep(0.02)
        victim = min(before, key=server.connections_of)
        cut = server.connections_of(victim)
        assert cut >= 1
        subs = [client.subscribe("counters:get", {"name": name}) for client in clients]
        for sub in subs:
            assert await asyncio.wait_for(sub.first(), 10) == 0
        os.kill(victim, signal.SIGKILL)
        after = await _until(lambda: (w := server.workers()) and len(w) == 2 and victim not in w and w, 30,
                             "no replacement worker")
        assert len(after & before) == 1, "the surviving worker was restarted too"
        assert await _wait_serving(server) == after
        # Every client, the ones cut off included, sees a commit made after the restart.
        async with httpx.AsyncClient() as http:
            response = await http.post(server.url + "/api/mutation", json={
                "path": "counters:increment", "args": {"name": name}, "format": "json"}, timeout=10)
            assert response.json()["status"] == "success", response.text
        await _until(lambda: all(sub.value == 1 for sub in subs), 30, "a client did not see the commit")
        assert all(client.connected for client in clients)
    finally:
        for client in clients:
            await client.close()
    assert "restarting" in server.log.read_text()


async def test_sigterm_stops_every_worker(server: Server) -> None:
    workers = server.workers()
    assert len(workers) == 2
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 30)
    assert code == 0, server.log.read_text()[-2000:]
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    text = server.log.read_text()
    assert "backend stopped" in text and "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize(("args", "expected", "status"), [
    (("--workers", "0"), "0 workers: must be 1 to 256", 2),
    (("--workers", "two"), "'two' is not a whole number of worker processes", 2),
    (("--workers", "2", "--port", "0"), "error: --workers needs a fixed --port", 1),
])
def test_bad_worker_counts_are_one_line_errors(args: tuple[str, ...], expected: str, status: int) -> None:
    done = subprocess.run([sys.executable, "-m", "backend", "serve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    assert done.returncode == status, done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_workers_that_keep_dying_stop_the_server() -> None:
    """A crash loop (here: no database) is restarted a bounded number of times, then the server exits 1."""
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
           "BACKEND_WORKER_MAX_RESTARTS": "2", "BACKEND_WORKER_RESTART_DELAY_SECONDS": "0"}
    done = subprocess.run([sys.executable, "-m", "backend", "serve", "--workers", "2", "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("; restarting") == 2, done.stderr
    assert "more than 2 restarts in 60 s, stopping" in done.stderr, done.stderr
