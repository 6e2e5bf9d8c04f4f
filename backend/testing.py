"""A test harness for application authors: a throwaway database, a real server, a controllable clock.

>>> async with TestBackend() as tb:
...     business = await tb.mutation("businesses:create", {"name": "Yoga", "timezone": "UTC"}, as_user="ann")

``TestBackend`` creates a fresh database on ``DATABASE_URL``'s server (or on an embedded PostgreSQL in
``.data/test-pg`` when it is unset), applies the schema, starts the engine and serves HTTP and the sync
WebSocket on a free loopback port, so official clients can connect to ``tb.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .auth import AuthConfig, UserIdentity, mint_dev_token
from .auth._dev import DEV_ISSUER
from .clock import Clock, ManualClock, SystemClock
from .runner import Outcome
from .server import Backend, BackendConfig

__all__ = ["ManualClock", "TestBackend", "free_port", "server_url"]

TEST_SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_embedded: Any = None


def server_url() -> str:
    """A URL of a PostgreSQL server to make test databases on (DATABASE_URL, or an embedded one)."""
    global _embedded
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if _embedded is None:
        import pgserver

        folder = Path(os.environ.get("BACKEND_TEST_PGDATA", ".data/test-pg")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        _embedded = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            str(folder), cleanup_mode="stop")
    uri: str = _embedded.get_uri()
    return uri


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def create_database(prefix: str = "test") -> str:
    base = server_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(base, name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(server_url())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class TestBackend:
    """A started backend on a fresh database, served on a free port."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        database_url: str | None = None,
        serve: bool = True,
        run_scheduler: bool = True,
        auth: AuthConfig | None = None,
        dev: bool = False,
        admin_key: str | None = None,
    ) -> None:
        """``dev``: serve as ``python -m backend dev`` does (dashboard open on loopback, demo sign-in);
        ``admin_key``: the dashboard's ``BACKEND_ADMIN_KEY`` (the environment's is never used here)."""
        self.clock = clock or SystemClock()
        self.auth = auth or AuthConfig(hs256_secret=TEST_SECRET)
        self._given_url = database_url
        self.database_url = database_url or ""
        self.serve = serve
        self.run_scheduler = run_scheduler
        self.dev = dev
        self.admin_key = admin_key
        self.backend: Backend | None = None
        self.port = 0
        self._server: Any = None
        self._server_task: asyncio.Task[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TestBackend:
        if not self._given_url:
            self.database_url = await create_database()
        config = BackendConfig(
            database_url=self.database_url,
            clock=self.clock,
            run_scheduler=self.run_scheduler,
            auth=self.auth,
            migrations_dir=None,
            include_testing_functions=True,
            dev=self.dev,
            admin_key=self.admin_key,
        )
        self.backend = Backend(config)
        await self.backend.start()
        if self.serve:
            import uvicorn

            from . import knobs
            from .http import create_app
            from .sync.inbound import websocket_protocol

            self.port = free_port()
            config_ = uvicorn.Config(
                create_app(self.backend), host="127.0.0.1", port=self.port, log_level="error", lifespan="off",
                ws_max_size=knobs.MAX_MESSAGE_BYTES, ws_per_message_deflate=False,  # as ``backend serve`` runs
                ws=websocket_protocol(),
            )
            self._server = uvicorn.Server(config_)
            self._server.install_signal_handlers = lambda: None
            self._server_task = asyncio.create_task(self._server.serve())
            for _ in range(200):
                if self._server.started:
                    break
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._server_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server_task, timeout=10)
        if self.backend is not None:
            await self.backend.stop()
        if not self._given_url:
            await drop_database(self.database_url)

    # -- in-process calls --------------------------------------------------------------------------------

    @staticmethod
    def token(subject: str, **claims: Any) -> str:
        return mint_dev_token(TEST_SECRET, subject, name=claims.pop("name", None), email=claims.pop("email", None),
                              ttl_seconds=claims.pop("ttl_seconds", 3600), extra=claims or None)

    def identity(self, subject: str | None) -> UserIdentity | None:
        if subject is None:
            return None
        assert self.backend is not None
        # Signed to match this backend's auth settings, so as_user= works with any issuer/audience rules.
        token = mint_dev_token(self.auth.hs256_secret or TEST_SECRET, subject, issuer=self.auth.issuer or DEV_ISSUER,
                               audience=self.auth.audience)
        return self.backend.verify_token(token)

    async def query(self, path: str, args: dict[str, Any] | None = None, *, as_user: str | None = None) -> Any:
        return _unwrap(await self.runner.query(path, args or {}, self.identity(as_user)))

    async def mutation(self, path: str, args: dict[str, Any] | None = None, *, as_user: str | None = None) -> Any:
        return _unwrap(await self.runner.mutation(path, args or {}, self.identity(as_user)))

    async def action(self, path: str, args: dict[str, Any] | None = None, *, as_user: str | None = None) -> Any:
        return _unwrap(await self.runner.action(path, args or {}, self.identity(as_user)))

    @property
    def runner(self) -> Any:
        assert self.backend is not None
        return self.backend.runner

    async def sql(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        assert self.backend is not None and self.backend.pool is not None
        async with self.backend.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(statement, *args)
            return rows


def _unwrap(outcome: Outcome) -> Any:
    from .values import decode_value

    if outcome.error is not None:
        raise outcome.error
    return decode_value(outcome.value)
