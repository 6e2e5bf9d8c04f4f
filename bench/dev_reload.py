"""Save → clients updated: how long a saved edit to the booking app takes to reach live subscribers.

A real ``python -m backend dev`` server runs on a copy of the application (``functions/`` and ``schema.py``)
in a temporary folder, on a fresh database. ``--clients`` sockets (one per ``AsyncClient``) subscribe to
``businesses:get``; each round rewrites ``functions/businesses.py`` so the query returns a new ``rev`` and
measures, from just before the file is written, until the first and the last client hold the new value.
The figure includes the watcher's poll interval and debounce (``BACKEND_DEV_POLL_SECONDS``,
``BACKEND_DEV_DEBOUNCE_SECONDS``), re-importing the whole booking app, the schema check and the re-run.

    python -m bench.dev_reload [--rounds 10] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from backend.auth import mint_dev_token
from backend.client import AsyncClient
from bench.harness import JWT_SECRET, REPO, child_env, free_port, fresh_database, percentile

ORIGINAL = 'return {**business, "settings": effective(business.get("settings"))}'


def _edited(rev: int) -> str:
    return f'return {{**business, "settings": effective(business.get("settings")), "rev": {rev}}}'


async def _healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError("dev server exited:\n" + log.read_text()[-2000:])
            try:
                if (await http.get(url + "/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("dev server did not start")


async def measure(rounds: int, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dev-reload-") as tmp:
        folder = Path(tmp)
        shutil.copytree(REPO / "functions", folder / "functions", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "schema.py", folder / "schema.py")
        source = folder / "functions" / "businesses.py"
        assert ORIGINAL in source.read_text(), "businesses:get changed; update bench/dev_reload.py"
        async with fresh_database() as database:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = folder / "dev.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, "-m", "backend", "dev", "--port", str(port), "--no-scheduler",
                     "--data-dir", str(folder / ".data")],
                    cwd=folder, stdout=sink, stderr=subprocess.STDOUT,
                    env=child_env(DATABASE_URL=database, BACKEND_JWT_SECRET=JWT_SECRET, BACKEND_LOG_CALLS="failures"),
                )
            try:
                await _healthy(url, process, log)
                return await _rounds(url, source, rounds, clients, log)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


async def _rounds(url: str, source: Path, rounds: int, clients: int, log: Path) -> dict[str, Any]:
    token = mint_dev_token(JWT_SECRET, "owner", issuer="tidewater-dev")
    connections = [AsyncClient(url, token=token) for _ in range(clients)]
    for client in connections:
        await client.connect()
    business = await connections[0].mutation("businesses:create", {"name": "Studio", "timezone": "UTC"})
    seen: list[dict[int, float]] = [{} for _ in connections]
    for index, client in enumerate(connections):
        def record(value: Any, index: int = index) -> None:
            rev = value.get("rev") if isinstance(value, dict) else None
            if isinstance(rev, int) and rev not in seen[index]:
                seen[index][rev] = time.perf_counter()
        client.subscribe("businesses:get", {"businessId": business}).on_update(record)
    first: list[float] = []
    last: list[float] = []
    text = source.read_text()
    for rev in range(1, rounds + 1):
        await asyncio.sleep(0.3)  # let the previous round settle; saves are seconds apart in real life
        started = time.perf_counter()
        source.write_text(text.replace(ORIGINAL, _edited(rev)))
        deadline = started + 20
        while not all(rev in s for s in seen) and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        if not all(rev in s for s in seen):
            raise TimeoutError(f"round {rev}: clients did not see the new code:\n" + log.read_text()[-2000:])
        times = [s[rev] - started for s in seen]
        first.append(min(times) * 1000)
        last.append(max(times) * 1000)
    for client in connections:
        await client.close()
    reloads = [float(m) for m in re.findall(r"reloaded \(functions/businesses.py\) in (\d+) ms", log.read_text())]
    return {"rounds": rounds, "clients": clients, "first": first, "last": last, "reload": reloads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dev_reload")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.rounds, args.clients))
    print(f"save → clients updated, booking app, {result['clients']} subscribed clients, {result['rounds']} saves")
    for name, key in (("first client", "first"), ("last client", "last"), ("server reload (import, schema, "
                                                                           "swap)", "reload")):
        values = result[key]
        print(f"  {name:<38} p50 {percentile(values, 50):7.0f} ms   max {max(values, default=float('nan')):7.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
