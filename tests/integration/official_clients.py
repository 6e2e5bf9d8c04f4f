"""Runs an official Convex client in a child process and talks to it in JSON lines.

Both drivers (tests/js/driver.mjs for the npm package, official_python_driver.py for the PyPI package) take
commands on stdin and report events on stdout. ``ClientProcess`` keeps every event, answers ``call`` with the
result of one command, and ``expect`` waits (bounded) for an event matching a predicate, so a test can act on
the server between client steps. A failed wait reports everything the client saw and wrote to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
PY_DRIVER = Path(__file__).resolve().parent / "official_python_driver.py"
WAIT = 15.0  # seconds; every wait in these tests is bounded by this

Event = dict[str, Any]


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "convex").is_dir():
        pytest.skip("tests/js/node_modules is missing (run `npm install` in tests/js)")
    return node


class ClientFailed(AssertionError):
    pass


class ClientProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._tags = itertools.count()
        self.stderr = bytearray()
        self._reader = asyncio.create_task(self._read())
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, *argv: str, cwd: Path) -> ClientProcess:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024,
        )
        client = cls(process)
        await client.expect(lambda e: e["event"] == "ready")
        return client

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.decode(errors="replace").rstrip()}
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self.stderr += chunk

    async def send(self, op: str, **fields: Any) -> str:
        tag = f"t{next(self._tags)}"
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "tag": tag, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        return tag

    async def expect(self, predicate: Callable[[Event], bool], *, after: int = 0, timeout: float = WAIT) -> Event:
        """The first event (from index ``after``) that matches; fails after ``timeout`` seconds."""

        def find() -> Event | None:
            for event in self.events[after:]:
                if predicate(event):
                    return event
                if event["event"] in ("uncaught", "exited"):
                    raise ClientFailed(f"client stopped: {event}\n{self.transcript()}")
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(find), timeout)
            except TimeoutError:
                raise ClientFailed(f"no matching event within {timeout}s\n{self.transcript()}") from None
        found = find()
        assert found is not None
        return found

    async def result(self, tag: str, *, timeout: float = WAIT) -> Event:
        return await self.expect(lambda e: e["event"] == "result" and e.get("tag") == tag, timeout=timeout)

    async def call(self, op: str, **fields: Any) -> Any:
        """Run one command and return its value; a failed command fails the test."""
        event = await self.result(await self.send(op, **fields))
        if not event["ok"]:
            raise ClientFailed(f"{op} {fields} failed: {event}\n{self.transcript()}")
        return event["value"]

    def matching(self, predicate: Callable[[Event], bool], *, after: int = 0) -> list[Event]:
        return [e for e in self.events[after:] if predicate(e)]

    def updates(self, sub: str, *, after: int = 0) -> list[Any]:
        return [e["value"] for e in self.events[after:] if e["event"] == "update" and e["sub"] == sub]

    def frames(self, direction: str, kind: str, *, after: int = 0) -> list[dict[str, Any]]:
        return [e["msg"] for e in self.events[after:]
                if e["event"] == "frame" and e["dir"] == direction and e["msg"]["type"] == kind]

    def transcript(self, last: int = 60) -> str:
        lines = [json.dumps(e)[:600] for e in self.events[-last:]]
        return "\n".join([*lines, "-- stderr --", self.stderr.decode(errors="replace")[-4000:]])

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.send("exit")
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._stderr_reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def js_client(url: str) -> AsyncIterator[ClientProcess]:
    client = await ClientProcess.start(node_or_skip(), "driver.mjs", url, cwd=JS_DIR)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def python_client(url: str) -> AsyncIterator[ClientProcess]:
    client = await ClientProcess.start(sys.executable, str(PY_DRIVER), url, cwd=PY_DRIVER.parent)
    try:
        yield client
    finally:
        await client.close()
