"""An attacker's view of the dashboard, the dev server and the static files: hostile requests get a 4xx,
never a 500 (whose traceback would also fill the server log); pages cannot be sniffed or framed; a key too
short to guard the dashboard keeps it closed; each entry of the dashboard's call log stays small.

Real servers on loopback (``serve`` with an admin key, with a short one) and the real command line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from backend import knobs
from backend.calllog import JsonFormatter, TextFormatter
from backend.dashboard._access import login_cookie
from backend.dashboard.demo import seed
from backend.errors import Unauthenticated
from backend.runner import Outcome
from backend.testing import TestBackend
from tests.support.sync_client import RawClient

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3y-" + "q" * 40


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[TestBackend]:
    async with TestBackend(admin_key=KEY, run_scheduler=False) as tb:
        await seed(tb.backend)  # type: ignore[arg-type]
        yield tb


def _client(tb: TestBackend, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=tb.url, headers=headers, follow_redirects=False, timeout=20)


async def test_a_cookie_of_any_bytes_is_refused_not_a_crash(served: TestBackend) -> None:
    async with _client(served) as http:
        for value in (b"a.1.\xe9\xe9", b"a.\xb2.ff", b"\xff.1.00", b"...", b"a..", b".1.ab"):
            cookie = [(b"cookie", b"tw_admin=" + value)]
            api = await http.get("/_dashboard/api/meta", headers=cookie)  # type: ignore[arg-type]
            assert api.status_code == 401, (value, api.text)
            page = await http.get("/_dashboard", headers=cookie)  # type: ignore[arg-type]
            assert page.status_code in (302, 303, 307) and page.headers["location"] == "/_dashboard/login", value


async def test_a_cookie_from_another_key_or_past_its_time_is_refused(served: TestBackend) -> None:
    """Rotating BACKEND_ADMIN_KEY signs everyone out; an expired cookie cannot be replayed."""
    old_key = login_cookie("r0tated-" + "q" * 40, "bob")
    expired = login_cookie(KEY, "bob", now=time.time() - knobs.DASHBOARD_SESSION_SECONDS - 5)
    current = login_cookie(KEY, "bob")
    async with _client(served) as http:
        for cookie, status in ((old_key, 401), (expired, 401), (current, 200)):
            http.cookies.set("tw_admin", cookie)
            assert (await http.get("/_dashboard/api/meta")).status_code == status, cookie


async def test_no_token_subject_looks_like_an_admin(served: TestBackend) -> None:
    """Audit rows name dashboard writes ``admin:<name>``: a token cannot pass for one by case or spacing."""
    assert served.backend is not None
    for subject in ("Admin:alice", "ADMIN:alice", " admin:alice", "\tadmin:alice"):
        with pytest.raises(Unauthenticated, match="admin:"):
            served.backend.verify_token(TestBackend.token(subject))
    assert served.backend.verify_token(TestBackend.token("administrator")).subject == "administrator"
    async with _client(served, **{"x-admin-key": KEY}) as http:
        posing = await http.post("/_dashboard/api/run", json={
            "path": "counters:whoami", "identity": {"kind": "member", "subject": "Admin:alice"}})
        assert posing.status_code == 400 and "not an admin" in posing.json()["message"]


async def test_unparsable_host_or_origin_is_refused_not_a_crash(served: TestBackend) -> None:
    async with TestBackend(dev=True, run_scheduler=False) as dev:
        for tb, headers in ((dev, {"host": "[::1"}), (dev, {"origin": "http://[::1"}),
                            (served, {"origin": "http://[", "x-admin-key": KEY})):
            async with _client(tb) as http:
                for path in ("/_dashboard/api/meta", "/_dev/demo"):
                    answer = await http.get(path, headers=headers)
                    assert answer.status_code in (401, 403, 404), (headers, path, answer.status_code)


async def test_a_too_deeply_nested_body_is_a_400(served: TestBackend) -> None:
    async with _client(served, **{"x-admin-key": KEY}) as http:
        deep = b'{"table": "venues", "eq": {"name": ' + b"[" * 100_000 + b"}}"
        rows = await http.post("/_dashboard/api/rows", content=deep)
        assert rows.status_code == 400 and "nest" in rows.json()["message"]
        run = await http.post("/_dashboard/api/run", content=b'{"path": "counters:get", "args": {"a": ' + b"[" * 100_000)
        assert run.status_code == 400


async def test_pages_cannot_be_sniffed_or_framed(served: TestBackend) -> None:
    async with _client(served) as http:
        dashboard = {"/_dashboard/login": 200, "/_dashboard/static/dashboard.js": 200,
                     "/_dashboard/static/nope.js": 404, "/_dashboard/api/meta": 401}
        for path, status in dashboard.items():
            answer = await http.get(path)
            assert answer.status_code == status, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["x-frame-options"] == "DENY", path
            policy = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
            assert "unsafe-inline" not in policy, path
        for path in ("/", "/web/app.js", "/web/vendor/convex-1.48.0.browser.js"):
            answer = await http.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path


async def test_static_files_stay_inside_their_folder(served: TestBackend, tmp_path: Path) -> None:
    async with _client(served) as http:
        for path in ("/web/a%00b.js", "/_dashboard/static/a%00.js", "/web/" + "a" * 5000 + ".js",
                     "/_dashboard/static/" + "a" * 5000 + ".js", "/web/..%2fschema.py", "/web/%2e%2e%2fREADME.md",
                     "/web/vendor", "/web/vendor/LICENSE-convex.txt", "/_dashboard/static/..%2f_access.py"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path[:40], answer.status_code)
    # A link inside the folder to a file outside it is not followed out.
    assert served.backend is not None
    web = tmp_path / "web"
    web.mkdir()
    (tmp_path / "secret.js").write_text("secret")
    (web / "app.js").write_text("ok")
    (web / "leak.js").symlink_to(tmp_path / "secret.js")
    served.backend.config.web_dir = web
    try:
        async with _client(served) as http:
            assert (await http.get("/web/app.js")).text == "ok"
            assert (await http.get("/web/leak.js")).status_code == 404
    finally:
        served.backend.config.web_dir = Path("web")


async def test_a_short_admin_key_keeps_the_dashboard_closed() -> None:
    short = "a" * (knobs.DASHBOARD_MIN_ADMIN_KEY_CHARS - 1)
    async with TestBackend(admin_key=short, run_scheduler=False, serve=True) as tb, _client(tb) as http:
        meta = await http.get("/_dashboard/api/meta", headers={"x-admin-key": short})
        assert meta.status_code == 401 and "at least" in meta.json()["message"]
        login = await http.post("/_dashboard/login", data={"key": short, "name": "eve"})
        assert login.status_code == 401 and "tw_admin" not in login.cookies
        assert "at least" in (await http.get("/_dashboard/login")).text


async def test_each_call_log_entry_is_bounded(served: TestBackend) -> None:
    assert served.backend is not None
    business = (await served.sql("SELECT _id FROM businesses"))[0]["_id"]
    async with _client(served, **{"x-admin-key": KEY}) as http:
        # A failing function's error text repeats what the caller sent (here 5,000 keys of 1,000 characters).
        huge = {"businessId": business, "settings": {f"{i:05d}" + "x" * 995: 1 for i in range(5_000)}}
        ran = await http.post("/_dashboard/api/run", json={"path": "testing_fixtures:set_settings", "args": huge})
        assert ran.status_code == 200 and ran.json()["ok"] is False, ran.text[:300]
        calls = (await http.get("/_dashboard/api/logs")).json()["calls"]
    failed = next(c for c in reversed(calls) if c["path"] == "testing_fixtures:set_settings")
    assert failed["error"].startswith("ValueError: not settings")
    assert len(failed["error"]) <= knobs.CALL_LOG_MAX_VALUE_CHARS
    log = served.backend.call_log  # type: ignore[attr-defined]
    spec = served.backend.registry.resolve("counters:get")
    log.record("query", spec, {"name": "n"}, None, Outcome(value=0, log_lines=["[LOG] '" + "y" * 4096 + "'"] * 50), 0.0)
    entry = log.since(log.last_seq - 1)[-1].to_json()
    assert len(entry["logLines"]) == 20 and all(len(line) <= knobs.CALL_LOG_MAX_VALUE_CHARS for line in entry["logLines"])


async def test_a_refused_call_logs_a_bounded_line(served: TestBackend, caplog: pytest.LogCaptureFixture) -> None:
    """With every call logged (dev, or BACKEND_LOG_CALLS=all) a caller's 1 MB function path stays out of the log."""
    caplog.set_level(logging.INFO, logger="backend.calls")
    async with _client(served) as http:
        refused = await http.post("/api/query", json={"path": "a:" + "x" * 1_000_000, "args": {}})
        assert refused.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "backend.calls"]
    assert lines and all(len(line) < 2 * knobs.CALL_LOG_MAX_VALUE_CHARS for line in lines), [len(x) for x in lines]


