"""``python -m backend dev|serve|migrate|run|token|codegen|seed``."""

from __future__ import annotations

import argparse
import asyncio
import gc
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
        dev=getattr(args, "command", None) == "dev",
    )


def _is_loopback_host(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(args: argparse.Namespace) -> None:
    """Refuse, before anything starts, a dev server on the network (it shows callers every exception's
    message) without ``--allow-remote``, and an admin key too short to guard the dashboard."""
    from .dashboard._access import key_problem

    if args.command == "dev" and not _is_loopback_host(args.host) and not args.allow_remote:
        raise CliError(f"dev listens on loopback only, and --host {args.host} is not loopback: dev shows every "
                       "caller the message of each exception; pass --allow-remote to expose it anyway")
    problem = key_problem(os.environ.get("BACKEND_ADMIN_KEY") or None)
    if problem is not None:
        raise CliError(problem)


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import knobs
    from .http import create_app
    from .registry import fixtures_enabled
    from .server import Backend

    _check_exposure(args)
    dev = args.command == "dev"
    config = _config(args)
    config.dev = dev
    if dev:
        from .codegen import refresh_generated
        from .dev import start_backend

        backend = await start_backend(config)
        # Typed clients follow the code: written now and after every good reload (a failure prints one line).
        backend.on_reload.append(lambda b: refresh_generated(b.registry, b.schema))
    else:
        backend = Backend(config)
        await backend.start()
    if backend.config.dev and not args.no_seed:
        from .dashboard.demo import seed_if_empty

        if await seed_if_empty(backend):
            print("created demo data (a studio, classes, staff and customers); --no-seed skips this", flush=True)
    app = create_app(backend)
    from .sync.inbound import websocket_protocol

    sockets = None
    if getattr(args, "reuse_port", False):
        from .workers import bind_reuse_port

        sockets = [bind_reuse_port(args.host, args.port)]
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", ws_max_size=knobs.MAX_MESSAGE_BYTES,
        ws=websocket_protocol(),  # inbound budget and read deadline (backend/sync/inbound.py)
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
    if sockets is None:
        print(f"backend listening on http://{args.host}:{args.port}", flush=True)
    watching: asyncio.Task[None] | None = None
    if dev:
        from .dev import watch

        watching = asyncio.create_task(watch(backend), name="dev-watch")
        print("watching functions/, schema.py and migrations/ for changes", flush=True)
    if backend.config.dev:
        print(f"  booking app  http://{args.host}:{args.port}/\n  dashboard    http://{args.host}:{args.port}/_dashboard",
              flush=True)
    if not dev:
        _settle_heap()
    try:
        await server.serve(sockets=sockets)
    finally:
        if watching is not None:
            watching.cancel()
        await backend.stop()
        if sockets is None:
            print("backend stopped", flush=True)
    return 0


def _settle_heap() -> None:
    """Everything loaded so far (modules, the schema, the registry, the app) lives as long as the process:
    move it out of the cyclic collector's sight, so the collections that per-call garbage triggers scan only
    what calls allocate. Not in dev, where a reload must be able to collect the code it replaces."""
    gc.collect()
    gc.freeze()


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


class CliError(Exception):
    """A mistake in the command line or its environment: printed as one ``error: …`` line, exit status 1."""


def _json_args(text: str) -> Any:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise CliError(f"args must be a JSON object such as '{{\"name\": \"x\"}}' ({error})") from None
    if not isinstance(value, dict):
        raise CliError(f"args must be a JSON object such as '{{\"name\": \"x\"}}', not {type(value).__name__}")
    return value


async def _run(args: argparse.Namespace) -> int:
    from . import calllog
    from .server import Backend

    calllog.source.set("cli")
    fn_args = _json_args(args.args)
    config = _config(args)
    config.run_scheduler = False
    config.dev = True
    backend = Backend(config)
    spec = backend.registry.resolve(args.path, allow_internal=True)  # before starting: fail fast
    identity = backend.verify_token(args.token) if args.token else None
    try:
        await backend.start()
        runner = backend.runner
        call = {"query": runner.query, "mutation": runner.mutation, "action": runner.action}[spec.kind]
        outcome = await call(spec.path, fn_args, identity, allow_internal=True)
    finally:
        await backend.stop()
    for line in outcome.log_lines:
        print(line, file=sys.stderr)
    if outcome.error is not None:
        error = outcome.error
        code = getattr(error, "code", None) or type(error).__name__
        print(f"error: {code}: {getattr(error, 'message', None) or error}", file=sys.stderr)
        return 1
    print(msgspec.json.format(msgspec.json.encode(outcome.value)).decode())
    return 0


async def _seed(args: argparse.Namespace) -> int:
    from .dashboard.demo import seed
    from .server import Backend

    config = _config(args)
    config.run_scheduler = False
    backend = Backend(config)
    await backend.start()
    try:
        business = await seed(backend)
    finally:
        await backend.stop()
    print(business)
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import AuthConfig, mint_dev_token

    config = AuthConfig.from_env(Path(args.data_dir))
    if config.hs256_secret is None:
        raise CliError("no HS256 secret configured (BACKEND_JWT_SECRET or the data dir's dev secret)")
    try:
        token = mint_dev_token(
            config.hs256_secret, args.sub, name=args.name, email=args.email, ttl_seconds=args.ttl,
            issuer=config.issuer or "tidewater-dev", audience=config.audience,
        )
    except ValueError as error:
        raise CliError(str(error)) from None
    print(token)
    return 0


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _ttl(text: str) -> float:
    """``3600``, ``90s``, ``30m``, ``12h`` or ``7d``: positive, at most ``knobs.DEV_TOKEN_MAX_TTL_SECONDS``."""
    from . import knobs

    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:], 0.0)
    try:
        seconds = float(raw[:-1] if unit else raw) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 30m, 12h or 7d") from None
    if not 0 < seconds <= knobs.DEV_TOKEN_MAX_TTL_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"{text!r} must be more than 0 and at most {knobs.DEV_TOKEN_MAX_TTL_SECONDS:.0f} seconds")
    return seconds


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of worker processes") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{value} workers: must be 1 to 256")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print one line (``--help`` shows the rest), exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _database_down(error: BaseException) -> bool:
    import asyncpg

    return isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
                      | asyncpg.InvalidCatalogNameError | asyncpg.InvalidAuthorizationSpecificationError)


