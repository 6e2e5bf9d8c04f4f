"""Audit fields and trail, soft deletes and references, through real functions on a real database.

Raw writes go through the internal ``testing_tenancy:write`` (run as a member, inside the business), so each
write path is exercised on its own; live visibility is checked on the public ``venues:list`` subscription.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from backend import ids
from backend.errors import InvalidArgs, ReferenceViolation
from backend.registry import load_functions
from backend.runner import Outcome
from backend.testing import ManualClock, TestBackend
from backend.validators import ValidationFailure
from backend.values import decode_value, encode_value
from tests.support.fuzz_args import generate_args
from tests.support.sync_client import RawClient

T0 = dt.datetime(2030, 3, 1, 9, 0, tzinfo=dt.UTC)
SYSTEM_FIELDS = ["_id", "_creationTime", "createdAt", "createdBy", "updatedAt", "updatedBy", "deleted",
                 "deletedAt", "deletedBy"]


@dataclass
class Studio:
    tb: TestBackend
    clock: ManualClock
    business: str
    owner: str
    admin: str

    async def write(self, ops: list[dict[str, Any]], *, fail: bool = False, as_user: str | None = None,
                    request_id: str | None = None) -> Outcome:
        args = encode_value({"businessId": self.business, "ops": ops, "fail": fail})
        return await self.tb.runner.mutation("testing_tenancy:write", args, self.tb.identity(as_user or self.owner),
                                             allow_internal=True, request_id=request_id)

    async def ok(self, ops: list[dict[str, Any]], **options: Any) -> list[str]:
        outcome = await self.write(ops, **options)
        assert outcome.error is None, outcome.error
        return list(decode_value(outcome.value))

    async def read(self, table: str, document_id: str | None = None, include_deleted: bool = False) -> Any:
        args = {"businessId": self.business, "table": table, "documentId": document_id,
                "includeDeleted": include_deleted}
        outcome = await self.tb.runner.query("testing_tenancy:read", encode_value(args),
                                             self.tb.identity(self.owner), allow_internal=True)
        assert outcome.error is None, outcome.error
        return decode_value(outcome.value)

    async def audit(self, document_id: str) -> list[dict[str, Any]]:
        rows = await self.tb.sql(
            "SELECT business_id, table_name, operation, actor, function_path, request_id, before, after "
            "FROM audit_log WHERE document_id = $1 ORDER BY _creation_time, _id", document_id)
        return [{**dict(r), "before": _json(r["before"]), "after": _json(r["after"])} for r in rows]

    async def count(self, sql: str, *args: Any) -> int:
        return int((await self.tb.sql(sql, *args))[0][0])


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def venue(name: str, capacity: int | None = 10) -> dict[str, Any]:
    return {"op": "insert", "table": "venues", "doc": {"name": name, "timezone": "UTC", "capacity": capacity}}


@pytest.fixture(scope="module")
async def studio() -> AsyncIterator[Studio]:
    clock = ManualClock(T0)
    async with TestBackend(clock=clock, run_scheduler=False) as tb:
        owner, admin = f"owner-{uuid.uuid4().hex[:8]}", f"admin-{uuid.uuid4().hex[:8]}"
        business = await tb.mutation("businesses:create", {"name": "Audit Yoga", "timezone": "UTC"}, as_user=owner)
        await tb.runner.mutation("testing_tenancy:add_member", encode_value(
            {"businessId": business, "subject": admin, "role": "admin"}), None, allow_internal=True)
        yield Studio(tb, clock, business, owner, admin)


async def test_every_write_path_appends_one_audit_row_with_actor_path_and_diff(studio: Studio) -> None:
    studio.clock.set(T0)
    [venue_id] = await studio.ok([venue("Hall")], request_id="req-insert")
    t1 = studio.clock.advance(minutes=5)
    await studio.ok([{"op": "patch", "id": venue_id, "doc": {"name": "Big Hall"}}], as_user=studio.admin)
    t2 = studio.clock.advance(minutes=5)
    await studio.ok([{"op": "replace", "id": venue_id, "doc": {"name": "Annex", "timezone": "Europe/Paris"}}])
    t3 = studio.clock.advance(minutes=5)
    await studio.ok([{"op": "delete", "id": venue_id}], as_user=studio.admin)
    t4 = studio.clock.advance(minutes=5)
    await studio.ok([{"op": "restore", "id": venue_id}])

    trail = await studio.audit(venue_id)
    assert [(r["operation"], r["actor"]) for r in trail] == [
        ("insert", studio.owner), ("update", studio.admin), ("replace", studio.owner),
        ("delete", studio.admin), ("restore", studio.owner)]
    assert all(r["table_name"] == "venues" and r["business_id"] == studio.business for r in trail)
    assert all(r["function_path"] == "testing_tenancy:write" for r in trail)
    assert trail[0]["request_id"] == "req-insert"
    insert, update, replace, delete, restore = trail
    assert insert["before"] is None
    assert insert["after"]["name"] == "Hall" and insert["after"]["createdBy"] == studio.owner
    assert insert["after"]["createdAt"] == "2030-03-01T09:00:00Z"
    assert update["before"] == {"name": "Hall", "updatedAt": "2030-03-01T09:00:00Z", "updatedBy": studio.owner}
    assert update["after"] == {"name": "Big Hall", "updatedAt": "2030-03-01T09:05:00Z", "updatedBy": studio.admin}
    assert replace["before"]["capacity"] == 10 and replace["after"]["capacity"] is None
    assert replace["before"]["timezone"] == "UTC" and replace["after"]["timezone"] == "Europe/Paris"
    assert delete["before"]["deleted"] is False
    assert delete["after"]["deleted"] is True and delete["after"]["deletedBy"] == studio.admin
    assert delete["after"]["deletedAt"] == "2030-03-01T09:15:00Z"
    assert restore["after"] == {"deleted": False, "deletedAt": None, "deletedBy": None,
                                "updatedAt": "2030-03-01T09:20:00Z", "updatedBy": studio.owner}

    [row] = await studio.tb.sql("SELECT created_at, created_by, updated_at, updated_by FROM venues WHERE _id = $1",
                                venue_id)
    assert (row["created_at"], row["created_by"]) == (T0, studio.owner)
    assert (row["updated_at"], row["updated_by"]) == (t4, studio.owner)
    assert t1 < t2 < t3 < t4


async def test_hard_delete_on_an_audited_table_keeps_the_whole_row_in_the_trail(studio: Studio) -> None:
    outcome = await studio.tb.runner.mutation("testing_tenancy:write_unscoped", encode_value(
        {"ops": [{"op": "insert", "table": "ref_parents", "doc": {"name": "gone"}}]}),
        studio.tb.identity(studio.owner), allow_internal=True)
    [parent] = decode_value(outcome.value)
    studio.clock.advance(seconds=1)  # the trail is ordered by time
    await unscoped(studio, [{"op": "delete", "id": parent}])
    assert await studio.count("SELECT count(*) FROM ref_parents WHERE _id = $1", parent) == 0
    insert, delete = await studio.audit(parent)
    assert (insert["operation"], delete["operation"]) == ("insert", "delete")
    assert delete["business_id"] is None and delete["after"] is None
    assert delete["before"]["name"] == "gone" and delete["before"]["_id"] == parent


async def unscoped(studio: Studio, ops: list[dict[str, Any]]) -> Outcome:
    return await studio.tb.runner.mutation("testing_tenancy:write_unscoped", encode_value({"ops": ops}),
                                           studio.tb.identity(studio.owner), allow_internal=True)


@pytest.mark.parametrize("field", SYSTEM_FIELDS)
@pytest.mark.parametrize("op", ["insert", "patch", "replace"])
async def test_functions_cannot_write_audit_or_engine_fields(studio: Studio, op: str, field: str) -> None:
    [target] = await studio.ok([venue(f"target-{uuid.uuid4()}")])
    venues, audits = (await studio.count("SELECT count(*) FROM venues"),
                      await studio.count("SELECT count(*) FROM audit_log"))
    forged = {"name": "forged", "timezone": "UTC", field: "mallory" if field.endswith("By") else "2000-01-01T00:00:00Z"}
    forged_op = venue("x") | {"doc": forged} if op == "insert" else {"op": op, "id": target, "doc": forged}
    outcome = await studio.write([venue(f"before-{uuid.uuid4()}"), forged_op])
    assert outcome.error is not None
    assert getattr(outcome.error, "code", None) == "BadWrite"
    assert f"venues.{field}: set by the engine; functions cannot write it" in str(outcome.error)
    assert await studio.count("SELECT count(*) FROM venues") == venues
    assert await studio.count("SELECT count(*) FROM audit_log") == audits
    assert await studio.count("SELECT count(*) FROM venues WHERE created_by = 'mallory' OR updated_by = 'mallory'") == 0


async def test_functions_cannot_write_the_audit_log(studio: Studio) -> None:
    outcome = await studio.write([{"op": "insert", "table": "audit_log", "doc": {
        "tableName": "venues", "documentId": "x", "operation": "insert", "functionPath": "forged"}}])
    assert getattr(outcome.error, "code", None) == "BadWrite"
    assert await studio.count("SELECT count(*) FROM audit_log WHERE function_path = 'forged'") == 0


@pytest.mark.parametrize("path", sorted(s.path for s in load_functions(include_testing=True) if s.kind == "mutation" and not s.internal))
def test_public_mutations_refuse_audit_fields_in_args(path: str) -> None:
    spec = load_functions(include_testing=True).functions[path]
    args = generate_args(spec, lambda _path, table: ids.new_id(ids.table_number(table)))
    spec.args.validate(args)  # the generated call itself is valid
    for field in ("createdBy", "updatedAt", "deletedBy"):
        with pytest.raises(ValidationFailure, match=f"\\$.args.{field}: unknown field"):
            spec.args.validate({**args, field: "mallory"})


async def test_a_rolled_back_mutation_leaves_no_rows_and_no_audit(studio: Studio) -> None:
    [kept] = await studio.ok([venue(f"kept-{uuid.uuid4()}")])
    audits = await studio.count("SELECT count(*) FROM audit_log")
    name = f"doomed-{uuid.uuid4()}"
    outcome = await studio.write([venue(name), {"op": "patch", "id": kept, "doc": {"capacity": 99}},
                                  {"op": "delete", "id": kept}], fail=True)
    assert outcome.error is not None and getattr(outcome.error, "data", None) == {"code": "failed_on_purpose"}
    assert await studio.count("SELECT count(*) FROM venues WHERE name = $1", name) == 0
    assert await studio.count("SELECT count(*) FROM audit_log") == audits
    [row] = await studio.tb.sql("SELECT capacity, deleted FROM venues WHERE _id = $1", kept)
    assert (row["capacity"], row["deleted"]) == (10, False)
    assert [r["operation"] for r in await studio.audit(kept)] == ["insert"]


async def test_soft_deleted_rows_vanish_from_get_and_queries_until_restored(studio: Studio) -> None:
    [venue_id] = await studio.ok([venue(f"soft-{uuid.uuid4()}")])
    await studio.ok([{"op": "delete", "id": venue_id}])
    plain = await studio.read("venues", venue_id)
    assert plain["get"] is None and venue_id not in plain["ids"]
    shown = await studio.read("venues", venue_id, include_deleted=True)
    assert shown["get"]["_id"] == venue_id and shown["get"]["deleted"] is True
    assert venue_id in shown["ids"]
    await studio.ok([{"op": "restore", "id": venue_id}])
    back = await studio.read("venues", venue_id)
    assert back["get"]["deleted"] is False and venue_id in back["ids"]
    [row] = await studio.tb.sql("SELECT count(*) FROM venues WHERE _id = $1", venue_id)
    assert row[0] == 1  # a soft delete never removed the row


async def test_soft_delete_and_restore_reach_live_subscriptions(studio: Studio) -> None:
    studio.clock.set(dt.datetime.now(dt.UTC))
    [venue_id] = await studio.ok([venue(f"live-{uuid.uuid4()}")])
    async with RawClient.open(studio.tb.port) as client:
        await client.send({"type": "Authenticate", "tokenType": "User", "value": TestBackend.token(studio.owner),
                           "baseVersion": 0})
        [query] = await client.subscribe(("venues:list", {"businessId": studio.business}))

        def listed() -> set[str]:
            return {v["_id"] for v in client.results.get(query) or []}

        await client.until(lambda: venue_id in listed())
        await studio.ok([{"op": "delete", "id": venue_id}])
        await client.until(lambda: venue_id not in listed())
        await studio.ok([{"op": "restore", "id": venue_id}])
        await client.until(lambda: venue_id in listed())


async def test_unique_indexes_ignore_deleted_rows(studio: Studio) -> None:
    """members.by_subject is unique per business among live rows (members:add/remove are the public path)."""
    subject = f"carol-{uuid.uuid4().hex[:6]}"
    args = {"businessId": studio.business, "subject": subject, "role": "customer"}
    first = await studio.tb.mutation("members:add", args, as_user=studio.owner)
    duplicate = await studio.write([{"op": "insert", "table": "members", "doc": {
        "subject": subject, "role": "customer", "status": "active"}}])
    assert getattr(duplicate.error, "code", None) == "UniqueViolation"
    await studio.tb.mutation("members:remove", {"memberId": first}, as_user=studio.owner)
    second = await studio.tb.mutation("members:add", args, as_user=studio.owner)
    assert second != first
    rows = await studio.tb.sql("SELECT _id, deleted FROM members WHERE subject = $1 ORDER BY _creation_time", subject)
    assert [(r["_id"], r["deleted"]) for r in rows] == [(first, True), (second, False)]
    again = await studio.write([{"op": "restore", "id": first}])  # two live rows with one key: refused
    assert getattr(again.error, "code", None) == "UniqueViolation"
    assert await studio.count("SELECT count(*) FROM members WHERE subject = $1 AND NOT deleted", subject) == 1


async def test_deleting_a_referenced_row_of_a_hard_delete_table_is_a_reference_violation(studio: Studio) -> None:
    created = await unscoped(studio, [{"op": "insert", "table": "ref_parents", "doc": {"name": "parent"}}])
    [parent] = decode_value(created.value)
    child_out = await unscoped(studio, [{"op": "insert", "table": "ref_children",
                                         "doc": {"parentId": parent, "name": "child"}}])
    [child] = decode_value(child_out.value)
    refused = await unscoped(studio, [{"op": "delete", "id": parent}])
    assert isinstance(refused.error, ReferenceViolation)
    assert refused.error.message == "cannot delete: the document is still referenced from table 'ref_children'"
    assert await studio.count("SELECT count(*) FROM ref_parents WHERE _id = $1", parent) == 1
    assert [r["operation"] for r in await studio.audit(parent)] == ["insert"]
    # Handling the children first makes the delete legal.
    studio.clock.advance(seconds=1)
    done = await unscoped(studio, [{"op": "delete", "id": child}, {"op": "delete", "id": parent}])
    assert done.error is None
    assert [r["operation"] for r in await studio.audit(parent)] == ["insert", "delete"]
    dangling = await unscoped(studio, [{"op": "insert", "table": "ref_children",
                                        "doc": {"parentId": parent, "name": "orphan"}}])
    assert isinstance(dangling.error, ReferenceViolation)
    assert "points to a document that does not exist" in dangling.error.message


async def test_a_write_cannot_point_at_another_tenants_row(studio: Studio) -> None:
    other_owner = f"other-{uuid.uuid4().hex[:8]}"
    other = await studio.tb.mutation("businesses:create", {"name": "Elsewhere", "timezone": "UTC"},
                                     as_user=other_owner)
    foreign = await studio.tb.runner.mutation("testing_tenancy:write", encode_value({"businessId": other, "ops": [
        venue("Their hall")]}), studio.tb.identity(other_owner), allow_internal=True)
    [their_venue] = decode_value(foreign.value)
    [our_venue] = await studio.ok([venue(f"ours-{uuid.uuid4()}")])
    closures = await studio.count("SELECT count(*) FROM closures")

    def closure(venue_id: str) -> dict[str, Any]:
        return {"op": "insert", "table": "closures", "doc": {
            "venueId": venue_id, "fromDate": "2030-04-01", "toDate": "2030-04-02", "reason": "works"}}

    refused = await studio.write([closure(their_venue)])
    assert isinstance(refused.error, ReferenceViolation)
    assert refused.error.message == "closures.venueId: a reference points to a document that does not exist"
    [closure_id] = await studio.ok([closure(our_venue)])  # not read in this transaction: looked up, and allowed
    patched = await studio.write([{"op": "patch", "id": closure_id, "doc": {"venueId": their_venue}}])
    assert isinstance(patched.error, ReferenceViolation)
    assert await studio.count("SELECT count(*) FROM closures") == closures + 1
    [row] = await studio.tb.sql("SELECT venue_id FROM closures WHERE _id = $1", closure_id)
    assert row["venue_id"] == our_venue


def test_invalid_args_is_the_error_for_forged_fields() -> None:
    """The HTTP/sync layers turn ValidationFailure into InvalidArgs (BadArgs, 400)."""
    assert InvalidArgs.code == "BadArgs" and InvalidArgs.status == 400
