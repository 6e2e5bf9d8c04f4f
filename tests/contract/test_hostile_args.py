"""Every public function, called over HTTP with hostile values in each argument, never answers 5xx.

Arguments start from a valid call (generated from the function's args Struct, with ids of a seeded business
the caller owns, so the tenant check passes and a hostile value reaches as far as it can). Then each
top-level argument, and each field of an object-valued argument, is replaced in turn by every value in
``HOSTILE``: huge and odd strings, NULs (PostgreSQL text cannot hold them), nesting past the depth limit,
wrong types, NaN and infinities, integers at and past the float64/int64 edges, ids of other tables, and
dates and instants at the ends of the calendar. The engine must refuse each with a 4xx (or the function
with its own error); a 5xx is a server fault the input should never be able to cause.

Functions are read from the registry, so a new function is covered without touching this file.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from backend import ids, knobs
from backend.registry import FunctionSpec, load_functions
from backend.testing import TestBackend
from backend.values import encode_value
from tests.contract.test_tenant_isolation import Tenant, make_tenant
from tests.support.fuzz_args import generate_args
from tests.support.sync_client import RawClient

# Fixtures whose whole point is to wait or allocate as told (their bounds are the engine's time and size
# limits, tested where those are): hostile sizes here would only measure the machine.
_BY_DESIGN_UNBOUNDED = {"counters:increment_slowly", "counters:get_slowly", "counters:add_later", "counters:padded"}

PUBLIC = sorted(s.path for s in load_functions(include_testing=True) if not s.internal and s.path not in _BY_DESIGN_UNBOUNDED)


def _float(value: float) -> dict[str, str]:
    return {"$float": base64.b64encode(struct.pack("<d", value)).decode("ascii")}


def _int64(value: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(struct.pack("<q", value)).decode("ascii")}


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: dict[str, Any] = {
    "huge string": "x" * 300_000,
    "long multibyte string": "\u00e9\u200b\U0001f600" * 2_000,
    "NUL inside": "a\u0000b",
    "only NUL": "\u0000",
    "lone surrogate escape": "\ud800",
    "empty string": "",
    "nesting past the limit": _nested(knobs.MAX_VALUE_DEPTH + 1),
    "deep nesting": _nested(400),
    "big array": [1.0] * 20_000,
    "object with $ key": {"$set": []},
    "object with odd key": {"a b\u0000": 1.0},
    "fraction": 12.5,
    "negative": -1.0,
    "largest float": 1.7976931348623157e308,
    "past 2**53": 9007199254740993.0,
    "most negative float": -1.7976931348623157e308,
    "1e18": 1e18,
    "NaN": _float(math.nan),
    "Infinity": _float(math.inf),
    "-Infinity": _float(-math.inf),
    "-0": _float(-0.0),
    "int64 max": _int64(2**63 - 1),
    "int64 min": _int64(-(2**63)),
    "bytes": {"$bytes": "AAAA"},
    "true": True,
    "null": None,
    "empty array": [],
    "empty object": {},
    "id of another table": ids.new_id(ids.table_number("counters")),
    "id-shaped garbage": "z" * 32,
    "last date": "9999-12-31",
    "first date": "0001-01-01",
    "last instant": "9999-12-31T23:59:59Z",
    "first instant": "0001-01-01T00:00:00+14:00",
    "last accepted date": "8999-12-31",
    "first accepted date": "1000-01-01",
    "last accepted instant": "8998-12-31T23:59:59-14:00",
    "first accepted instant": "1001-01-01T00:00:00+14:00",
    "huge zone": "A" * 3_000,
    "last minute": "23:59",
}


@dataclass
class Caller:
    tb: TestBackend
    tenant: Tenant
    client: httpx.AsyncClient
    headers: dict[str, str]


@pytest.fixture(scope="module")
async def caller() -> AsyncIterator[Caller]:
    async with TestBackend(run_scheduler=False) as tb:
        tenant = await make_tenant(tb, "h")
        # The seed writes a confirmed booking without counting it on its class: count it, so cancelling it is
        # a real cancellation rather than a broken invariant.
        await tb.sql("UPDATE class_instances i SET booked = (SELECT count(*) FROM bookings b WHERE "
                     "b.instance_id = i._id AND b.status = 'confirmed') WHERE i.business_id = $1", tenant.business)
        async with httpx.AsyncClient(base_url=tb.url, timeout=60) as client:
            yield Caller(tb, tenant, client, {"Authorization": f"Bearer {tb.token(tenant.owner)}"})


def valid_args(spec: FunctionSpec, tenant: Tenant) -> dict[str, Any]:
    args: dict[str, Any] = encode_value(generate_args(spec, lambda _path, table: tenant.id_of(table)))
    return args


def variants(args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, args) with one hostile value each: every top-level argument, every field of an object one."""
    found: list[tuple[str, dict[str, Any]]] = []
    for key, value in args.items():
        for label, hostile in HOSTILE.items():
            found.append((f"$.{key} = {label}", {**args, key: hostile}))
        if isinstance(value, dict) and not any(k.startswith("$") for k in value):
            for inner in value:
                for label, hostile in HOSTILE.items():
                    found.append((f"$.{key}.{inner} = {label}", {**args, key: {**value, inner: hostile}}))
    return found


