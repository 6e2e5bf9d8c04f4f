"""``python -m backend run`` and ``token``: mistakes print one ``error:`` line and exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend.auth import AuthConfig, TokenVerifier
from backend.testing import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-errors-" + "q" * 40


def cli(*args: str, database: str = "postgresql://postgres@127.0.0.1:1/nowhere") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database, "BACKEND_JWT_SECRET": SECRET, "PYTHONPATH": str(ROOT),
           "BACKEND_TEST_FUNCTIONS": "1"}  # the examples call the counters:* fixtures
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def one_line_error(done: subprocess.CompletedProcess[str], *, status: int = 1) -> str:
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    url = await create_database("cli")
    yield url
    await drop_database(url)


@pytest.mark.parametrize(("args", "expected"), [
    (("nope:nothing",), "error: FunctionNotFound: Could not find public function for 'nope:nothing'"),
    (("counters:get", "{name: 1}"), "error: args must be a JSON object such as '{\"name\": \"x\"}' (Expecting"),
    (("counters:get", "[1]"), "error: args must be a JSON object such as '{\"name\": \"x\"}', not list"),
    (("counters:get", '{"name": "x"}', "--token", "not-a-jwt"), "error: Unauthenticated: "),
    (("counters:get", '{"name": "x"}'), "error: cannot reach the database (ConnectionRefusedError"),
])
def test_run_mistakes_are_one_line(args: tuple[str, ...], expected: str) -> None:
    assert one_line_error(cli("run", *args)).startswith(expected)


def test_run_reports_the_functions_error_in_one_line(database: str) -> None:
    line = one_line_error(cli("run", "counters:get", '{"name": 5}', database=database))
    assert line == "error: BadArgs: $.args.name: expected `str`, got `int`"
    done = cli("run", "counters:increment", '{"name": "a", "by": 2}', database=database)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"


@pytest.mark.parametrize("ttl", ["abc", "-5", "0", "inf", "nan", "1e20", "5x"])
def test_bad_ttl_is_one_line(ttl: str) -> None:
    line = one_line_error(cli("token", "--sub", "ann", f"--ttl={ttl}"), status=2)
    assert line.startswith("python -m backend token: error: argument --ttl: ") and line.endswith("(see --help)")


def test_ttl_takes_units() -> None:
    done = cli("token", "--sub", "ann", "--ttl", "30m")
    assert done.returncode == 0, done.stderr
    identity = TokenVerifier(AuthConfig(hs256_secret=SECRET)).verify(done.stdout.strip())
    assert identity.expires_at is not None and identity.expires_at - identity.claims["iat"] == 1800


def test_empty_subject_is_one_line() -> None:
    assert one_line_error(cli("token", "--sub", "")) == "error: subject must be non-empty"
