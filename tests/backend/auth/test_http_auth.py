"""Bearer tokens on the HTTP API: every refusal is a 401 naming the broken rule, and changes nothing.

The server here checks issuer and audience, so wrong-issuer and wrong-audience tokens are real refusals,
not claims nobody looks at.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from backend.auth import AuthConfig, mint_dev_token
from backend.testing import TestBackend

SECRET = "http-auth-secret-" + "k" * 40
ISSUER = "https://auth.tidewater.test"
AUDIENCE = "tidewater-api"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TestBackend]:
    auth = AuthConfig(hs256_secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    async with TestBackend(auth=auth, run_scheduler=False) as harness:
        yield harness


def token(subject: str = "ann", *, secret: str = SECRET, issuer: str = ISSUER, audience: str | None = AUDIENCE,
          ttl: float = 600, now: float | None = None, **claims: Any) -> str:
    return mint_dev_token(secret, subject, issuer=issuer, audience=audience, ttl_seconds=ttl, now=now,
                          extra=claims or None, name=f"{subject} name", email=f"{subject}@example.test")


def raw(payload: dict[str, Any], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def good_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def call(server: TestBackend, kind: str, path: str, args: dict[str, Any],
               headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post(f"/api/{kind}", json={"path": path, "args": args, "format": "json"},
                                 headers=headers or {})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def businesses_named(server: TestBackend, name: str) -> int:
    rows = await server.sql("SELECT count(*) AS n FROM businesses WHERE name = $1", name)
    return int(rows[0]["n"])


REFUSALS: list[tuple[str, Any, str]] = [
    ("malformed", lambda: "not-a-jwt", "MalformedToken"),
    ("three segments of garbage", lambda: "abc.def.ghi", "MalformedToken"),
    ("expired", lambda: token(now=time.time() - 7200, ttl=600), "TokenExpired"),
    ("not yet valid", lambda: raw(good_claims(nbf=int(time.time()) + 3600)), "TokenNotYetValid"),
    ("wrongly signed", lambda: token(secret="another-secret-" + "z" * 40), "BadSignature"),
    ("wrong audience", lambda: token(audience="someone-else"), "WrongAudience"),
    ("no audience", lambda: token(audience=None), "WrongAudience"),
    ("wrong issuer", lambda: token(issuer="https://evil.test"), "WrongIssuer"),
    ("unsigned (alg none)", lambda: jwt.encode(good_claims(), None, algorithm="none"), "UnsupportedAlgorithm"),
    ("no subject", lambda: raw(good_claims(sub=None)), "MissingSubject"),
]


@pytest.mark.parametrize(("case", "make", "rule"), REFUSALS, ids=[c[0] for c in REFUSALS])
@pytest.mark.parametrize("kind", ["query", "mutation", "action"])
async def test_refused_token_is_401_naming_the_rule(
    server: TestBackend, kind: str, case: str, make: Any, rule: str
) -> None:
    name = f"never-{uuid.uuid4()}"
    path, args = {
        "query": ("counters:get", {"name": name}),
        "mutation": ("businesses:create", {"name": name, "timezone": "UTC"}),
        # The token is checked before the path is resolved, so even a wrong kind is refused as 401 first.
        "action": ("counters:increment", {"name": name}),
    }[kind]
    response = await call(server, kind, path, args, bearer(make()))
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "Unauthenticated"
    assert body["message"].startswith(f"{rule}: "), body
    assert await businesses_named(server, name) == 0
    assert (await server.sql("SELECT count(*) AS n FROM counters WHERE name = $1", name))[0]["n"] == 0


@pytest.mark.parametrize("header", ["Bearer", "bearer", "Basic YW5uOnB3", "Convex admin-key", "token-without-scheme"])
async def test_bad_authorization_header_is_401(server: TestBackend, header: str) -> None:
    name = f"never-{uuid.uuid4()}"
    response = await call(server, "mutation", "businesses:create", {"name": name, "timezone": "UTC"},
                          {"Authorization": header})
    assert response.status_code == 401
    assert response.json() == {"code": "Unauthenticated", "message": "Authorization header must be 'Bearer <token>'"}
    assert await businesses_named(server, name) == 0


async def test_valid_token_reaches_the_function_with_its_identity(server: TestBackend) -> None:
    name = f"yoga-{uuid.uuid4()}"
    subject = f"user-{uuid.uuid4()}"
    response = await call(server, "mutation", "businesses:create", {"name": name, "timezone": "UTC"},
                          bearer(token(subject)))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    business_id = response.json()["value"]
    rows = await server.sql(
        "SELECT subject, role, status, name, email, created_by FROM members WHERE business_id = $1", business_id)
    assert [dict(r) for r in rows] == [{"subject": subject, "role": "owner", "status": "active",
                                        "name": f"{subject} name", "email": f"{subject}@example.test",
                                        "created_by": subject}]


async def test_missing_token_on_a_members_only_function_is_401(server: TestBackend) -> None:
    created = await call(server, "mutation", "businesses:create", {"name": "Pilates", "timezone": "UTC"},
                         bearer(token("owner-1")))
    business_id = created.json()["value"]
    response = await call(server, "query", "businesses:get", {"businessId": business_id})
    assert response.status_code == 401
    assert response.json()["code"] == "Unauthenticated"
    assert "sign in" in response.json()["message"]
    member = await call(server, "query", "businesses:get", {"businessId": business_id}, bearer(token("owner-1")))
    assert member.status_code == 200 and member.json()["value"]["name"] == "Pilates"


async def test_anonymous_call_is_anonymous_not_refused(server: TestBackend) -> None:
    """No header means no identity (as in Convex): public tenant-free functions still work."""
    response = await call(server, "query", "counters:get", {"name": f"anon-{uuid.uuid4()}"})
    assert response.status_code == 200
    assert response.json()["value"] == 0
    refused = await call(server, "mutation", "businesses:create", {"name": "x", "timezone": "UTC"})
    assert refused.status_code == 200
    assert refused.json()["errorData"] == {"code": "unauthenticated"}


async def test_token_expiring_between_calls_is_refused_on_the_next_call(server: TestBackend) -> None:
    """Expiry is checked on every request against the server's clock, with the configured leeway."""
    leeway = server.auth.leeway_seconds
    fresh = token(now=time.time() - 600 + leeway + 30, ttl=600)  # 30 s of life left
    stale = token(now=time.time() - 600 - leeway - 1, ttl=600)  # expired just beyond the leeway
    assert (await call(server, "query", "counters:get", {"name": "x"}, bearer(fresh))).status_code == 200
    response = await call(server, "query", "counters:get", {"name": "x"}, bearer(stale))
    assert response.status_code == 401
    assert response.json()["message"].startswith("TokenExpired: token expired at ")
