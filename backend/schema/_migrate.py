"""Bring PostgreSQL in line with the schema: create what is missing, refuse what would destroy data.

Additive changes (new tables, nullable columns, indexes) are applied at start. A dropped column, a changed
type or a new NOT NULL column on a table that has rows needs a migration: a module in ``migrations/`` with
``async def up(conn)``, applied once, in name order. Migrations change existing data, so:

- on an existing database, tables new in the schema are created first (a migration may fill them), then the
  pending migrations run, then the schema is compared and the rest applied;
- on a fresh database (none of the schema's tables exist) the schema is created as declared and every
  migration is recorded as applied without running: there is no data for them to change.

Everything happens in one transaction, so a refused change leaves the database as it was.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..errors import SchemaError
from ..postgres import Connection
from ..scheduler._ddl import SCHEDULER_DDL
from ._spec import IndexSpec, Schema, TableSpec

__all__ = ["SYSTEM_DDL", "apply_migrations", "apply_schema", "index_name"]

SYSTEM_DDL = [
    """CREATE TABLE IF NOT EXISTS _commit_log (
        xid xid8 PRIMARY KEY,
        summary bytea NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS _commit_log_committed_at ON _commit_log (committed_at)",
    """CREATE TABLE IF NOT EXISTS _session_requests (
        session_id text NOT NULL,
        request_id bigint NOT NULL,
        result bytea NOT NULL,
        log_lines bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session_id, request_id))""",
    "CREATE INDEX IF NOT EXISTS _session_requests_created_at ON _session_requests (created_at)",
    # Who made the request and which function it called: a replay is answered only for the same pair.
    # Added, not created above, so databases made before they existed gain them at start.
    "ALTER TABLE _session_requests ADD COLUMN IF NOT EXISTS identity text, "
    "ADD COLUMN IF NOT EXISTS function_path text",
    "CREATE TABLE IF NOT EXISTS _clock (id int PRIMARY KEY, ts bigint NOT NULL)",
    "INSERT INTO _clock (id, ts) VALUES (1, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS _migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    *SCHEDULER_DDL,
]

_LOCK_KEY = 0x7E57_AB1E


def index_name(table: TableSpec, index: IndexSpec) -> str:
    return f"{table.name}__{index.name}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_ddl(table: TableSpec) -> list[str]:
    parts = []
    for f in table.columns:
        line = f"{_quote(f.column)} {f.sql_type}"
        if f.key == "_id":
            line += " PRIMARY KEY"
        elif f.key == "deleted":
            line += " NOT NULL DEFAULT false"
        elif not f.nullable:
            line += " NOT NULL"
        parts.append(line)
    return parts


def _index_ddl(table: TableSpec, index: IndexSpec) -> str | None:
    if index.name == "by_id":
        return None
    columns = ", ".join(_quote(table.column_of(k)) for k in index.keys)
    if index.unique:
        columns = ", ".join(_quote(table.column_of(k)) for k in index.user_fields)
    where = " WHERE NOT deleted" if index.unique and index.partial_on_live else ""
    unique = "UNIQUE " if index.unique else ""
    return (
        f"CREATE {unique}INDEX IF NOT EXISTS {_quote(index_name(table, index))} "
        f"ON {_quote(table.name)} ({columns}){where}"
    )


def _migration_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9]*.py")) if folder.is_dir() else []


