"""The official npm client's ``setAuth`` against the real server (tests/js/auth.mjs does the client side).

Each scenario runs one Node process; the script reports what the client saw (onChange calls, token fetches)
and every frame the server sent, and the assertions here check both the client's view and the protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backend.auth import AuthConfig
from backend.testing import TEST_SECRET, TestBackend

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TestBackend]:
    async with TestBackend(auth=AuthConfig(hs256_secret=TEST_SECRET, leeway_seconds=0), run_scheduler=False) as tb:
        yield tb


async def run_scenario(server: TestBackend, scenario: str, **config: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the official-client tests (pytest -m 'not node' skips them)"
    assert (JS_DIR / "node_modules" / "convex").is_dir(), "run `npm ci` in tests/js first"
    env = {**os.environ, "AUTH_TEST_CONFIG": json.dumps(
        {"url": server.url, "secret": TEST_SECRET, "scenario": scenario, **config})}
    process = await asyncio.create_subprocess_exec(
        node, "auth.mjs", cwd=JS_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = stdout.decode().strip().splitlines()
    assert lines, f"no report from auth.mjs (exit {process.returncode}): {stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert process.returncode == 0 and report.get("ok"), json.dumps(report, indent=1)[:4000]
    return report


async def test_set_auth_is_confirmed_by_an_identity_bump(server: TestBackend) -> None:
    owner = f"owner-{uuid.uuid4()}"
    name = f"Studio {uuid.uuid4()}"
    business = await server.mutation("businesses:create", {"name": name, "timezone": "UTC"}, as_user=owner)
    report = await run_scenario(server, "confirm", businessId=business, owner=owner, businessName=name)
    # 1.48.0 calls onChange(true) on each confirmation (its fresh-token path forgets hadAuth); never false.
    assert report["changes"] == [True, True]
    # Cached token, then the forced refresh the client makes right after the confirmation.
    assert report["fetches"] == [False, True]
    # Both tokens confirmed on the first socket: identity 0 -> 1, then 1 -> 2.
    assert report["bumps"] == [[1, 0, 1], [1, 1, 2]]
    assert name in report["names"]


async def test_bad_tokens_end_in_the_give_up_path(server: TestBackend) -> None:
    counter = f"anon-{uuid.uuid4()}"
    report = await run_scenario(server, "giveUp", counter=counter)
    assert report["changes"] == [False]
    # tok1 (cached) -> error -> tok2 -> error -> tok3 -> error -> tok4 -> error -> give up.
    assert report["fetches"] == [False, True, True, True]
    errors = report["authErrors"]
    assert len(errors) == 4
    assert all(e["authUpdateAttempted"] is True and e["baseVersion"] == 0 for e in errors)
    assert all(e["error"].startswith("BadSignature: ") for e in errors)
    assert len({e["socket"] for e in errors}) == 4  # the server closes after each AuthError
    assert len(report["gaveUp"]) == 1 and "BadSignature" in report["gaveUp"][0]
    assert report["counter"][-1] == 0


async def test_token_expiring_mid_session_gets_auth_error_and_the_mutation_runs_once(server: TestBackend) -> None:
    owner = f"owner-{uuid.uuid4()}"
    name = f"Late {uuid.uuid4()}"
    report = await run_scenario(server, "expired", owner=owner, businessName=name)
    expired = [e for e in report["authErrors"] if not e["authUpdateAttempted"]]
    assert len(expired) == 1, report["authErrors"]
    assert expired[0]["baseVersion"] == 1
    assert expired[0]["error"].startswith("TokenExpired: ")
    assert all(not e["authUpdateAttempted"] for e in report["authErrors"])
    assert report["changes"] == [True, True]  # confirmed, then the fresh token confirmed: never false
    assert report["fetches"] == [False, True, True]
    # The fresh token is confirmed on the new socket, and the mutation refused on the old one ran there once.
    assert [b for b in report["bumps"] if b[0] > 1] == [[2, 0, 1]]
    rows = await server.sql(
        "SELECT b._id, m.subject FROM businesses b JOIN members m ON m.business_id = b._id WHERE b.name = $1", name)
    assert [(r["_id"], r["subject"]) for r in rows] == [(report["result"], owner)]
