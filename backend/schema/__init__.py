"""Tables, fields and indexes, declared once in ``schema.py`` with piccolo columns.

>>> class Venues(Document, tablename="venues", tenant="business_id", audited=True, soft_delete=True):
...     business_id = ForeignKey(Businesses)
...     name = Varchar()
...     indexes = [Index("by_name", "name")]

Every document has ``_id`` (an opaque id that encodes its table) and ``_creationTime`` (ms since the epoch).
On a tenant table every index starts with the tenant field, added by the engine, so every read of a tenant
scope is an index range bounded by the tenant. Audited tables get ``createdAt/By`` and ``updatedAt/By``;
soft-delete tables get ``deleted``, ``deletedAt`` and ``deletedBy``, and their unique indexes ignore deleted rows.
"""

from __future__ import annotations

from ._spec import (
    Document,
    FieldSpec,
    Index,
    IndexSpec,
    Schema,
    TableSpec,
    Tenancy,
    define_schema,
)

__all__ = ["Document", "FieldSpec", "Index", "IndexSpec", "Schema", "TableSpec", "Tenancy", "define_schema"]