async def test_job_and_subscription_arguments_are_cut_in_the_views(served: TestBackend) -> None:
    """A caller's megabyte of arguments, in a job it scheduled or a query it subscribed to, is not sent to
    the dashboard on every poll."""
    big = "z" * 1_000_000
    await served.mutation("testing_jobs:schedule", {"key": big, "delaySeconds": 3600}, as_user="mallory")
    async with RawClient.open(served.port) as socket, _client(served, **{"x-admin-key": KEY}) as http:
        await socket.subscribe(("counters:get", {"name": big}))
        jobs = (await http.get("/_dashboard/api/jobs")).json()["jobs"]
        sessions = (await http.get("/_dashboard/api/sessions")).json()["sessions"]
    job = next(j for j in jobs if j["path"] == "testing_jobs:record")
    assert job["args"].startswith('{"key": "zzz') and len(job["args"]) <= 2_000
    queries = [q for s in sessions for q in s["queries"] if q["path"] == "counters:get"]
    assert queries and all(len(str(q["args"])) <= 2_001 for q in queries)


def test_other_log_records_are_cut_in_text_format_too() -> None:
    """A record of another logger (say an unexpected error whose message repeats a request) stays bounded,
    as the JSON format already keeps it."""
    record = logging.LogRecord("backend", logging.ERROR, __file__, 1, "HTTP request failed: %s", ("x" * 1_000_000,),
                               None)
    assert len(TextFormatter().format(record)) < knobs.CALL_LOG_MAX_TRACEBACK_CHARS + 200
    assert len(JsonFormatter().format(record)) < knobs.CALL_LOG_MAX_TRACEBACK_CHARS + 200


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BACKEND_ADMIN_KEY"}
    environ.update(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120, check=False)


