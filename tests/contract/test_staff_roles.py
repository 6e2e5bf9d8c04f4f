"""Every public function restricted to roles refuses other members with 403 and changes nothing.

Functions are read from the registry: any function declaring ``roles=`` without ``customer`` is called over
HTTP by a customer of the business, with arguments generated from its signature and ids of that business's
own rows (seeded in every tenant table), so the refusal is about the role and nothing else.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from backend.registry import load_functions
from backend.testing import TestBackend
from backend.values import decode_value, encode_value
from tests.support.fuzz_args import generate_args

STAFF_ONLY = sorted(
    s.path for s in load_functions(include_testing=True) if not s.internal and s.roles is not None and "customer" not in s.roles
)


@dataclass
class Shop:
    tb: TestBackend
    business: str
    customer: str
    rows: dict[str, list[str]]


@pytest.fixture(scope="module")
async def shop() -> AsyncIterator[Shop]:
    async with TestBackend(run_scheduler=False) as tb:
        tag = uuid.uuid4().hex[:8]
        business = await tb.mutation("businesses:create", {"name": f"Shop {tag}", "timezone": "UTC"},
                                     as_user=f"owner-{tag}")
        seeded = await tb.runner.mutation("testing_tenancy:seed", encode_value(
            {"businessId": business, "marker": tag}), None, allow_internal=True)
        customer = f"customer-{tag}"
        await tb.runner.mutation("testing_tenancy:add_member", encode_value(
            {"businessId": business, "subject": customer}), None, allow_internal=True)
        yield Shop(tb, business, customer, decode_value(seeded.value))


async def snapshot(tb: TestBackend, business: str) -> list[str]:
    rows = await tb.sql(
        "SELECT row_to_json(a)::text AS j FROM audit_log a WHERE business_id = $1 ORDER BY _id", business)
    return [r["j"] for r in rows]


def test_there_are_staff_only_functions_to_check() -> None:
    assert STAFF_ONLY, "no public function declares staff roles; this contract checks nothing"


@pytest.mark.parametrize("path", STAFF_ONLY)
async def test_customer_gets_403_from_staff_functions(shop: Shop, path: str) -> None:
    spec = shop.tb.backend.registry.functions[path]

    def own(_path: str, table: str) -> str:
        return shop.business if table == "businesses" else shop.rows[table][0]

    args = encode_value(generate_args(spec, own))
    before = await snapshot(shop.tb, shop.business)
    async with httpx.AsyncClient(base_url=shop.tb.url) as client:
        response = await client.post(f"/api/{spec.kind}", json={"path": path, "args": args, "format": "json"},
                                     headers={"Authorization": f"Bearer {TestBackend.token(shop.customer)}"})
    assert response.status_code == 403, json.dumps(response.json())[:300]
    body = response.json()
    assert body["code"] == "Forbidden"
    assert body["message"] == f"{path}: requires one of the roles {', '.join(spec.roles or ())}"
    assert await snapshot(shop.tb, shop.business) == before  # every write is audited: none happened