@pytest.mark.parametrize("path", PUBLIC)
async def test_hostile_arguments_never_cause_a_server_error(caller: Caller, path: str) -> None:
    spec = caller.tb.backend.registry.functions[path]
    args = valid_args(spec, caller.tenant)
    problems: list[str] = []
    for where, hostile in [("$ = an array", [args, args]), ("$ = a string", "x"), *variants(args)]:
        body = json.dumps({"path": path, "args": hostile}).encode()  # ASCII-escaped, so lone surrogates travel
        response = await caller.client.post(f"/api/{spec.kind}", content=body,
                                            headers={**caller.headers, "Content-Type": "application/json"})
        if response.status_code >= 500:
            problems.append(f"{path} with {where}: {response.status_code} {response.text[:200]}")
        else:
            answer = response.json()
            assert isinstance(answer, dict) and ("status" in answer or "code" in answer), answer
    assert not problems, f"{len(problems)} server errors:\n" + "\n".join(problems[:25])


QUERIES = [p for p in PUBLIC if next(s for s in load_functions(include_testing=True) if s.path == p).kind == "query"]


@pytest.mark.parametrize("path", QUERIES)
async def test_hostile_arguments_fail_live_queries_cleanly(caller: Caller, path: str) -> None:
    """Over the socket the same values give each query its own QueryFailed; the socket keeps working."""
    spec = caller.tb.backend.registry.functions[path]
    # A lone surrogate makes the whole frame invalid JSON: the socket is closed with a FatalError, rightly.
    cases = [(where, args) for where, args in variants(valid_args(spec, caller.tenant)) if "surrogate" not in where]
    async with RawClient.open(caller.tb.port, max_size=None) as client:  # pages of export are large, rightly
        await client.authenticate(caller.tb.token(caller.tenant.owner))
        problems: list[str] = []
        for start in range(0, len(cases), 200):
            batch = cases[start:start + 200]
            ids = await client.modify([(path, args) for _, args in batch])
            await client.until(lambda ids=ids: all(q in client.results or q in client.failures for q in ids), 30)
            for (where, _), q in zip(batch, ids, strict=True):
                failure = client.failures.get(q)
                # "[code] message" is the engine refusing; an AppError carries data; a fault is "Server Error".
                if failure is not None and not failure["errorMessage"].startswith("[") and "errorData" not in failure:
                    problems.append(f"{path} with {where}: {failure['errorMessage'][:200]}")
            await client.modify(removes=ids)
        (alive,) = await client.subscribe(("counters:get", {"name": "still-alive"}))
        assert client.results[alive] == 0
    assert not problems, f"{len(problems)} server errors:\n" + "\n".join(problems[:25])
