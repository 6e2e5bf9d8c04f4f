"""Where the database lives: ``DATABASE_URL`` if set, else an embedded PostgreSQL in the data folder.

The embedded server (the ``pgserver`` package) lets a fresh machine run everything with no database
installed; ``stop()`` shuts it down on exit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

__all__ = ["CONNECTION_LOST", "DATABASE_DOWN", "Connection", "Database", "connect_pool", "database_lost_under",
           "init_connection", "json_default", "locate_database"]

#: A plain connection or one borrowed from the pool; both run the same statements.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

log = logging.getLogger("backend.postgres")

#: The connection went away mid-call (a restart, a terminated backend, a broken socket): whether a COMMIT
#: in flight took effect is unknown to this side.
CONNECTION_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                   ConnectionError)
#: What the engine's own database access raises when there is no database to work with right now: lost
#: mid-call, unreachable, refusing connections, or out of them. A client should get 503 and retry, not a 500.
DATABASE_DOWN = (*CONNECTION_LOST, OSError, TimeoutError, asyncpg.TooManyConnectionsError,
                 asyncpg.CannotConnectNowError, asyncpg.InterfaceError)
#: The same, as a function body meets it: only asyncpg's own errors, since a body's OSError may be its own.
_LOST_UNDER_BODY = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                    asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError)


def database_lost_under(error: BaseException) -> bool:
    """Whether a function body failed because PostgreSQL went away under it (the error or what caused it)."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, _LOST_UNDER_BODY):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class Database:
    url: str
    embedded: Any | None = None

    def stop(self) -> None:
        if self.embedded is not None:
            try:
                self.embedded.cleanup()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("stopping the embedded PostgreSQL failed")
            self.embedded = None


def locate_database(data_dir: Path, database: str = "backend") -> Database:
    """``DATABASE_URL`` when set; otherwise start (or reuse) the embedded server in ``data_dir/pg``."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return Database(url)
    import pgserver  # type: ignore[import-untyped,unused-ignore]

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
        str(data_dir / "pg"), cleanup_mode="stop")
    existing = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in existing:
        server.psql(f'CREATE DATABASE "{database}";')
    return Database(server.get_uri(database), server)


def json_default(value: object) -> object:
    """Typed strings and ints (``Id["venues"]``, ``Int64``) are stored as their plain values."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON codecs through msgspec."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind,
            encoder=lambda value: msgspec.json.encode(value, enc_hook=json_default).decode(),
            decoder=msgspec.json.decode,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released pool connection keeps its session as it is (asyncpg still rolls back an open transaction).

    The engine changes no session state on pool connections: every statement runs in a transaction, locks
    are transaction-scoped, and LISTEN, session ``SET`` and cursors live on dedicated connections. asyncpg's
    default reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) would cost one more round
    trip per call, about as much as one of the function's own statements.
    """


async def connect_pool(
    url: str, *, min_size: int = 2, max_size: int = 20, statement_timeout: float = 0.0
) -> asyncpg.Pool:
    """``statement_timeout`` (seconds, 0 = none): PostgreSQL cancels any longer statement on these connections.

    ``idle_in_transaction_session_timeout`` is off on them whatever the server's default: the gate keeps
    connections idle in a begun transaction for the next mutation (``db._pool``), and calls have their own
    time limits."""
    settings = {"idle_in_transaction_session_timeout": "0"}
    if statement_timeout > 0:
        settings["statement_timeout"] = str(round(statement_timeout * 1000))
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=init_connection, server_settings=settings,
        reset=_keep_session)
    assert pool is not None
    return pool
