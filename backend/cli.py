"""``python -m backend dev|serve|migrate|run|token``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["main"]


def _config(args: argparse.Namespace) -> Any:
    from .server import BackendConfig

    return BackendConfig(
        data_dir=Path(args.data_dir),
        database_url=os.environ.get("DATABASE_URL") or None,
        run_scheduler=not getattr(args, "no_scheduler", False),
    )


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import knobs
    from .http import create_app
    from .registry import fixtures_enabled
    from .server import Backend

    backend = Backend(_config(args))
    await backend.start()
    app = create_app(backend)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", ws_max_size=knobs.MAX_MESSAGE_BYTES,
        ws_ping_interval=20, ws_ping_timeout=60, lifespan="off",
        # Sync frames are small and fan out to many sockets: compression would cost a zlib context (~40 KiB)
        # per socket and a compression per frame per socket.
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    if fixtures_enabled():
        print("warning: test fixtures are loaded (BACKEND_TEST_FUNCTIONS=1); never in production", file=sys.stderr)
    print(f"backend listening on http://{args.host}:{args.port}", flush=True)
    try:
        await server.serve()
    finally:
        await backend.stop()
        print("backend stopped", flush=True)
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    from .postgres import connect_pool, locate_database
    from .schema._migrate import apply_schema
    from .server import load_schema

    database = locate_database(Path(args.data_dir))
    try:
        pool = await connect_pool(database.url, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            ran = await apply_schema(conn, load_schema(), Path("migrations"))
        await pool.close()
    finally:
        database.stop()
    for statement in ran:
        print(statement)
    print(f"{len(ran)} schema change(s) applied")
    return 0


async def _run(args: argparse.Namespace) -> int:
    from .server import Backend

    config = _config(args)
    config.run_scheduler = False
    backend = Backend(config)
    await backend.start()
    try:
        fn_args = json.loads(args.args) if args.args else {}
        identity = backend.verify_token(args.token) if args.token else None
        spec = backend.registry.resolve(args.path, allow_internal=True)
        runner = backend.runner
        call = {"query": runner.query, "mutation": runner.mutation, "action": runner.action}[spec.kind]
        outcome = await call(spec.path, fn_args, identity, allow_internal=True)
    finally:
        await backend.stop()
    for line in outcome.log_lines:
        print(line, file=sys.stderr)
    if outcome.error is not None:
        print(f"error: {outcome.error}", file=sys.stderr)
        return 1
    print(msgspec.json.format(msgspec.json.encode(outcome.value)).decode())
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import AuthConfig, mint_dev_token

    config = AuthConfig.from_env(Path(args.data_dir))
    if config.hs256_secret is None:
        print("no HS256 secret configured (BACKEND_JWT_SECRET or the data dir's dev secret)", file=sys.stderr)
        return 2
    token = mint_dev_token(
        config.hs256_secret, args.sub, name=args.name, email=args.email, ttl_seconds=args.ttl,
        issuer=config.issuer or "tidewater-dev", audience=config.audience,
    )
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("dev", "serve"):
        cmd = commands.add_parser(name, help="start the server")
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=3210)
        cmd.add_argument("--data-dir", default=".data")
        cmd.add_argument("--no-scheduler", action="store_true", help="do not run scheduled jobs on this node")
    migrate = commands.add_parser("migrate", help="apply pending schema changes")
    migrate.add_argument("--data-dir", default=".data")
    run = commands.add_parser("run", help="call a function and print its result")
    run.add_argument("path")
    run.add_argument("args", nargs="?", default="")
    run.add_argument("--data-dir", default=".data")
    run.add_argument("--token", default=None, help="a JWT to call as")
    token = commands.add_parser("token", help="print a development token signed with the dev secret")
    token.add_argument("--sub", required=True)
    token.add_argument("--name", default=None)
    token.add_argument("--email", default=None)
    token.add_argument("--ttl", type=float, default=3600.0)
    token.add_argument("--data-dir", default=".data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BACKEND_LOG_LEVEL", "WARNING"))
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())
    if args.command in ("dev", "serve"):
        return asyncio.run(_serve(args))
    if args.command == "migrate":
        return asyncio.run(_migrate(args))
    if args.command == "run":
        return asyncio.run(_run(args))
    return _token(args)
