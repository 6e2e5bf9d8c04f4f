"""The schema becomes real PostgreSQL tables and indexes; destructive changes need a migration."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from piccolo.columns import ForeignKey, Integer, Varchar

from backend.errors import SchemaError
from backend.postgres import init_connection
from backend.schema import Document, Index, define_schema
from backend.schema._migrate import apply_schema
from backend.testing import create_database, drop_database


class Owner(Document, tablename="mig_owners"):
    name = Varchar()


class ThingV1(Document, tablename="mig_things", soft_delete=True):
    owner_id = ForeignKey(Owner, null=False)
    label = Varchar()
    size = Integer()
    indexes = [Index("by_label", "label", unique=True), Index("by_owner_size", "owner_id", "size")]


class ThingV2(Document, tablename="mig_things", soft_delete=True):
    owner_id = ForeignKey(Owner, null=False)
    label = Varchar()
    size = Integer()
    colour = Varchar(null=True)
    indexes = [Index("by_label", "label", unique=True), Index("by_colour", "colour")]


class ThingDropped(Document, tablename="mig_things", soft_delete=True):
    owner_id = ForeignKey(Owner, null=False)
    label = Varchar()
    colour = Varchar(null=True)


class ThingRequired(Document, tablename="mig_things", soft_delete=True):
    owner_id = ForeignKey(Owner, null=False)
    label = Varchar()
    size = Integer()
    colour = Varchar(null=True)
    weight = Integer()


@pytest.fixture
async def conn() -> asyncpg.Connection:
    url = await create_database("mig")
    connection = await asyncpg.connect(url)
    await init_connection(connection)
    yield connection
    await connection.close()
    await drop_database(url)


async def indexes(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mig_things'")
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_tables_indexes_and_references_are_real(conn: asyncpg.Connection) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV1]))
    found = await indexes(conn)
    assert "mig_things__by_owner_size" in found
    assert "owner_id, size, _creation_time, _id" in found["mig_things__by_owner_size"]
    assert "UNIQUE" in found["mig_things__by_label"] and "WHERE (NOT deleted)" in found["mig_things__by_label"]
    fk = await conn.fetchval("SELECT confdeltype::text FROM pg_constraint WHERE conname = 'mig_things__owner_id__fk'")
    assert fk == "r"  # ON DELETE RESTRICT: no silent cascades
    # applying the same schema again changes nothing
    assert await apply_schema(conn, define_schema([Owner, ThingV1])) == []


async def test_additive_changes_apply_and_stale_indexes_go(conn: asyncpg.Connection) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV1]))
    await conn.execute("INSERT INTO mig_owners (_id, _creation_time, name) VALUES ('o', 0, 'x')")
    await conn.execute("INSERT INTO mig_things (_id, _creation_time, owner_id, label, size) VALUES ('t', 0, 'o', 'a', 1)")
    ran = await apply_schema(conn, define_schema([Owner, ThingV2]))
    assert any("ADD COLUMN \"colour\"" in s for s in ran)
    found = await indexes(conn)
    assert "mig_things__by_colour" in found and "mig_things__by_owner_size" not in found


async def test_destructive_changes_are_refused(conn: asyncpg.Connection) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV2]))
    await conn.execute("INSERT INTO mig_owners (_id, _creation_time, name) VALUES ('o', 0, 'x')")
    await conn.execute("INSERT INTO mig_things (_id, _creation_time, owner_id, label, size) VALUES ('t', 0, 'o', 'a', 1)")
    with pytest.raises(SchemaError, match=r"columns \['size'\] exist in the database but not in the schema"):
        await apply_schema(conn, define_schema([Owner, ThingDropped]))
    with pytest.raises(SchemaError, match=r"mig_things\.weight: a new required field on a table with rows needs a migration"):
        await apply_schema(conn, define_schema([Owner, ThingRequired]))


async def test_a_migration_makes_the_destructive_change(conn: asyncpg.Connection, tmp_path: Path) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV2]))
    (tmp_path / "0001_drop_size.py").write_text(
        "async def up(conn):\n    await conn.execute('ALTER TABLE mig_things DROP COLUMN size')\n"
    )
    await apply_schema(conn, define_schema([Owner, ThingDropped]), tmp_path)
    columns = {r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'mig_things'")}
    assert "size" not in columns
    assert await conn.fetchval("SELECT count(*) FROM _migrations WHERE name = '0001_drop_size'") == 1


class Tag(Document, tablename="mig_tags"):
    thing_id = ForeignKey(ThingV2, null=False)
    size = Integer()


def drop_size_migration(folder: Path) -> None:
    (folder / "0001_drop_size.py").write_text(
        "async def up(conn):\n    await conn.execute('ALTER TABLE mig_things DROP COLUMN size')\n"
    )


async def test_migrations_on_a_fresh_database_are_recorded_not_run(conn: asyncpg.Connection, tmp_path: Path) -> None:
    drop_size_migration(tmp_path)  # refers to a column a fresh database never had
    ran = await apply_schema(conn, define_schema([Owner, ThingDropped]), tmp_path)
    assert any(s.startswith('CREATE TABLE "mig_things"') for s in ran)
    assert await conn.fetchval("SELECT count(*) FROM _migrations WHERE name = '0001_drop_size'") == 1
    (tmp_path / "0002_fill.py").write_text(
        "async def up(conn):\n    await conn.execute(\"INSERT INTO mig_owners (_id, _creation_time, name) "
        "VALUES ('from-0002', 0, 'x')\")\n"
    )
    await apply_schema(conn, define_schema([Owner, ThingDropped]), tmp_path)  # an existing database: it runs
    assert await conn.fetchval("SELECT name FROM mig_owners WHERE _id = 'from-0002'") == "x"


async def test_a_migration_can_fill_a_table_new_in_the_schema(conn: asyncpg.Connection, tmp_path: Path) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV2]))
    await conn.execute("INSERT INTO mig_owners (_id, _creation_time, name) VALUES ('o', 0, 'x')")
    await conn.execute("INSERT INTO mig_things (_id, _creation_time, owner_id, label, size) VALUES ('t', 0, 'o', 'a', 3)")
    (tmp_path / "0001_sizes_to_tags.py").write_text(
        "async def up(conn):\n"
        "    await conn.execute(\"INSERT INTO mig_tags (_id, _creation_time, thing_id, size) "
        "SELECT 'tag-' || _id, 0, _id, size FROM mig_things\")\n"
        "    await conn.execute('ALTER TABLE mig_things DROP COLUMN size')\n"
    )

    class ThingMoved(Document, tablename="mig_things", soft_delete=True):
        owner_id = ForeignKey(Owner, null=False)
        label = Varchar()
        colour = Varchar(null=True)

    await apply_schema(conn, define_schema([Owner, ThingMoved, Tag]), tmp_path)
    assert await conn.fetchval("SELECT size FROM mig_tags WHERE thing_id = 't'") == 3


async def test_a_refused_change_leaves_the_database_as_it_was(conn: asyncpg.Connection) -> None:
    await apply_schema(conn, define_schema([Owner, ThingV2]))
    await conn.execute("INSERT INTO mig_owners (_id, _creation_time, name) VALUES ('o', 0, 'x')")
    await conn.execute("INSERT INTO mig_things (_id, _creation_time, owner_id, label, size) VALUES ('t', 0, 'o', 'a', 1)")
    with pytest.raises(SchemaError, match="columns"):
        await apply_schema(conn, define_schema([Owner, ThingDropped, Tag]))
    assert await conn.fetchval("SELECT to_regclass('mig_tags')") is None
