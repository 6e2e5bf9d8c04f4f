"""What the dashboard reads: tables and their rows through an index, tenants, members, sessions, jobs.

Rows are read through the engine's own ``DatabaseReader`` in a read-only snapshot, so the data browser sees
exactly what functions see (index ranges, tenant scope, soft-delete rules) — with soft-deleted rows on
request. With a tenant picked, tenant tables are bounded to that business as a function's ``ctx.db`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .. import knobs
from ..db import DatabaseReader, Txn
from ..db.reader import PaginationResult
from ..errors import InvalidArgs, SchemaError
from ..reactive.hub import is_refusal_key
from ..schema import TableSpec

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["jobs", "members", "rows", "sessions", "table_listing", "tenants"]

_INTEGER = ("integer", "bigint", "smallint")
_TAIL = ("_creationTime", "_id")  # every index ends with these; filters name the fields before them
# A job's or a subscription's arguments (and a job's error) are whatever a caller sent, up to megabytes; the
# views poll every second, so each value is cut to this many characters.
_MAX_VALUE_CHARS = 2_000


def table_listing(backend: Backend) -> list[dict[str, Any]]:
    out = []
    for table in sorted(backend.schema.tables.values(), key=lambda t: t.name):
        out.append({
            "name": table.name,
            "tenantKey": table.tenant_key,
            "tenantRoot": table.tenant_root,
            "audited": table.audited,
            "softDelete": table.soft_delete,
            "fields": [{"key": f.key, "type": f.sql_type, "nullable": f.nullable, "system": f.system,
                        "references": f.references} for f in table.columns],
            "indexes": [{"name": i.name, "fields": [k for k in i.keys if k not in _TAIL] or list(i.keys),
                         "unique": i.unique} for i in table.indexes.values()],
        })
    return out


def _coerce(table: TableSpec, key: str, raw: Any) -> Any:
    """A filter value typed in a text box, turned into the field's type (or a 400 naming the field)."""
    spec = table.fields.get(key)
    if spec is None:
        raise InvalidArgs(f"$.eq.{key}: table {table.name!r} has no field {key!r}")
    value = raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if spec.sql_type in _INTEGER:
                value = int(text)
            elif spec.sql_type.startswith("double") or spec.sql_type in ("real", "numeric"):
                value = float(text)
            elif spec.sql_type == "boolean":
                if text not in ("true", "false"):
                    raise ValueError("expected true or false")
                value = text == "true"
            elif text == "null" and spec.nullable:
                value = None
        except ValueError as error:
            raise InvalidArgs(f"$.eq.{key}: {error}") from None
    try:
        return None if value is None else spec.check(value, f"$.eq.{key}")
    except SchemaError as error:
        raise InvalidArgs(error.message) from None


async def _read(backend: Backend, tenant: str | None, body: Any) -> Any:
    assert backend.pool is not None
    async with backend.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        txn = Txn(conn, backend.schema, backend.runner.clock.now(), read_only=True, function_path="dashboard",
                  tenant=tenant, cross_tenant=tenant is None)
        return await body(DatabaseReader(txn))


async def rows(
    backend: Backend, table_name: str, *, index: str, eq: dict[str, Any], include_deleted: bool, order: str,
    cursor: str | None, num_items: int, tenant: str | None,
) -> dict[str, Any]:
    """One page of ``table_name`` through ``index``, whose leading fields equal ``eq`` (in index order)."""
    try:
        table = backend.schema.table(table_name)
        spec = table.index(index)
    except SchemaError as error:
        raise InvalidArgs(error.message) from None
    if not 0 < num_items <= knobs.DASHBOARD_MAX_PAGE_ROWS:
        raise InvalidArgs(f"$.numItems: must be between 1 and {knobs.DASHBOARD_MAX_PAGE_ROWS}")
    if order not in ("asc", "desc"):
        raise InvalidArgs("$.order: must be 'asc' or 'desc'")
    unknown = sorted(set(eq) - set(spec.keys))
    if unknown:
        raise InvalidArgs(f"$.eq.{unknown[0]}: not a field of index {table.name}.{index} ({', '.join(spec.keys)})")
    implicit = tenant is not None and table.tenant_key is not None and spec.keys[0] == table.tenant_key
    prefix: list[tuple[str, Any]] = []
    for key in spec.keys[1 if implicit else 0:]:
        if key not in eq:
            break
        prefix.append((key, _coerce(table, key, eq[key])))
    skipped = [k for k in eq if k not in dict(prefix) and not (implicit and k == table.tenant_key)]
    if skipped:
        raise InvalidArgs(f"$.eq.{skipped[0]}: fill the index fields in order ({', '.join(spec.keys)})")

    def build(q: Any) -> Any:
        for key, value in prefix:
            q = q.eq(key, value)
        return q

    async def page(reader: DatabaseReader) -> Any:
        if prefix and prefix[0][0] == "_id":  # one document: a point read (range builders take camelCase fields)
            doc = await reader.get(prefix[0][1], include_deleted=include_deleted)
            found = [doc] if doc is not None and backend.schema.table_of_id(doc["_id"]) is table else []
            return PaginationResult(page=found, is_done=True, continue_cursor="")
        query = reader.query(table.name).with_index(index, build).order(order)  # type: ignore[arg-type]
        if include_deleted:
            query = query.include_deleted()
        return await query.paginate({"numItems": num_items, "cursor": cursor or None})

    result = await _read(backend, tenant if (table.tenant_key or table.tenant_root) else None, page)
    return {"page": result.page, "isDone": result.is_done, "continueCursor": result.continue_cursor}


