"""``python -m backend dev``: a saved file reaches connected clients; a bad save keeps the last good code.

A real dev server runs on a copy of the application (functions/ and schema.py) in a temporary folder; the
test edits the copy's files on disk and watches a live subscription over a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend.testing import create_database, drop_database, free_port
from tests.support.sync_client import RawClient

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DevServer:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def logged(self, pattern: str, count: int = 1, timeout: float = 20.0) -> str:
        """Wait until ``pattern`` has appeared ``count`` times in the server's output; return the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.process.poll() is not None:
                raise AssertionError(f"dev server exited:\n{text[-3000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{pattern!r} x{count} not logged:\n{self.output()[-3000:]}")

    async def healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get(f"http://127.0.0.1:{self.port}/health", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"dev server not healthy:\n{self.output()[-3000:]}")

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.folder / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))


def copy_app(folder: Path) -> None:
    shutil.copytree(ROOT / "functions", folder / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    # The counter fixture becomes one of this app's own modules (the engine's fixtures stay off here).
    (folder / "functions" / "_fixtures" / "counters.py").rename(folder / "functions" / "counters.py")
    shutil.copy(ROOT / "schema.py", folder / "schema.py")


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[DevServer]:
    copy_app(tmp_path)
    async with spawn(tmp_path) as server:
        await server.logged("watching functions/")
        await server.healthy()
        yield server


@contextlib.asynccontextmanager
async def spawn(tmp_path: Path) -> AsyncIterator[DevServer]:
    database = await create_database("dev")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "BACKEND_JWT_SECRET": "dev-reload-" + "z" * 40,
           "PYTHONPATH": str(ROOT), "BACKEND_LOG_FORMAT": "text", "BACKEND_TEST_FUNCTIONS": "0"}
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "dev", "--port", str(port), "--no-scheduler",
             "--data-dir", str(tmp_path / ".data")],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    server = DevServer(tmp_path, port, process, log)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        await drop_database(database)


async def increment(server: DevServer, name: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        response = await http.post("/api/mutation", json={"path": "counters:increment", "args": {"name": name}})
        assert response.status_code == 200, response.text


async def test_saves_reach_live_clients_and_bad_saves_keep_the_last_good_version(dev: DevServer) -> None:
    async with RawClient.open(dev.port) as client:
        counter, notes = await client.subscribe(("counters:get", {"name": "c"}), ("notes:count", {}))
        assert client.results[counter] == 0
        assert "FunctionNotFound" in client.failures[notes]["errorMessage"]
        await increment(dev, "c")
        await client.until(lambda: client.results.get(counter) == 1)

        # A good save: the same socket gets the new code's result, no reconnect.
        dev.edit("functions/counters.py", 'else int(row["value"])', 'else int(row["value"]) * 100')
        await client.until(lambda: client.results.get(counter) == 100, timeout=10)
        assert (await dev.logged(r"reloaded \(functions/counters.py\)")).count("reloaded") == 1

        # A syntax error: one error block, the last good version keeps serving (and updating).
        dev.edit("functions/counters.py", "@query\nasync def list_all", "@query\nasync def list_all(:\n\n@query\nasync def x")
        text = await dev.logged("reload failed")
        assert re.search(r"reload failed \(functions/counters.py\).*\n  functions/counters.py, line 18\n"
                         r"    async def list_all\(:\n +\^\n  SyntaxError: ", text), text
        await increment(dev, "c")
        await client.until(lambda: client.results.get(counter) == 200)

        # An annotation the validators cannot handle: named at reload, still the last good version.
        dev.edit("functions/counters.py", "@query\nasync def list_all(:\n\n@query\nasync def x",
                 "@query\nasync def takes_callback(ctx: QueryCtx, cb: object) -> None:\n    return None\n\n\n"
                 "@query\nasync def list_all")
        text = await dev.logged("reload failed", 2)
        assert "functions.counters.takes_callback: argument 'cb': type 'object' cannot be validated" in text

        # A destructive schema change is refused the same way.
        dev.edit("functions/counters.py", "@query\nasync def takes_callback(ctx: QueryCtx, cb: object) -> None:\n"
                 "    return None\n\n\n", "")
        await dev.logged(r"reloaded \(functions/counters.py\)", 2)
        dev.edit("schema.py", '    name = Varchar()\n    value = Integer()\n    indexes = [Index("by_name", "name")]',
                 '    name = Varchar()\n    indexes = [Index("by_name", "name")]')
        text = await dev.logged("reload failed", 3)
        assert "SchemaError: table 'counters': columns ['value'] exist in the database but not in the schema" in text
        await increment(dev, "c")
        await client.until(lambda: client.results.get(counter) == 300)

        # The next good save recovers: a new table (an additive change) and a new function in it, and the
        # query that could not resolve before now answers, on the same socket.
        dev.edit("schema.py", '    name = Varchar()\n    indexes = [Index("by_name", "name")]',
                 '    name = Varchar()\n    value = Integer()\n    indexes = [Index("by_name", "name")]\n\n\n'
                 'class Notes(Document, tablename="notes"):\n    title = Varchar()\n')
        dev.edit("schema.py", "Counters, BenchItems,", "Counters, Notes, BenchItems,")
        (dev.folder / "functions" / "notes.py").write_text(
            "from backend import QueryCtx, query\n\n\n@query\nasync def count(ctx: QueryCtx) -> int:\n"
            "    return len(await ctx.db.query('notes').collect()) + 7\n"
        )
        await client.until(lambda: client.results.get(notes) == 7, timeout=10)
        assert client.results[counter] == 300
    assert "Traceback" not in dev.output()  # errors were blocks naming files, not engine tracebacks


async def test_a_server_started_on_bad_code_waits_for_the_fix(tmp_path: Path) -> None:
    copy_app(tmp_path)
    counters = tmp_path / "functions" / "counters.py"
    good = counters.read_text()
    counters.write_text(good.replace("async def list_all(ctx: QueryCtx)", "async def list_all(ctx: QueryCtx, cb: object)"))
    async with spawn(tmp_path) as server:
        text = await server.logged("the backend cannot start")
        assert "functions.counters.list_all: argument 'cb': type 'object' cannot be validated" in text
        counters.write_text(good)
        await server.healthy()
        await increment(server, "started")