async def apply_migrations(conn: Connection, folder: Path, *, record_only: bool = False) -> list[str]:
    """Run the not-yet-applied ``migrations/*.py`` modules, each in its own transaction (or savepoint);
    ``record_only``: mark them applied without running them (a fresh database has nothing to migrate)."""
    applied: list[str] = []
    done = {r["name"] for r in await conn.fetch("SELECT name FROM _migrations")}
    for path in _migration_files(folder):
        if path.stem in done:
            continue
        if record_only:
            await conn.execute("INSERT INTO _migrations (name) VALUES ($1)", path.stem)
            applied.append(path.stem)
            continue
        spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise SchemaError(f"migration {path.name} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        async with conn.transaction():
            await module.up(conn)
            await conn.execute("INSERT INTO _migrations (name) VALUES ($1)", path.stem)
        applied.append(path.stem)
    return applied


async def _existing_columns(conn: Connection, table: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT column_name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable
           FROM information_schema.columns c
           JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(c.table_name)) AND a.attname = c.column_name
           WHERE c.table_schema = current_schema() AND c.table_name = $1""",
        table,
    )
    return {r["column_name"]: dict(r) for r in rows}


def _same_type(declared: str, existing: str) -> bool:
    plain = declared.replace(' COLLATE "C"', "").replace("timestamptz", "timestamp with time zone")
    return plain == existing


async def apply_schema(conn: Connection, schema: Schema, migrations: Path | None = None) -> list[str]:
    """Create or extend every table and index; return the statements that ran."""
    ran: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        for statement in SYSTEM_DDL:
            await conn.execute(statement)
        if migrations is not None and _migration_files(migrations):
            missing = [t for t in schema.tables.values() if not await _existing_columns(conn, t.name)]
            fresh = len(missing) == len(schema.tables)
            if not fresh:
                for table in missing:  # new tables first: a migration may fill them from old ones
                    ran += await _apply_table(conn, table)
                for table in missing:
                    ran += await _apply_references(conn, table)
            await apply_migrations(conn, migrations, record_only=fresh)
        for table in schema.tables.values():
            ran += await _apply_table(conn, table)
        for table in schema.tables.values():
            ran += await _apply_references(conn, table)
    return ran


async def _apply_table(conn: Connection, table: TableSpec) -> list[str]:
    ran: list[str] = []
    existing = await _existing_columns(conn, table.name)
    if not existing:
        statement = f"CREATE TABLE {_quote(table.name)} ({', '.join(_column_ddl(table))})"
        await conn.execute(statement)
        ran.append(statement)
    else:
        declared = {f.column: f for f in table.columns}
        dropped = sorted(set(existing) - set(declared))
        if dropped:
            raise SchemaError(
                f"table {table.name!r}: columns {dropped} exist in the database but not in the schema; "
                "write a migration that drops or renames them"
            )
        has_rows = await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_quote(table.name)})")
        for f in table.columns:
            if f.column in existing:
                if not _same_type(f.sql_type, existing[f.column]["type"]):
                    raise SchemaError(
                        f"{table.name}.{f.key}: type changed from {existing[f.column]['type']} to "
                        f"{f.sql_type}; write a migration"
                    )
                continue
            needs_value = not f.nullable and f.key != "deleted"
            if needs_value and has_rows:
                raise SchemaError(
                    f"{table.name}.{f.key}: a new required field on a table with rows needs a migration "
                    "(or declare it null=True)"
                )
            default = " NOT NULL DEFAULT false" if f.key == "deleted" else (" NOT NULL" if needs_value else "")
            statement = f"ALTER TABLE {_quote(table.name)} ADD COLUMN {_quote(f.column)} {f.sql_type}{default}"
            await conn.execute(statement)
            ran.append(statement)
    wanted = {index_name(table, i) for i in table.indexes.values() if i.name != "by_id"}
    present = {
        r["indexname"]
        for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1", table.name
        )
    }
    for stale in sorted(n for n in present if n.startswith(f"{table.name}__") and n not in wanted):
        statement = f"DROP INDEX {_quote(stale)}"
        await conn.execute(statement)
        ran.append(statement)
    for index in table.indexes.values():
        ddl = _index_ddl(table, index)
        if ddl is not None and index_name(table, index) not in present:
            await conn.execute(ddl)
            ran.append(ddl)
    return ran


async def _apply_references(conn: Connection, table: TableSpec) -> list[str]:
    ran: list[str] = []
    for f in table.columns:
        if f.references is None:
            continue
        name = f"{table.name}__{f.column}__fk"
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1)", name)
        if exists:
            continue
        statement = (
            f"ALTER TABLE {_quote(table.name)} ADD CONSTRAINT {_quote(name)} FOREIGN KEY ({_quote(f.column)}) "
            f"REFERENCES {_quote(f.references)} (_id) ON DELETE RESTRICT"
        )
        await conn.execute(statement)
        ran.append(statement)
    return ran
