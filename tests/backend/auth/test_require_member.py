"""``require_member``: explicit membership and role checks for functions that cannot use ``tenant=``/``roles=``.

Called through the internal ``testing_tenancy:check_member`` query, which has no ``tenant=`` and reads venues
after the check, so the tests also see that a successful check scopes ``ctx.db`` to the business.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from backend import Forbidden, NotFound, Unauthenticated, ids
from backend.testing import TestBackend
from backend.values import decode_value, encode_value


@dataclass
class Business:
    id: str
    owner: str
    customer: str
    invited: str
    removed: str
    venue: str


async def internal(tb: TestBackend, path: str, args: dict[str, Any], as_user: str | None = None) -> Any:
    outcome = await tb.runner.mutation(path, encode_value(args), tb.identity(as_user), allow_internal=True)
    if outcome.error is not None:
        raise outcome.error
    return decode_value(outcome.value)


async def make_business(tb: TestBackend) -> Business:
    tag = uuid.uuid4().hex[:8]
    owner, customer, invited, removed = (f"{role}-{tag}" for role in ("owner", "customer", "invited", "removed"))
    business = await tb.mutation("businesses:create", {"name": f"Biz {tag}", "timezone": "UTC"}, as_user=owner)
    await internal(tb, "testing_tenancy:add_member", {"businessId": business, "subject": customer})
    await internal(tb, "testing_tenancy:add_member",
                   {"businessId": business, "subject": invited, "role": "admin", "status": "invited"})
    gone = await internal(tb, "testing_tenancy:add_member", {"businessId": business, "subject": removed})
    venue, _ = await internal(tb, "testing_tenancy:write", {"businessId": business, "ops": [
        {"op": "insert", "table": "venues", "doc": {"name": "Hall", "timezone": "UTC", "capacity": None}},
        {"op": "delete", "id": gone}]}, as_user=owner)
    return Business(business, owner, customer, invited, removed, venue)


async def check(tb: TestBackend, business: str, as_user: str | None, roles: list[str] | None = None) -> Any:
    outcome = await tb.runner.query("testing_tenancy:check_member", encode_value(
        {"businessId": business, "roles": roles}), tb.identity(as_user), allow_internal=True)
    if outcome.error is not None:
        raise outcome.error
    return decode_value(outcome.value)


async def test_member_passes_and_the_function_is_scoped_to_that_business(tb: TestBackend) -> None:
    ours, theirs = await make_business(tb), await make_business(tb)
    result = await check(tb, ours.id, ours.owner, ["owner", "admin"])
    assert result == {"role": "owner", "tenant": ours.id, "venues": [ours.venue]}
    assert theirs.venue not in result["venues"]
    assert (await check(tb, ours.id, ours.customer))["role"] == "customer"


async def test_wrong_role_is_forbidden(tb: TestBackend) -> None:
    biz = await make_business(tb)
    with pytest.raises(Forbidden, match="requires one of the roles owner, admin"):
        await check(tb, biz.id, biz.customer, ["owner", "admin"])


@pytest.mark.parametrize("who", ["stranger", "invited", "removed", "other owner"])
async def test_non_members_get_not_found(tb: TestBackend, who: str) -> None:
    biz, other = await make_business(tb), await make_business(tb)
    subject = {"stranger": "nobody-at-all", "invited": biz.invited, "removed": biz.removed,
               "other owner": other.owner}[who]
    with pytest.raises(NotFound) as refused:
        await check(tb, biz.id, subject)
    assert refused.value.message == "testing_tenancy:check_member: business not found"


@pytest.mark.parametrize("business", ["missing", "not a business", "garbage"])
async def test_a_missing_business_is_indistinguishable_from_a_foreign_one(tb: TestBackend, business: str) -> None:
    biz = await make_business(tb)
    value = {"missing": ids.new_id(ids.table_number("businesses")), "not a business": biz.venue,
             "garbage": "not-an-id"}[business]
    with pytest.raises(NotFound) as refused:
        await check(tb, value, biz.owner)
    assert refused.value.message == "testing_tenancy:check_member: business not found"


async def test_anonymous_callers_must_sign_in(tb: TestBackend) -> None:
    biz = await make_business(tb)
    with pytest.raises(Unauthenticated, match="sign in"):
        await check(tb, biz.id, None)
