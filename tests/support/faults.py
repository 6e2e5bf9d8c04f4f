"""Real parts a fault test may break: its own PostgreSQL, backend nodes as processes, and a nemesis.

``OwnPostgres`` is a private PostgreSQL cluster (pgserver's bundled binaries, initialised by pgserver so it
works as root too) listening on a fixed loopback port, so it can be stopped and started again under the
same URL. ``NodeProcess`` is ``python -m backend serve`` on a fixed port that can be SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from backend.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


class OwnPostgres:
    """A PostgreSQL server only this test uses, restartable on the same port."""

    def __init__(self) -> None:
        import pgserver

        # Not under pytest's tmp_path: a later pytest session on this machine makes /tmp/pytest-of-<user>
        # private again (0700), and the server runs as another user when we are root.
        self.folder = Path(tempfile.mkdtemp(prefix="tidewater-faults-"))
        self.folder.chmod(0o755)
        self.pgdata = self.folder / "pgdata"
        self.pgdata.mkdir()
        self.port = free_port()
        # pgserver runs initdb (as an unprivileged user when we are root) and starts a socket-only server
        self._server = pgserver.get_server(str(self.pgdata), cleanup_mode=None)  # type: ignore[attr-defined,unused-ignore]
        self._user: str | None = self._server.system_user
        self._bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self._ctl("stop", "-m", "fast")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would inherit the pipe and hold it open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(int(timeout)), *args],
                user=self._user, timeout=timeout + 10, stdout=out, stderr=out, text=True)
            if done.returncode != 0:
                out.seek(0)
                raise RuntimeError(f"pg_ctl {' '.join(args)} failed ({done.returncode}): {out.read()[-2000:]}")

    def start(self) -> None:
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=off -c max_connections=200 "
                   "-c log_min_messages=fatal")
        self._ctl("-o", options, "-l", str(self.pgdata / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class NodeProcess:
    """One backend node; ``kill`` is SIGKILL (no shutdown code runs), ``start`` brings it back on its port."""

    database: str
    folder: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"node-{self.port}.log"

    def start(self) -> None:
        env = {**os.environ, **self.env, "DATABASE_URL": self.database}
        self.starts += 1
        with self.log.open("ab") as sink:  # a file, not a pipe: a chatty node must never block on a full pipe
            sink.write(f"--- start {self.starts}\n".encode())
            sink.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--workers", "1", "--port", str(self.port), "--no-scheduler"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"node {self.port} exited: {self.log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/health", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"node on port {self.port} did not become healthy")

    def errors(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def terminate_backends(url: str, database: str, fraction: float, pick: float) -> int:
    """``pg_terminate_backend`` on a share of the database's client backends; returns how many went."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' ORDER BY pid", database)]
        chosen = pids[: max(1, int(len(pids) * fraction))] if pids else []
        if chosen and pick:  # rotate by a seeded amount so different backends go each time
            shift = int(pick * len(pids)) % len(pids)
            chosen = (pids[shift:] + pids[:shift])[: len(chosen)]
        for pid in chosen:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        return len(chosen)
    finally:
        await conn.close()