async def tenants(backend: Backend) -> list[dict[str, Any]]:
    tenancy = backend.schema.tenancy
    if tenancy is None:
        return []

    async def read(reader: DatabaseReader) -> Any:
        return await reader.query(tenancy.root_table).take(500)

    found = await _read(backend, None, read)
    return [{"_id": r["_id"], "name": r.get("name") or r["_id"]} for r in found]


async def members(backend: Backend, tenant: str) -> list[dict[str, Any]]:
    """The business's members, to act as one of them in the function runner."""
    tenancy = backend.schema.tenancy
    if tenancy is None:
        return []
    table = backend.schema.table(tenancy.members_table)
    index = next((i for i in table.indexes.values() if i.keys[0] == tenancy.member_tenant_key), None)

    async def read(reader: DatabaseReader) -> Any:
        query = reader.query(table.name)
        if index is not None:
            query = query.with_index(index.name)
        return await query.take(500)

    found = await _read(backend, tenant, read)
    return [{"_id": r["_id"], "subject": r.get(tenancy.member_subject_key), "role": r.get(tenancy.member_role_key),
             "name": r.get("name"), "status": r.get(tenancy.member_status_key)} for r in found]


def _names_tenant(args_key: bytes, tenant: str | None) -> bool:
    """Whether a subscription's arguments (the JSON text its instance is keyed by) name ``tenant``; refused
    subscriptions are keyed by ``!`` and their error, and name nobody."""
    return tenant is None or (not is_refusal_key(args_key) and tenant.encode() in args_key)


def _shown_args(encoded: bytes) -> Any:
    """A subscription's arguments, or the start of their JSON text when they are long."""
    if is_refusal_key(encoded):  # refused before it ran: keyed by its error
        return None
    if len(encoded) <= _MAX_VALUE_CHARS:
        return msgspec.json.decode(encoded)
    return encoded[:_MAX_VALUE_CHARS].decode(errors="ignore") + "…"


def sessions(backend: Backend, tenant: str | None) -> dict[str, Any]:
    """Live sync sessions with their subscriptions (re-run counts), and the hub's totals.

    With a tenant picked, only subscriptions whose arguments name that business are listed.
    """
    listed = []
    for session in list(backend.sessions):
        sub = getattr(session, "sub", None)
        queries = [] if sub is None else [
            {"queryId": qid, "path": inst.key[0], "args": _shown_args(inst.key[1]), "runs": inst.runs,
             "subscribers": len(inst.subscribers)}
            for qid, inst in sorted(sub.queries.items())
            if _names_tenant(inst.key[1], tenant)
        ]
        if tenant is not None and not queries:
            continue
        identity = getattr(session, "identity", None)
        listed.append({"sessionId": session.session_id, "state": session.state.name,
                       "subject": None if identity is None else identity.subject, "queries": queries})
    hub = backend.hub
    return {"sessions": listed, "instances": 0 if hub is None else len(hub.instances),
            "stats": {} if hub is None else dict(hub.stats)}


async def jobs(backend: Backend, tenant: str | None) -> dict[str, Any]:
    """Recent and pending scheduled jobs (newest first) and every cron with its next and last run."""
    assert backend.pool is not None
    columns = ("id, function_path, left(args::text, $1) AS args, kind, status, attempts, run_at, tenant, subject, "
               "cron_name, left(error, $1) AS error, completed_at")
    async with backend.pool.acquire() as conn:
        if tenant is None:
            found = await conn.fetch(f"SELECT {columns} FROM _scheduled_jobs ORDER BY run_at DESC LIMIT 100",
                                     _MAX_VALUE_CHARS)
        else:
            found = await conn.fetch(
                f"SELECT {columns} FROM _scheduled_jobs WHERE tenant = $2 ORDER BY run_at DESC LIMIT 100",
                _MAX_VALUE_CHARS, tenant)
        counts = await conn.fetch("SELECT status, count(*) AS n FROM _scheduled_jobs GROUP BY status")
        crons = await conn.fetch(
            "SELECT name, function_path, kind, schedule::text, next_run, last_run FROM _crons ORDER BY name")
    return {
        "jobs": [{"id": r["id"], "path": r["function_path"], "args": r["args"], "kind": r["kind"],
                  "status": r["status"], "attempts": r["attempts"], "runAt": r["run_at"], "tenant": r["tenant"],
                  "subject": r["subject"], "cron": r["cron_name"], "error": r["error"],
                  "completedAt": r["completed_at"]} for r in found],
        "counts": {r["status"]: r["n"] for r in counts},
        "crons": [{"name": r["name"], "path": r["function_path"], "kind": r["kind"], "schedule": r["schedule"],
                   "nextRun": r["next_run"], "lastRun": r["last_run"]} for r in crons],
    }
