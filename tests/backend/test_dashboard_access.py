"""Who may use the dashboard and the dev sign-in, and what a dashboard write leaves in the audit trail.

Real servers on loopback: one as ``serve`` with an admin key, one as ``serve`` without, one as ``dev``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from backend.dashboard.demo import DEMO_USERS, seed
from backend.errors import Unauthenticated
from backend.testing import TestBackend

KEY = "k3y-" + "z" * 40


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[TestBackend]:
    async with TestBackend(admin_key=KEY, run_scheduler=False) as tb:
        await seed(tb.backend)  # type: ignore[arg-type]
        yield tb


@pytest.fixture(scope="module")
async def closed() -> AsyncIterator[TestBackend]:
    async with TestBackend(run_scheduler=False) as tb:
        yield tb


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[TestBackend]:
    async with TestBackend(dev=True, run_scheduler=False) as tb:
        await seed(tb.backend)  # type: ignore[arg-type]
        yield tb


def _client(tb: TestBackend, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=tb.url, headers=headers, follow_redirects=False, timeout=20)


async def test_serve_without_a_key_keeps_the_dashboard_closed(closed: TestBackend) -> None:
    async with _client(closed) as http:
        meta = await http.get("/_dashboard/api/meta")
        assert meta.status_code == 401
        assert "BACKEND_ADMIN_KEY" in meta.json()["message"]
        page = await http.get("/_dashboard")
        assert page.status_code in (301, 302, 303, 307) and page.headers["location"] == "/_dashboard/login"
        login = await http.post("/_dashboard/login", data={"key": "", "name": "x"})
        assert login.status_code == 401


async def test_the_admin_key_opens_it_and_tokens_never_do(served: TestBackend) -> None:
    async with _client(served) as http:
        assert (await http.get("/_dashboard/api/meta")).status_code == 401
        wrong = await http.get("/_dashboard/api/meta", headers={"x-admin-key": KEY[:-1] + "y"})
        assert wrong.status_code == 401
        token = TestBackend.token("demo-olivia", name="Olivia Park")  # the studio's owner: still not an admin
        bearer = await http.get("/_dashboard/api/meta", headers={"authorization": f"Bearer {token}"})
        assert bearer.status_code == 401
        right = await http.get("/_dashboard/api/meta", headers={"x-admin-key": KEY, "x-admin-name": "alice"})
        assert right.status_code == 200
        assert right.json()["admin"] == "admin:alice" and right.json()["via"] == "key"


async def test_login_form_sets_a_signed_cookie(served: TestBackend) -> None:
    async with _client(served) as http:
        refused = await http.post("/_dashboard/login", data={"key": "nope", "name": "bob"})
        assert refused.status_code == 401 and "not the admin key" in refused.text
        ok = await http.post("/_dashboard/login", data={"key": KEY, "name": "bob"})
        assert ok.status_code in (301, 302, 303, 307)
        cookie = ok.cookies.get("tw_admin")
        assert cookie and KEY not in cookie
        set_cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    async with _client(served) as http:
        http.cookies.set("tw_admin", cookie)
        meta = await http.get("/_dashboard/api/meta")
        assert meta.status_code == 200 and meta.json()["admin"] == "admin:bob"
        assert (await http.get("/_dashboard")).status_code == 200
    name, expiry, signature = cookie.split(".")
    for forged in (f"mallory.{expiry}.{signature}", f"{name}.{int(expiry) + 10}.{signature}", f"{name}.{expiry}.00"):
        async with _client(served) as http:
            http.cookies.set("tw_admin", forged)
            assert (await http.get("/_dashboard/api/meta")).status_code == 401, forged


async def test_a_dashboard_write_is_audited_as_the_admin(served: TestBackend) -> None:
    rows = await served.sql("SELECT _id FROM businesses")
    business = rows[0]["_id"]
    jordan = (await served.sql("SELECT _id FROM members WHERE subject = 'demo-jordan'"))[0]["_id"]
    expires = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    async with _client(served, **{"x-admin-key": KEY, "x-admin-name": "alice"}) as http:
        # As the admin alone the studio's membership rules still apply: the admin is no member.
        alone = await http.post("/_dashboard/api/run", json={
            "path": "credits:grant", "args": {"businessId": business, "memberId": jordan, "credits": 2, "expiresOn": expires}})
        assert alone.status_code == 404
        acting = await http.post("/_dashboard/api/run", json={
            "path": "credits:grant", "args": {"businessId": business, "memberId": jordan, "credits": 2, "expiresOn": expires},
            "identity": {"kind": "member", "subject": "demo-sam"}})
        assert acting.status_code == 200, acting.text
        body = acting.json()
        assert body["ok"] is True and body["actor"] == "admin:alice" and body["ms"] > 0
        lot = body["value"]["lotId"]
        audit = await served.sql("SELECT actor, function_path FROM audit_log WHERE document_id = $1", lot)
        assert [(r["actor"], r["function_path"]) for r in audit] == [("admin:alice", "credits:grant")]
        refused = await http.post("/_dashboard/api/run", json={
            "path": "credits:grant", "args": {"businessId": business, "memberId": jordan, "credits": 0, "expiresOn": expires},
            "identity": {"kind": "member", "subject": "demo-sam"}})
        assert refused.json()["ok"] is False and refused.json()["error"]["data"]["field"] == "credits"
        bad = await http.post("/_dashboard/api/run", json={"path": "credits:grant", "args": {"businessId": business}})
        assert bad.status_code == 400 and "memberId" in bad.json()["message"]
        internal = await http.post("/_dashboard/api/run", json={"path": "classes:extend_horizons", "args": {}})
        assert internal.status_code == 200 and internal.json()["ok"] is True
        # A page of another origin cannot make the admin's browser write (the API allows any CORS origin).
        foreign = await http.post("/_dashboard/api/run", headers={"origin": "https://evil.example"},
                                  json={"path": "classes:extend_horizons", "args": {}})
        assert foreign.status_code == 403
        calls = (await http.get("/_dashboard/api/logs", params={"tenant": business})).json()["calls"]
        assert any(c["path"] == "credits:grant" and c["actor"] == "admin:alice" and c["ok"] for c in calls)


async def test_no_token_can_claim_an_admin_subject(served: TestBackend) -> None:
    assert served.backend is not None
    with pytest.raises(Unauthenticated, match="admin:"):
        served.backend.verify_token(TestBackend.token("admin:alice"))


async def test_data_browser_reads_through_an_index_with_deleted_rows_on_request(served: TestBackend) -> None:
    business = (await served.sql("SELECT _id FROM businesses"))[0]["_id"]
    owner = DEMO_USERS[0].subject
    venue = await served.mutation("venues:create", {"businessId": business, "name": "Old Loft"}, as_user=owner)
    await served.mutation("venues:remove", {"venueId": venue}, as_user=owner)
    async with _client(served, **{"x-admin-key": KEY}) as http:
        def ask(**extra: object) -> dict[str, object]:
            return {"table": "venues", "tenant": business, **extra}

        live = (await http.post("/_dashboard/api/rows", json=ask())).json()["page"]
        assert venue not in [r["_id"] for r in live]
        everything = (await http.post("/_dashboard/api/rows", json=ask(includeDeleted=True))).json()["page"]
        gone = next(r for r in everything if r["_id"] == venue)
        assert gone["deleted"] is True and gone["deletedBy"] == owner and gone["createdBy"] == owner
        by_id = (await http.post("/_dashboard/api/rows", json=ask(index="by_id", eq={"_id": venue},
                                                                   includeDeleted=True))).json()
        assert [r["_id"] for r in by_id["page"]] == [venue]
        unknown = await http.post("/_dashboard/api/rows", json=ask(index="by_id", eq={"nope": "1"}))
        assert unknown.status_code == 400 and "nope" in unknown.json()["message"]
        too_many = await http.post("/_dashboard/api/rows", json=ask(numItems=100_000))
        assert too_many.status_code == 400 and "numItems" in too_many.json()["message"]


async def test_dev_sign_in_only_in_dev_on_loopback(served: TestBackend, dev: TestBackend) -> None:
    async with _client(served) as http:
        assert (await http.get("/_dev/demo")).status_code == 404
        assert (await http.post("/_dev/token", json={"subject": "demo-casey"})).status_code == 404
    async with _client(dev) as http:
        demo = (await http.get("/_dev/demo")).json()
        assert demo["businessId"] and {u["subject"] for u in demo["users"]} == {u.subject for u in DEMO_USERS}
        token = (await http.post("/_dev/token", json={"subject": "demo-casey"})).json()["token"]
        assert dev.backend is not None and dev.backend.verify_token(token).subject == "demo-casey"
        stranger = await http.post("/_dev/token", json={"subject": "root"})
        assert stranger.status_code == 400 and "demo" in stranger.json()["message"]
        cross = await http.post("/_dev/token", json={"subject": "demo-casey"}, headers={"origin": "https://evil.example"})
        assert cross.status_code == 403
        meta = await http.get("/_dashboard/api/meta")
        assert meta.status_code == 200 and meta.json()["via"] == "dev"
        # The API allows any CORS origin, so the dashboard refuses other origins itself, reads included.
        foreign = await http.get("/_dashboard/api/tables", headers={"origin": "https://evil.example"})
        assert foreign.status_code == 403
        cross_site = await http.get("/_dashboard/api/tables", headers={"sec-fetch-site": "cross-site"})
        assert cross_site.status_code == 403
        # A name rebound to 127.0.0.1 is not loopback: no open dashboard and no demo tokens for it.
        rebound = {"host": "evil.example:80"}
        assert (await http.get("/_dashboard/api/meta", headers=rebound)).status_code == 401
        assert (await http.post("/_dev/token", json={"subject": "demo-casey"}, headers=rebound)).status_code == 404