def test_dev_refuses_a_network_address_without_opt_in() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        refused = _cli("dev", "--host", host, "--port", "1", "--no-seed")
        assert refused.returncode == 1 and "--allow-remote" in refused.stderr, refused.stderr
    # The explicit opt-in gets past the check: dev starts, and waits here on the missing database.
    environ = {k: v for k, v in os.environ.items() if k != "BACKEND_ADMIN_KEY"}
    environ.update(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", PYTHONPATH=str(ROOT))
    dev = subprocess.Popen([sys.executable, "-m", "backend", "dev", "--host", "0.0.0.0", "--allow-remote",
                            "--port", "1", "--no-seed"], cwd=ROOT, env=environ, stderr=subprocess.PIPE, text=True)
    try:
        assert dev.stderr is not None
        first = dev.stderr.readline()
        assert "cannot start" in first and "--allow-remote" not in first, first
    finally:
        dev.kill()
        dev.wait()


def test_serve_refuses_a_short_admin_key() -> None:
    for weak in ("hunter2", " " * 40, "hunter2" + " " * 20):
        refused = _cli("serve", "--port", "1", BACKEND_ADMIN_KEY=weak)
        assert refused.returncode == 1 and "BACKEND_ADMIN_KEY must be at least" in refused.stderr, refused.stderr
    long_enough = _cli("serve", "--port", "1", BACKEND_ADMIN_KEY="h" * knobs.DASHBOARD_MIN_ADMIN_KEY_CHARS)
    assert "BACKEND_ADMIN_KEY" not in long_enough.stderr and "database" in long_enough.stderr, long_enough.stderr
