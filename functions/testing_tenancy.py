"""Internal fixtures for the engine's tenancy, audit and soft-delete tests; no client can reach them.

``seed`` gives a business one row in every tenant table. Rows are derived from the schema, so a table added
later is seeded without touching this module; every text value that carries no domain meaning holds the
caller's ``marker``, so a test can spot the rows' data anywhere it should not appear. ``write`` and ``read``
run raw ``ctx.db`` operations inside a business (as one of its members), so each write path can be tested
on its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from backend import (
    AppError,
    MutationCtx,
    NotFound,
    QueryCtx,
    internal_mutation,
    internal_query,
    require_member,
)
from schema import BusinessId, MemberId
from schema import schema as app_schema

TableSpec = Any  # backend.schema.TableSpec: functions import only the public face
FieldSpec = Any

# Values some functions interpret; everything else is generated from the field's type.
_DOMAIN: dict[tuple[str, str], Any] = {
    ("members", "role"): "customer",
    ("members", "status"): "active",
    ("class_templates", "status"): "active",
    ("class_instances", "status"): "scheduled",
    ("bookings", "status"): "confirmed",
    ("bookings", "source"): "self",
    ("credit_ledger", "kind"): "grant",
    ("outbox", "status"): "pending",
    ("membership_plans", "kind"): "unlimited",
    ("membership_plans", "period"): "week",
}
_BY_KEY: dict[str, Any] = {
    "timezone": "UTC",
    "currency": "USD",
    "rrule": "FREQ=WEEKLY;BYDAY=WE",
    "capacity": 10,
    "booked": 0,
    "waitlisted": 0,
    "durationMinutes": 60,
    "creditCost": 1,
    "creditsSpent": 1,
    "granted": 5,
    "remaining": 5,
    "priority": 0,
    "position": 0,
}
_LOCAL_DATE = "2031-01-15"


def _ordered(tables: list[TableSpec]) -> list[TableSpec]:
    """Tables in an order where every reference points at a table seeded earlier (optional ones if possible)."""
    done: set[str] = {t.name for t in app_schema.tables.values() if t.tenant_root}
    ordered: list[TableSpec] = []
    pending = list(tables)

    def ready_if(table: TableSpec, relaxed: bool) -> bool:
        return all(f.references in (None, table.name) or f.references in done or (relaxed and f.nullable)
                   for f in table.fields.values())

    while pending:
        ready = [t for t in pending if ready_if(t, False)] or [t for t in pending if ready_if(t, True)][:1]
        if not ready:
            raise RuntimeError(f"cannot order tables for seeding: {[t.name for t in pending]}")
        for table in ready:
            ordered.append(table)
            done.add(table.name)
            pending.remove(table)
    return ordered


def _value(table: TableSpec, spec: FieldSpec, marker: str, refs: dict[str, str], now: dt.datetime) -> Any:
    key = spec.key
    if spec.references is not None:
        return refs.get(spec.references)
    if (table.name, key) in _DOMAIN:
        return _DOMAIN[(table.name, key)]
    if key in _BY_KEY:
        return _BY_KEY[key]
    sql = spec.sql_type
    temporal = key.endswith(("Date", "On", "Until", "After")) or (sql.startswith("text") and key.endswith("Time"))
    if spec.nullable and (temporal or not sql.startswith("text")):
        return None
    if sql.endswith("[]"):
        return []
    if sql.startswith("text"):
        if key.endswith("Time"):
            return "09:00"
        if temporal:
            return _LOCAL_DATE
        return f"{marker} {table.name}.{key}"
    if sql == "bigint":
        return 1
    if sql == "double precision":
        return 1.0
    if sql == "boolean":
        return False
    if sql == "timestamptz":
        start = now + dt.timedelta(days=30)
        return start + dt.timedelta(hours=1) if key.startswith("ends") else start
    if sql == "date":
        return dt.date.fromisoformat(_LOCAL_DATE)
    if sql == "jsonb":
        return {"note": marker}
    if sql == "bytea":
        return marker.encode()
    raise TypeError(f"{table.name}.{key}: no seed value for column type {sql}")


@internal_mutation(cross_tenant=True)
async def seed(ctx: MutationCtx, business_id: BusinessId, marker: str) -> dict[str, list[str]]:
    """One live row per tenant table of the business, plus one soft-deleted row where deletes are soft.

    Returns the ids by table, live row first.
    """
    if await ctx.db.get(business_id) is None:
        raise NotFound("$.args.businessId: not found")
    tables = [t for t in app_schema.tables.values() if t.tenant_key and t.name != "audit_log"]
    refs: dict[str, str] = {}
    created: dict[str, list[str]] = {}
    for table in _ordered(tables):
        rows = 2 if table.soft_delete else 1
        for n in range(rows):
            tag = f"{marker}#{n}"
            doc = {
                spec.key: _value(table, spec, tag, refs, ctx.now)
                for spec in table.fields.values()
                if not spec.system
            }
            doc[table.tenant_key or ""] = str(business_id)
            document_id = await ctx.db.insert(table.name, doc)
            created.setdefault(table.name, []).append(document_id)
            if n == 0:
                refs[table.name] = document_id
            else:
                await ctx.db.delete(document_id)
    return created


@internal_mutation(cross_tenant=True)
async def add_member(
    ctx: MutationCtx, business_id: BusinessId, subject: str, role: str = "customer", status: str = "active"
) -> MemberId:
    """A membership in any state (``invited`` ones must grant nothing until accepted)."""
    member_id = await ctx.db.insert("members", {
        "businessId": str(business_id), "subject": subject, "role": role, "status": status,
        "name": None, "email": None,
    })
    return MemberId(member_id)


class Op(msgspec.Struct, rename="camel", frozen=True, forbid_unknown_fields=True):
    """One ``ctx.db`` write; ``id`` names the document for everything but insert."""

    op: Literal["insert", "patch", "replace", "delete", "restore"]
    table: str = ""
    id: str | None = None
    doc: dict[str, Any] = msgspec.field(default_factory=dict)


async def _apply(ctx: MutationCtx, ops: list[Op], fail: bool) -> list[str]:
    done: list[str] = []
    for op in ops:
        if op.op == "insert":
            done.append(await ctx.db.insert(op.table, op.doc))
            continue
        target = op.id or ""
        if op.op == "patch":
            await ctx.db.patch(target, op.doc)
        elif op.op == "replace":
            await ctx.db.replace(target, op.doc)
        elif op.op == "delete":
            await ctx.db.delete(target)
        else:
            await ctx.db.restore(target)
        done.append(target)
    if fail:
        raise AppError({"code": "failed_on_purpose"}, "failed after writing, so every write must roll back")
    return done


@internal_mutation(tenant="business_id")
async def write(ctx: MutationCtx, business_id: BusinessId, ops: list[Op], fail: bool = False) -> list[str]:
    """Run raw writes inside the business, as its member; ``fail`` raises after the last one."""
    return await _apply(ctx, ops, fail)


@internal_mutation
async def write_unscoped(ctx: MutationCtx, ops: list[Op], fail: bool = False) -> list[str]:
    """Raw writes to tenant-free tables."""
    return await _apply(ctx, ops, fail)


@internal_query(tenant="business_id")
async def read(
    ctx: QueryCtx, business_id: BusinessId, table: str, document_id: str | None = None, include_deleted: bool = False
) -> dict[str, Any]:
    """``get`` of one document and the ids an index scan of the table returns, with or without deleted rows."""
    query = ctx.db.query(table)
    if include_deleted:
        query = query.include_deleted()
    rows = await query.collect()
    got = None if document_id is None else await ctx.db.get(document_id, include_deleted=include_deleted)
    return {"get": got, "ids": [row["_id"] for row in rows]}


@internal_query
async def check_member(ctx: QueryCtx, business_id: str, roles: list[str] | None = None) -> dict[str, Any]:
    """``require_member`` in a function without ``tenant=``: on success the function works inside the business."""
    member = await require_member(ctx, business_id, roles=roles)
    venues = await ctx.db.query("venues").collect()
    return {"role": member["role"], "tenant": ctx.tenant, "venues": [v["_id"] for v in venues]}