def _codegen(args: argparse.Namespace) -> int:
    from .codegen import default_out_dir, generate, write_generated
    from .registry import load_functions
    from .server import load_schema

    try:
        schema, registry = load_schema(), load_functions()
        out = Path(args.out) if args.out else default_out_dir()
        if args.check:
            stale = [name for name, text in generate(registry, schema).items()
                     if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text]
            for name in stale:
                print(f"out of date: {out / name}", file=sys.stderr)
            return 1 if stale else 0
        changed = write_generated(registry, schema, out)
    except Exception as error:
        print(f"codegen failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"{len(changed)} file(s) updated in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        from .errors import BackendError

        if isinstance(error, CliError):
            text = str(error)
        elif isinstance(error, BackendError):
            text = f"{error.code}: {error.message}"
        elif _database_down(error):
            text = f"cannot reach the database ({type(error).__name__}: {error}); is DATABASE_URL right?"
        elif isinstance(error, TypeError | ImportError | SyntaxError):  # the app's code failed to load
            text = f"{type(error).__name__}: {error}"
        else:
            raise
        print(f"error: {text}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m backend")
    commands = parser.add_subparsers(dest="command", required=True)
    summaries = {"dev": "start the dev server: reloads on save, logs every call, writes typed clients",
                 "serve": "start a production server: logs failures, redacts unexpected errors"}
    for name in ("dev", "serve"):
        cmd = commands.add_parser(name, help=summaries[name])
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=3210)
        cmd.add_argument("--data-dir", default=".data")
        cmd.add_argument("--no-scheduler", action="store_true", help="do not run scheduled jobs on this node")
        cmd.add_argument("--no-seed", action="store_true", help="dev: do not create demo data in an empty database")
        if name == "dev":
            cmd.add_argument("--allow-remote", action="store_true",
                             help="allow a --host other than loopback (dev shows callers each exception's message; "
                                  "the open dashboard and demo sign-in still answer loopback only)")
        if name == "serve":
            from . import knobs
            from .workers import WORKER_FLAG

            cmd.add_argument("--workers", type=_workers, default=knobs.SERVE_WORKERS,
                             help=f"processes on the one port, each a full node (default: {knobs.SERVE_WORKERS}, "
                             "the cores; BACKEND_WORKERS)")
            cmd.add_argument(WORKER_FLAG, dest="reuse_port", action="store_true", help=argparse.SUPPRESS)
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
    token.add_argument("--ttl", type=_ttl, default=3600.0, help="lifetime: seconds, or 30m, 12h, 7d (default 1h)")
    token.add_argument("--data-dir", default=".data")
    codegen = commands.add_parser("codegen", help="write typed clients (TypeScript and Python) for the functions")
    codegen.add_argument("--out", default=None, help="output folder (default: functions/_generated)")
    codegen.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1)")
    seed = commands.add_parser("seed", help="create the demo studio (idempotent) and print its id")
    seed.add_argument("--data-dir", default=".data")
    args = parser.parse_args(argv)
    from . import calllog

    logging.getLogger().setLevel(os.environ.get("BACKEND_LOG_LEVEL", "WARNING"))
    calllog.configure(calls=args.command == "dev")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    if args.command == "dev":
        logging.getLogger("backend.dev").setLevel(logging.INFO)
    sys.path.insert(0, os.getcwd())
    if args.command == "serve" and args.workers > 1 and not args.reuse_port:
        from .workers import WORKER_FLAG, supervise

        if args.port == 0:
            raise CliError("--workers needs a fixed --port (each worker binds the same one)")
        given = list(sys.argv[1:] if argv is None else argv)
        return supervise([*given, WORKER_FLAG], args.workers, Path(args.data_dir), args.host, args.port)
    if args.command in ("dev", "serve"):
        return asyncio.run(_serve(args))
    if args.command == "migrate":
        return asyncio.run(_migrate(args))
    if args.command == "run":
        return asyncio.run(_run(args))
    if args.command == "codegen":
        return _codegen(args)
    if args.command == "seed":
        return asyncio.run(_seed(args))
    return _token(args)
