"""The schema as data: what ``schema.py`` declares, resolved into specs the engine works from."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from piccolo import columns as pc
from piccolo.table import Table

from .. import ids
from ..errors import SchemaError
from ..validators import Instant, camel

__all__ = ["Document", "FieldSpec", "Index", "IndexSpec", "Schema", "TableSpec", "Tenancy", "define_schema"]


@dataclass(frozen=True)
class Index:
    """An index over document fields (snake or camel names); ``unique`` makes it a constraint too."""

    name: str
    fields: tuple[str, ...]
    unique: bool = False

    def __init__(self, name: str, *fields: str, unique: bool = False) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "unique", unique)


class Document(Table):  # type: ignore[misc]
    """Base of every table in ``schema.py``; class keywords carry the engine's per-table options."""

    _options: ClassVar[dict[str, Any]] = {}
    indexes: ClassVar[list[Index]] = []  # type: ignore[assignment]

    def __init_subclass__(
        cls,
        *,
        tenant: str | None = None,
        tenant_root: bool = False,
        audited: bool = False,
        soft_delete: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls._options = {
            "tenant": tenant,
            "tenant_root": tenant_root,
            "audited": audited,
            "soft_delete": soft_delete,
        }


Checker = Callable[[Any, str], Any]


@dataclass(frozen=True)
class FieldSpec:
    """One stored field: its document key (camelCase), column and value rule."""

    key: str
    column: str
    sql_type: str
    nullable: bool
    check: Checker
    references: str | None = None
    system: bool = False


@dataclass(frozen=True)
class IndexSpec:
    """A real PostgreSQL index; ``keys`` is the full key order, ending with ``_creationTime`` and ``_id``."""

    name: str
    keys: tuple[str, ...]
    unique: bool
    user_fields: tuple[str, ...]
    partial_on_live: bool


@dataclass
class TableSpec:
    name: str
    number: int
    fields: dict[str, FieldSpec]
    indexes: dict[str, IndexSpec]
    tenant_key: str | None
    tenant_root: bool
    audited: bool
    soft_delete: bool

    # Derived once per table (a schema is never changed in place; a reload builds new specs): the hot path
    # reads them for every row and statement.
    @functools.cached_property
    def columns(self) -> tuple[FieldSpec, ...]:
        return tuple(self.fields.values())

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        """Field keys in column order: a row's values zip onto them."""
        return tuple(f.key for f in self.columns)

    @functools.cached_property
    def select_list(self) -> str:
        return ", ".join(f'"{f.column}"' for f in self.columns)

    @functools.cached_property
    def insert_parts(self) -> tuple[str, ...]:
        """``INSERT`` of every column: its text around the parameters, which come in column order (filled
        with ``$n`` in ``insert_sql``, or with literals in a commit message)."""
        head = f'INSERT INTO "{self.name}" ({self.select_list}) VALUES ('
        return (head, *([", "] * (len(self.columns) - 1)), ")")

    @functools.cached_property
    def insert_sql(self) -> str:
        head, *rest = self.insert_parts
        return head + "".join(f"${number}{part}" for number, part in enumerate(rest, start=1))

    @functools.cached_property
    def sql_types(self) -> tuple[str, ...]:
        """Column types in column order."""
        return tuple(f.sql_type for f in self.columns)

    @functools.cached_property
    def unique(self) -> bool:
        """Whether a write can break a unique index of this table (the primary key aside: ids are random and
        never change)."""
        return any(index.unique for name, index in self.indexes.items() if name != "by_id")

    @functools.cached_property
    def composite_index(self) -> bool:
        """Whether an index covers a JSON or array field (whose entry size a write cannot check up front)."""
        return any(self.fields[key].sql_type.startswith("jsonb") or self.fields[key].sql_type.endswith("[]")
                   for index in self.indexes.values() for key in index.keys)

    @functools.cached_property
    def reference_keys(self) -> tuple[str, ...]:
        """Fields that hold ids of other documents (each a foreign key in PostgreSQL)."""
        return tuple(f.key for f in self.columns if f.references is not None)

    def index(self, name: str) -> IndexSpec:
        try:
            return self.indexes[name]
        except KeyError:
            known = ", ".join(sorted(self.indexes))
            raise SchemaError(f"table {self.name!r} has no index {name!r} (indexes: {known})") from None

    def column_of(self, key: str) -> str:
        return self.fields[key].column


@dataclass(frozen=True)
class Tenancy:
    """Where the engine finds tenants and memberships (used by ``tenant=`` functions)."""

    root_table: str = "businesses"
    members_table: str = "members"
    member_tenant_key: str = "businessId"
    member_subject_key: str = "subject"
    member_role_key: str = "role"
    member_status_key: str = "status"
    active_status: str = "active"


@dataclass
class Schema:
    tables: dict[str, TableSpec]
    tenancy: Tenancy | None = None
    by_number: dict[int, TableSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_number = {spec.number: spec for spec in self.tables.values()}

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(f"no table named {name!r} in the schema") from None

    def table_of_id(self, document_id: str) -> TableSpec | None:
        number = ids.decode_table_number(document_id)
        return None if number is None else self.by_number.get(number)


# -- value rules -----------------------------------------------------------------------------------------


def _check_unicode(value: str, path: str) -> None:
    """PostgreSQL stores UTF-8: a lone surrogate (which JSON's ``\ud800`` escapes can make) has no encoding."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SchemaError(f"{path}: strings must be valid Unicode (a lone surrogate at index {error.start})") from None


def _check_text(value: Any, path: str) -> Any:
    if not isinstance(value, str):
        raise SchemaError(f"{path}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise SchemaError(f"{path}: strings may not contain NUL characters")
    _check_unicode(value, path)
    return str(value)  # typed strings (TimeZone, LocalDate, ...) are stored as plain text


def _check_int(value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SchemaError(f"{path}: expected an integer, got {type(value).__name__}")
    if not -(1 << 63) <= value < (1 << 63):
        raise SchemaError(f"{path}: integer out of the 64-bit range")
    return int(value)


def _check_float(value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{path}: expected a number, got {type(value).__name__}")
    return float(value)


def _check_bool(value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        raise SchemaError(f"{path}: expected a boolean, got {type(value).__name__}")
    return value


def _check_instant(value: Any, path: str) -> Any:
    if isinstance(value, str):
        try:
            value = Instant._validate(value).to_datetime()
        except ValueError as error:
            raise SchemaError(f"{path}: {error}") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise SchemaError(f"{path}: expected an aware datetime or an ISO 8601 instant")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise SchemaError(f"{path}: the instant is outside the calendar in UTC") from None


def _check_date(value: Any, path: str) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise SchemaError(f"{path}: expected a date YYYY-MM-DD") from None
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise SchemaError(f"{path}: expected a date")
    return value


def _check_bytes(value: Any, path: str) -> Any:
    if not isinstance(value, bytes | bytearray):
        raise SchemaError(f"{path}: expected bytes, got {type(value).__name__}")
    return bytes(value)


def _check_json(value: Any, path: str) -> Any:
    def walk(item: Any, where: str) -> None:
        if isinstance(item, str):
            if "\x00" in item:
                raise SchemaError(f"{where}: strings may not contain NUL characters")
            _check_unicode(item, where)
        if item is None or isinstance(item, bool | str | int):
            return
        if isinstance(item, float):
            if not math.isfinite(item):
                raise SchemaError(f"{where}: JSON fields cannot hold NaN or Infinity")
            return
        if isinstance(item, list | tuple):
            for i, inner in enumerate(item):
                walk(inner, f"{where}[{i}]")
            return
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise SchemaError(f"{where}: object keys must be strings")
                _check_unicode(key, f"{where} (a key)")
                walk(inner, f"{where}.{key}")
            return
        raise SchemaError(f"{where}: {type(item).__name__} cannot be stored in a JSON field")

    walk(value, path)
    return value


def _check_reference(target: str) -> Checker:
    number = ids.table_number(target)

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, str) or ids.decode_table_number(value) != number:
            raise SchemaError(f"{path}: expected an id of table {target!r}")
        return str(value)  # an ``Id["..."]`` argument is stored as a plain string

    return check


def _check_array(inner: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise SchemaError(f"{path}: expected an array, got {type(value).__name__}")
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


_SCALARS: list[tuple[tuple[type[Any], ...], str, Checker]] = [
    ((pc.Varchar, pc.Text, pc.Email, pc.Secret), 'text COLLATE "C"', _check_text),
    ((pc.BigInt, pc.Integer, pc.SmallInt), "bigint", _check_int),
    ((pc.DoublePrecision, pc.Real, pc.Float, pc.Numeric), "double precision", _check_float),
    ((pc.Boolean,), "boolean", _check_bool),
    ((pc.Timestamptz,), "timestamptz", _check_instant),
    ((pc.Date,), "date", _check_date),
    ((pc.JSONB, pc.JSON), "jsonb", _check_json),
    ((pc.Bytea,), "bytea", _check_bytes),
]


def _column_rule(column: pc.Column, where: str) -> tuple[str, Checker, str | None]:
    if isinstance(column, pc.ForeignKey):
        target = column._foreign_key_meta.resolved_references._meta.tablename
        return 'text COLLATE "C"', _check_reference(target), target
    if isinstance(column, pc.Array):
        sql, inner, _ = _column_rule(column.base_column, where)
        base = sql.replace(' COLLATE "C"', "")
        return f"{base}[]", _check_array(inner), None
    for kinds, sql, check in _SCALARS:
        if isinstance(column, kinds):
            return sql, check, None
    raise SchemaError(f"{where}: column type {type(column).__name__} is not supported")


def _system_fields(audited: bool, soft_delete: bool) -> list[FieldSpec]:
    fields = [
        FieldSpec("_id", "_id", 'text COLLATE "C"', False, _check_text, system=True),
        FieldSpec("_creationTime", "_creation_time", "double precision", False, _check_float, system=True),
    ]
    if audited:
        fields += [
            FieldSpec("createdAt", "created_at", "timestamptz", True, _check_instant, system=True),
            FieldSpec("createdBy", "created_by", 'text COLLATE "C"', True, _check_text, system=True),
            FieldSpec("updatedAt", "updated_at", "timestamptz", True, _check_instant, system=True),
            FieldSpec("updatedBy", "updated_by", 'text COLLATE "C"', True, _check_text, system=True),
        ]
    if soft_delete:
        fields += [
            FieldSpec("deleted", "deleted", "boolean", False, _check_bool, system=True),
            FieldSpec("deletedAt", "deleted_at", "timestamptz", True, _check_instant, system=True),
            FieldSpec("deletedBy", "deleted_by", 'text COLLATE "C"', True, _check_text, system=True),
        ]
    return fields


def _table_spec(table: type[Document]) -> TableSpec:
    name = table._meta.tablename
    options = table._options
    fields = {f.key: f for f in _system_fields(options["audited"], options["soft_delete"])}
    for column in table._meta.columns:
        if column._meta.primary_key:
            continue
        key = camel(column._meta.name)
        where = f"{name}.{key}"
        if key in fields:
            raise SchemaError(f"{where}: the name is reserved by the engine")
        sql, check, references = _column_rule(column, where)
        fields[key] = FieldSpec(key, column._meta.db_column_name, sql, bool(column._meta.null), check, references)
    tenant_key = camel(options["tenant"]) if options["tenant"] else None
    if tenant_key is not None and tenant_key not in fields:
        raise SchemaError(f"table {name!r}: tenant field {tenant_key!r} is not a field of the table")
    prefix: tuple[str, ...] = (tenant_key,) if tenant_key else ()
    indexes: dict[str, IndexSpec] = {
        "by_id": IndexSpec("by_id", ("_id",), True, (), False),
        "by_creation_time": IndexSpec(
            "by_creation_time", (*prefix, "_creationTime", "_id"), False, (), options["soft_delete"]
        ),
    }
    for declared in table.indexes:
        keys = tuple(camel(f) for f in declared.fields)
        for key in keys:
            if key not in fields:
                raise SchemaError(f"table {name!r}, index {declared.name!r}: unknown field {key!r}")
        if declared.name in indexes:
            raise SchemaError(f"table {name!r}: duplicate index name {declared.name!r}")
        full = prefix + tuple(k for k in keys if k not in prefix)
        indexes[declared.name] = IndexSpec(
            declared.name, (*full, "_creationTime", "_id"), declared.unique, full, options["soft_delete"]
        )
    return TableSpec(
        name=name,
        number=ids.table_number(name),
        fields=fields,
        indexes=indexes,
        tenant_key=tenant_key,
        tenant_root=bool(options["tenant_root"]),
        audited=bool(options["audited"]),
        soft_delete=bool(options["soft_delete"]),
    )


def define_schema(tables: Iterable[type[Document]], tenancy: Tenancy | None = None) -> Schema:
    """Resolve the declared tables into a ``Schema``; every mistake is a ``SchemaError`` naming it."""
    from ._builtin import AuditLog

    declared = list(tables)
    if any(t._options["audited"] for t in declared) and AuditLog not in declared:
        declared.append(AuditLog)
    specs: dict[str, TableSpec] = {}
    numbers: dict[int, str] = {}
    for table in declared:
        spec = _table_spec(table)
        if spec.name in specs:
            raise SchemaError(f"table {spec.name!r} is declared twice")
        if spec.number in numbers:
            raise SchemaError(f"tables {spec.name!r} and {numbers[spec.number]!r} share an id prefix; rename one")
        if spec.name.startswith("_"):
            raise SchemaError(f"table {spec.name!r}: names starting with '_' are reserved by the engine")
        specs[spec.name] = spec
        numbers[spec.number] = spec.name
    for spec in specs.values():
        for f in spec.fields.values():
            if f.references is not None and f.references not in specs:
                raise SchemaError(f"{spec.name}.{f.key} references {f.references!r}, which is not in the schema")
    return Schema(specs, tenancy)


def reference_map(schema: Schema) -> Mapping[str, list[tuple[str, str]]]:
    """For each table, the (table, field) pairs that reference it."""
    result: dict[str, list[tuple[str, str]]] = {name: [] for name in schema.tables}
    for spec in schema.tables.values():
        for f in spec.fields.values():
            if f.references is not None:
                result[f.references].append((spec.name, f.key))
    return result
