"""The generated ``api.py`` for ``backend.client``: mypy accepts correct calls and names a wrong argument;
at run time the references call the real server like path strings do."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from backend.client import AsyncClient, Client, ClientError
from backend.codegen import write_generated
from backend.registry import load_functions
from backend.server import load_schema
from backend.testing import TestBackend
from tests.support.codegen_package import load_sample

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
from typing import Literal, assert_type

from backend.client import AsyncClient, Client
from real_api.api import BookResult, ClassInstancesId, InstanceView, api
from sample_api.api import ClassInstancesId as SampleInstanceId, Point, Sparse, api as sample


async def run(client: AsyncClient, sync: Client, instance: ClassInstancesId) -> None:
    booked = await client.mutation(api.bookings.book, {"instanceId": instance, "payWith": "credits"})
    assert_type(booked, BookResult)
    again = await client.mutation(api.bookings.book, {"instanceId": instance}, optimistic_update=lambda store, args: None)
    assert_type(again["status"], Literal["confirmed", "waitlisted", "offered", "checked_in"])
    week = await client.query(api.classes.list_instances, {"businessId": await client.mutation(
        api.businesses.create, {"name": "Barre", "timezone": "UTC"}), "from": "2025-01-06T00:00:00Z", "to": "2025-01-13T00:00:00Z"})
    assert_type(week, list[InstanceView])
    async for value in client.subscribe(api.counters.get, {"name": "visits"}):
        assert_type(value, int)
    untyped = await client.query("counters:get", {"name": "visits"})
    assert_type(sync.query(api.counters.get, {"name": "x"}), int)
    sync.subscribe(api.counters.get, {"name": "x"}, lambda v: print(v + 1))
    assert_type(await client.query(sample.things.nothing), None)
    assert_type(await client.query(sample.things.nothing, {}), None)
    assert_type(await client.query(sample.classes.list_all), list[SampleInstanceId])
    assert_type(await client.query(sample.things.sparse, {"elsewhere": "x"}), Sparse)
    assert_type(await client.action(sample.things.ping, {"times": 2}), list[float])
    point = await client.mutation(sample.things.make, {
        "bookingId": sample_booking(), "count": Int64(3), "blob": b"x", "mode": "a", "color": "red",
        "where": {"xPos": 1.5}, "pet": {"type": "dog", "good": True}, "tags": {"a": 1},
        "meta": {"note": "n"}, "when": "2025-01-01T00:00:00Z", "pair": (1, "a"),
    })
    assert_type(point, Point)
    print(untyped, point["label"], (await client.query(sample.things.tree))["children"])


def sample_booking() -> "BookingsId":
    raise NotImplementedError


from backend.values import Int64  # noqa: E402
from sample_api.api import BookingsId  # noqa: E402
"""

BAD = {
    "instanceId": 'await client.mutation(api.bookings.book, {"instanceId": 42})',
    "missing": 'await client.mutation(api.bookings.book, {"payWith": "credits"})',
    "payWith": 'await client.mutation(api.bookings.book, {"instanceId": instance, "payWith": "cash"})',
    "nmae": 'await client.query(api.counters.get, {"name": "a", "nmae": "b"})',
    "kind": "await client.query(api.bookings.book, {})",
}
EXPECTED = {
    "instanceId": 'TypedDict item "instanceId" has type "ClassInstancesId"',
    "missing": 'Missing key "instanceId" for TypedDict "BookingsBookArgs"',
    "payWith": 'TypedDict item "payWith" has type "Literal[\'credits\', \'dropin\', \'membership\'] | None"',
    "nmae": 'Extra key "nmae" for TypedDict "CountersGetArgs"',
    "kind": 'Argument 1 to "query" of "AsyncClient" has incompatible type "MutationRef',
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("typed")
    schema = load_schema()
    write_generated(load_functions(include_testing=True), schema, root / "real_api")  # counters:* are fixtures
    _, registry = load_sample(root / "sample_src")
    write_generated(registry, schema, root / "sample_api")
    return root


def _mypy(root: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    (root / name).write_text(text)
    env = {**os.environ, "MYPYPATH": f"{ROOT}{os.pathsep}{root}"}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(root / ".mypy_cache"), "--no-error-summary", "--hide-error-context", name],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )


def test_mypy_accepts_correct_calls_and_knows_the_results(generated: Path) -> None:
    done = _mypy(generated, "good_calls.py", GOOD)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_names_the_wrong_argument(generated: Path) -> None:
    lines = [
        "from backend.client import AsyncClient",
        "from real_api.api import ClassInstancesId, api",
        "",
        "",
        "async def run(client: AsyncClient, instance: ClassInstancesId) -> None:",
    ]
    first = len(lines) + 1
    lines += [f"    {call}" for call in BAD.values()]
    done = _mypy(generated, "bad_calls.py", "\n".join(lines) + "\n")
    assert done.returncode == 1, done.stdout + done.stderr
    for offset, (name, expected) in enumerate(EXPECTED.items()):
        line = f"bad_calls.py:{first + offset}: error: "
        reported = [row for row in done.stdout.splitlines() if row.startswith(line)]
        assert any(expected in row for row in reported), f"{name}: {reported}\n{done.stdout}"


def _load(path: Path) -> ModuleType:
    name = f"typed_api_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_references_call_the_real_server(generated: Path, tb: TestBackend) -> None:
    api: Any = _load(generated / "real_api" / "api.py").api
    name = f"typed-{uuid.uuid4()}"
    assert repr(api.counters.increment) == "MutationRef('counters:increment')"
    async with AsyncClient(tb.url) as client:
        assert await client.query(api.counters.get, {"name": name}) == 0
        assert await client.mutation(api.counters.increment, {"name": name, "by": 2}) == 2
        async with client.subscribe(api.counters.get, {"name": name}) as values:
            assert await values.first() == 2
        assert await client.action(api.counters.add_later, {"name": name}) == 3
        with pytest.raises(ClientError, match=r"counters:increment is a mutation; call it with client\.mutation"):
            await client.query(api.counters.increment, {"name": name})
        assert await client.query("counters:get", {"name": name}) == 3  # paths keep working

    def sync_calls() -> int:
        with Client(tb.url) as sync:
            value: int = sync.mutation(api.counters.increment, {"name": name})
            return value

    assert await asyncio.to_thread(sync_calls) == 4
