"""``ctx.db`` in mutations: insert, patch, replace, delete and restore, each recorded in the write log.

Writes are held back until the transaction next talks to the database (a read, a write that must go at once,
the ``COMMIT``), when nothing the function does next depends on the database's answer to them: a mutation
that reads, then inserts and patches, sends its writes with its ``COMMIT``, in one round trip instead of three.
Reads see every write before them, since any statement first sends what is held.

The engine owns ``_id``, ``_creationTime``, the audit fields and the soft-delete fields: a function that tries
to set one gets an error, so audit data cannot be forged. On audited tables each write appends an
``audit_log`` row in the same transaction, so a rolled-back mutation leaves no audit trail behind.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import asyncpg
import msgspec

from .. import ids, knobs
from ..errors import InvalidWrite, NotFound, ReferenceViolation, SchemaError, UniqueViolation
from ..postgres import json_default
from ..schema import TableSpec
from ..values import format_instant
from ._txn import HeldWrite, Txn, Write
from .reader import DatabaseReader, TenantViolation, _quote

__all__ = ["DatabaseWriter"]

Document = dict[str, Any]

#: Writes, and bytes of their text, JSON and byte values, held back at most at once; past either they are
#: sent as they come (the ``COMMIT`` message, which writes values as hex, stays small).
_MAX_HELD = 32
_MAX_HELD_BYTES = 256 * 1024


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _check_index_entries(table: TableSpec, doc: Document) -> None:
    """Refuse a document whose strings in one index entry exceed ``knobs.MAX_INDEXED_STRING_BYTES``.

    PostgreSQL cannot hold a b-tree entry larger than about a third of a page (~2.7 KB, after compression);
    checking here makes the caller's error name the field instead of failing inside the database.
    """
    limit = knobs.MAX_INDEXED_STRING_BYTES
    for index in table.indexes.values():
        sizes = [(len(v) * 4 if isinstance(v, str) else len(v), k) for k in index.keys
                 if k != "_id" and table.fields[k].references is None  # ids are short, and checked as ids
                 and isinstance(v := doc.get(k), str | bytes)]
        if sum(size for size, _ in sizes) <= limit:  # cannot be over the limit: 4 bytes per character at most
            continue
        exact = [(len(doc[k].encode("utf-8", "surrogatepass")) if isinstance(doc[k], str) else len(doc[k]), k)
                 for _, k in sizes]
        total = sum(size for size, _ in exact)
        if total > limit:
            largest = max(exact)[1]
            raise InvalidWrite(
                f"{table.name}.{largest}: indexed values may hold at most {limit} bytes of text per index entry (ids aside) "
                f"(index {index.name} would hold {total}); shorten the value or leave the field out of the index"
            )


class DatabaseWriter(DatabaseReader):
    """Read and write access for mutations."""

    def __init__(self, txn: Txn) -> None:
        super().__init__(txn)

    # -- helpers -----------------------------------------------------------------------------------------

    def _check_fields(self, table: TableSpec, fields: Document, *, partial: bool) -> Document:
        clean: Document = {}
        for key, value in fields.items():
            spec = table.fields.get(key)
            if spec is None:
                raise InvalidWrite(f"{table.name}.{key}: unknown field")
            if spec.system:
                raise InvalidWrite(f"{table.name}.{key}: set by the engine; functions cannot write it")
            if value is None:
                if not spec.nullable:
                    raise InvalidWrite(f"{table.name}.{key}: required field cannot be null")
                clean[key] = None
                continue
            try:
                clean[key] = spec.check(value, f"{table.name}.{key}")
            except SchemaError as error:
                raise InvalidWrite(error.message) from None
        if not partial:
            for spec in table.columns:
                if not spec.system and not spec.nullable and spec.key not in clean:
                    raise InvalidWrite(f"{table.name}.{spec.key}: missing required field")
        return clean

    async def _check_references(self, table: TableSpec, fields: Document) -> None:
        """A tenant-scoped write may only point at rows of its own tenant; the foreign key alone allows any.

        Ids the transaction already read (or wrote) inside its scope need no lookup, so the usual
        get-then-insert costs nothing extra. Another tenant's row is reported like a missing one.
        """
        txn = self._txn
        if txn.cross_tenant or txn.tenant is None:
            return
        for key, value in fields.items():
            spec = table.fields[key]
            if spec.references is None or value is None or key == table.tenant_key or value in txn.in_scope_ids:
                continue
            target = txn.schema.table(spec.references)
            if not (target.tenant_key or target.tenant_root):
                continue
            doc = await self._fetch(target, value)
            if doc is None or not self._in_scope(target, doc):
                raise ReferenceViolation(f"{table.name}.{key}: a reference points to a document that does not exist")
            txn.saw_in_scope(value)

    async def _current(self, document_id: str, operation: str) -> tuple[TableSpec, Document]:
        table = self._txn.schema.table_of_id(document_id) if isinstance(document_id, str) else None
        if table is None:
            raise NotFound(f"{operation}: {str(document_id)[:40]!r} is not a document id")
        known = self._txn.docs.get(document_id)
        doc = dict(known) if known is not None else await self._fetch(table, document_id)
        if doc is None or not self._in_scope(table, doc) or (table.soft_delete and doc.get("deleted")):
            raise NotFound(f"{operation}: no document with id {document_id!r}")
        return table, doc

    async def _execute(self, sql: str, *params: Any) -> None:
        txn = self._txn
        try:
            if txn.held:
                await txn.flush()
            await txn.conn.execute(sql, *params)
        except asyncpg.UniqueViolationError as error:
            raise UniqueViolation(f"unique index {error.constraint_name}: a live document with this key exists") from error
        except asyncpg.ForeignKeyViolationError as error:
            raise ReferenceViolation(_reference_message(error)) from error

    def _held(self, table: TableSpec, values: Document, write: HeldWrite) -> bool:
        """Hold ``write`` (True) if it can wait for the transaction's next statement or its ``COMMIT``: only
        when the database cannot refuse it for a reason the function could see and handle at the call.

        A unique index could (``UniqueViolation``), an index over JSON or array values could (an entry too
        large), and so could a reference to a document this transaction has not seen (``ReferenceViolation``).
        A referenced document it has seen (its tenant too) exists in its snapshot; if another transaction
        deletes it meanwhile, the commit fails as a serialization conflict and is retried. JSON values are
        copied, so what the function does to its own objects after the call cannot change the write."""
        txn = self._txn
        if table.unique or table.composite_index or len(txn.held) >= _MAX_HELD:
            return False
        docs, tenant, gone = txn.docs, txn.tenant, txn.deleted_ids  # the tenant was read when the scope was resolved
        for key in table.reference_keys:
            value = values.get(key)
            if value is not None and value not in docs and (value != tenant or value in gone):
                return False
        params: list[Any] = []
        size = 0
        for sql_type, value in zip(write.types, write.params, strict=True):
            if isinstance(value, str | bytes):
                size += len(value)
            elif value is not None and sql_type.startswith("jsonb"):
                try:
                    encoded = msgspec.json.encode(value, enc_hook=json_default)
                except (TypeError, msgspec.EncodeError):
                    return False  # sent at the call, which reports it there
                size += len(encoded)
                value = msgspec.json.decode(encoded)  # its own copy, as the database will store it
            elif isinstance(value, list):
                size += sum(len(item) if isinstance(item, str | bytes) else 8 for item in value)
            params.append(value)
        if txn.held_bytes + size > _MAX_HELD_BYTES:
            return False  # large values go as parameters, not as hex in the COMMIT message
        txn.held.append(HeldWrite(write.parts, tuple(params), write.types))
        txn.held_bytes += size
        return True

    def _stamp(self, table: TableSpec, doc: Document, *, created: bool) -> None:
        if table.audited:
            if created:
                doc["createdAt"] = self._txn.now
                doc["createdBy"] = self._txn.actor
            doc["updatedAt"] = self._txn.now
            doc["updatedBy"] = self._txn.actor

    async def _audit(self, table: TableSpec, operation: str, old: Document | None, new: Document | None) -> None:
        if not table.audited:
            return
        audit = self._txn.schema.table("audit_log")
        changed = sorted(
            k for k in set(old or {}) | set(new or {}) if (old or {}).get(k) != (new or {}).get(k)
        )
        doc_id = (new or old or {})["_id"]
        tenant = (new or old or {}).get(table.tenant_key) if table.tenant_key else (doc_id if table.tenant_root else None)
        row: Document = {
            "businessId": tenant,
            "tableName": table.name,
            "documentId": doc_id,
            "operation": operation,
            "actor": self._txn.actor,
            "functionPath": self._txn.function_path,
            "requestId": self._txn.request_id,
            "before": None if old is None else {k: _jsonable(old.get(k)) for k in changed if k in old},
            "after": None if new is None else {k: _jsonable(new.get(k)) for k in changed if k in new},
        }
        await self._insert_row(audit, row)

    async def _insert_row(self, table: TableSpec, fields: Document) -> Document:
        now = self._txn.now
        doc: Document = {
            "_id": ids.new_id(table.number),
            "_creationTime": now.timestamp() * 1000.0,
        }
        doc.update(fields)
        if table.soft_delete:
            doc.update(deleted=False, deletedAt=None, deletedBy=None)
        self._stamp(table, doc, created=True)
        _check_index_entries(table, doc)
        full = {key: doc.get(key) for key in table.keys}
        held = self._held(table, full, HeldWrite(table.insert_parts, tuple(full.values()), table.sql_types))
        if not held:
            await self._execute(table.insert_sql, *full.values())
        self._txn.record_write(Write(table.name, str(full["_id"]), None, full))
        self._txn.saw_in_scope(str(full["_id"]))
        self._txn.remember(full)
        return full

    # -- public API --------------------------------------------------------------------------------------

    async def insert(self, table_name: str, document: Document) -> str:
        """Insert a document and return its id; on a tenant table the tenant field defaults to the scope."""
        txn = self._txn
        table = txn.schema.table(table_name)
        if table.name == "audit_log":
            raise InvalidWrite("audit_log is written by the engine only")
        fields = dict(document)
        if table.tenant_key and not txn.cross_tenant:
            if txn.tenant is None:
                raise TenantViolation(
                    f"table {table.name!r} belongs to a tenant; declare tenant=... on {txn.function_path}"
                )
            given = fields.setdefault(table.tenant_key, txn.tenant)
            if given != txn.tenant:
                raise TenantViolation(f"{table.name}.{table.tenant_key}: cannot write into another tenant")
        if table.tenant_root and not txn.cross_tenant and txn.tenant is not None:
            raise TenantViolation(f"a function scoped to one tenant cannot create another {table.name} row")
        clean = self._check_fields(table, fields, partial=False)
        await self._check_references(table, clean)
        doc = await self._insert_row(table, clean)
        if table.tenant_root and txn.tenant is None and not txn.cross_tenant:
            txn.tenant = doc["_id"]  # the function now works inside the tenant it created
        await self._audit(table, "insert", None, doc)
        return str(doc["_id"])

    async def patch(self, document_id: str, fields: Document) -> None:
        """Change some fields; ``None`` clears a nullable field."""
        table, old = await self._current(document_id, "patch")
        clean = self._check_fields(table, fields, partial=True)
        if table.tenant_key and table.tenant_key in clean and clean[table.tenant_key] != old.get(table.tenant_key):
            raise TenantViolation(f"{table.name}.{table.tenant_key}: a document cannot move to another tenant")
        await self._check_references(table, clean)
        await self._update(table, old, clean, "update")

    async def replace(self, document_id: str, document: Document) -> None:
        """Replace every user field (the engine's fields are kept)."""
        table, old = await self._current(document_id, "replace")
        fields = dict(document)
        if table.tenant_key:
            fields.setdefault(table.tenant_key, old.get(table.tenant_key))
        clean = self._check_fields(table, fields, partial=False)
        for spec in table.columns:
            if not spec.system and spec.key not in clean:
                clean[spec.key] = None
        if table.tenant_key and clean.get(table.tenant_key) != old.get(table.tenant_key):
            raise TenantViolation(f"{table.name}.{table.tenant_key}: a document cannot move to another tenant")
        await self._check_references(table, clean)
        await self._update(table, old, clean, "replace")

    async def delete(self, document_id: str) -> None:
        """Soft-delete on soft-delete tables (``restore`` undoes it); a real DELETE elsewhere."""
        table, old = await self._current(document_id, "delete")
        if table.soft_delete:
            await self._update(
                table, old, {"deleted": True, "deletedAt": self._txn.now, "deletedBy": self._txn.actor}, "delete"
            )
            return
        await self._execute(f"DELETE FROM {_quote(table.name)} WHERE _id = $1", document_id)
        self._txn.record_write(Write(table.name, document_id, old, None))
        self._txn.docs.pop(document_id, None)
        self._txn.deleted_ids.add(document_id)
        await self._audit(table, "delete", old, None)

    async def restore(self, document_id: str) -> None:
        table = self._txn.schema.table_of_id(document_id)
        if table is None or not table.soft_delete:
            raise InvalidWrite(f"restore: {document_id!r} is not in a soft-delete table")
        doc = await self.get(document_id, include_deleted=True)
        if doc is None:
            raise NotFound(f"restore: no document with id {document_id!r}")
        if doc.get("deleted"):
            await self._update(table, doc, {"deleted": False, "deletedAt": None, "deletedBy": None}, "restore")

    async def _update(self, table: TableSpec, old: Document, changes: Document, operation: str) -> None:
        new = dict(old)
        new.update(changes)
        self._stamp(table, new, created=False)
        _check_index_entries(table, new)
        changed = [c for c in table.columns if new.get(c.key) != old.get(c.key) or c.key in changes]
        if changed:
            # UPDATE "t" SET "a" = $1, "b" = $2 WHERE _id = $3
            parts = (f"UPDATE {_quote(table.name)} SET {_quote(changed[0].column)} = ",
                     *(f", {_quote(c.column)} = " for c in changed[1:]), " WHERE _id = ", "")
            write = HeldWrite(parts, (*(new[c.key] for c in changed), old["_id"]),
                              (*(c.sql_type for c in changed), table.fields["_id"].sql_type))
            if not self._held(table, {c.key: new[c.key] for c in changed}, write):
                await self._execute(write.sql, *write.params)
        self._txn.record_write(Write(table.name, old["_id"], old, new))
        self._txn.remember(new)
        await self._audit(table, operation, old, new)


def _reference_message(error: asyncpg.ForeignKeyViolationError) -> str:
    detail = getattr(error, "detail", "") or ""
    if "is still referenced" in detail:
        return f"cannot delete: the document is still referenced from table {getattr(error, 'table_name', '?')!r}"
    return f"a reference points to a document that does not exist ({detail})"
