"""The backend as one object: database, schema, functions, runner, live queries; started and stopped together."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from . import knobs
from .auth import AuthConfig, AuthFailed, TokenVerifier, UserIdentity
from .clock import Clock, SystemClock
from .errors import Unauthenticated
from .logs import capture_print, limit_engine_logs
from .postgres import Database, connect_pool, locate_database
from .registry import Registry, load_functions
from .runner import Runner
from .schema import Schema
from .schema._migrate import apply_schema

__all__ = ["Backend", "BackendConfig", "load_schema"]

log = logging.getLogger("backend")


def load_schema(module: str = "schema") -> Schema:
    loaded = importlib.import_module(module)
    schema = getattr(loaded, "schema", None)
    if not isinstance(schema, Schema):
        raise TypeError(f"{module}.py must define `schema = define_schema([...])`")
    return schema


@dataclass
class BackendConfig:
    data_dir: Path = Path(".data")
    database_url: str | None = None
    functions_package: str = "functions"
    schema_module: str = "schema"
    migrations_dir: Path | None = Path("migrations")
    clock: Clock = field(default_factory=SystemClock)
    run_scheduler: bool = True
    auth: AuthConfig | None = None
    include_testing_functions: bool = False
    #: Development: callers see an unexpected exception's message (production: only its request id).
    dev: bool = False
    #: The dashboard's admin key (``BACKEND_ADMIN_KEY``); without it ``serve`` keeps the dashboard closed.
    admin_key: str | None = field(default_factory=lambda: os.environ.get("BACKEND_ADMIN_KEY") or None)
    #: Static files served at ``/`` (the booking web app), relative to the working directory like schema.py.
    web_dir: Path | None = Path("web")


class Backend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.database: Database | None = None
        self.pool: asyncpg.Pool | None = None
        self.schema: Schema = load_schema(config.schema_module)
        self.registry: Registry = load_functions(
            config.functions_package, include_testing=config.include_testing_functions or None
        )
        self.verifier = TokenVerifier(config.auth or AuthConfig.from_env(config.data_dir))
        self._runner: Runner | None = None
        self.hub: Any = None
        self.scheduler: Any = None
        self.sessions: set[Any] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        #: Called with this backend after the dev server starts and after each good reload (``backend.dev``).
        self.on_reload: list[Callable[[Backend], Any]] = []

    @property
    def runner(self) -> Runner:
        assert self._runner is not None, "backend not started"
        return self._runner

    @property
    def url(self) -> str:
        assert self.database is not None
        return self.database.url

    def verify_token(self, token: str) -> UserIdentity:
        try:
            return self.verifier.verify(token)
        except AuthFailed as error:
            raise Unauthenticated(f"{error.code}: {error.message}") from None

    async def start(self) -> None:
        capture_print()
        limit_engine_logs()
        if self.config.database_url:
            self.database = Database(self.config.database_url)
        else:
            self.database = await asyncio.to_thread(locate_database, self.config.data_dir)
        self.pool = await connect_pool(self.database.url, max_size=knobs.POOL_MAX_SIZE,
                                       statement_timeout=knobs.STATEMENT_TIMEOUT_SECONDS)
        async with self.pool.acquire() as conn:
            # Building an index may take long. The pool keeps session state on release, so the connection's
            # own limit (from its startup settings) is restored here, or one pool connection would keep none.
            await conn.execute("SET statement_timeout = 0")
            await apply_schema(conn, self.schema, self.config.migrations_dir)  # a failure here ends the start
            await conn.execute("RESET statement_timeout")
        self._runner = Runner(self.pool, self.schema, self.registry, clock=self.config.clock)
        self._runner.expose_errors = self.config.dev
        from .reactive.hub import Hub

        self.hub = Hub(self)
        await self.hub.start()
        self._runner.on_commit = self.hub.poke_local
        try:
            from .scheduler.service import Scheduler  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # pragma: no cover - scheduler not installed
            return
        self.scheduler = Scheduler(self)
        self._runner.scheduler_factory = self.scheduler.handle
        await self.scheduler.start(run=self.config.run_scheduler)

    def drop_connections(self, reason: str = "InternalServerError: connection dropped by the server") -> int:
        """Close every sync socket from the server side; clients reconnect and resubscribe."""
        sessions = list(self.sessions)
        for session in sessions:
            session.drop(1011, reason)
        return len(sessions)

    async def stop(self) -> None:
        self.drop_connections("InternalServerError: server shutting down")
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.hub is not None:
            await self.hub.stop()
        if self._runner is not None:
            await self._runner.gate.close()  # gives back the connections it keeps begun
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.database is not None:
            self.database.stop()

    async def healthy(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        return True
