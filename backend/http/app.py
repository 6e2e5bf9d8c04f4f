"""HTTP routes: ``POST /api/query|mutation|action``, ``/api/run/{path}``, ``/api/function``, ``GET /health``."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from .. import calllog, knobs
from ..errors import AppError, BackendError, InvalidRequest, Unauthenticated
from ..postgres import DATABASE_DOWN
from ._idempotency import HEADER, args_binding, idempotency_key, idempotent_session, name_the_header
from ._peer import WithPeer
from ._responses import database_unavailable, error_response, json_response, outcome_response

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["create_app"]

log = logging.getLogger("backend.http")


class _Envelope(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    args: Any = msgspec.field(default_factory=dict)
    format: str | None = None
    componentPath: str | None = None


class _RunEnvelope(msgspec.Struct, forbid_unknown_fields=False):
    args: Any = msgspec.field(default_factory=dict)
    format: str | None = None


def _decode(body: bytes, kind: type[Any]) -> Any:
    if len(body) > knobs.MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"request body is larger than {knobs.MAX_MESSAGE_BYTES} bytes")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"malformed request: {error}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("malformed request: the body is not valid JSON") from None
    except RecursionError:  # the JSON decoder's own nesting bound, far beyond ours
        raise InvalidRequest(f"malformed request: values may nest at most {knobs.MAX_VALUE_DEPTH} levels deep") from None


def _args_object(args: Any) -> Any:
    """The HTTP API takes args as an object or as a one-element array holding the object."""
    if isinstance(args, list):
        if len(args) != 1:
            raise InvalidRequest("$.args: expected an object or a one-element array")
        return args[0]
    return args


def _check_format(fmt: str | None) -> None:
    if fmt not in (None, "convex_encoded_json", "json"):
        raise InvalidRequest(f"$.format: unsupported format {fmt!r}")


def _backend(request: Request[Any, Any, Any]) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _identity(request: Request[Any, Any, Any]) -> Any | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return _backend(request).verify_token(token.strip())


async def _call(request: Request[Any, Any, Any], kind: str, path: str, args: Any) -> Response[bytes]:
    backend = _backend(request)
    identity = _identity(request)
    runner = backend.runner
    calllog.source.set("http")
    key = idempotency_key(request)
    if key is not None and kind == "action":
        raise InvalidRequest(f"{HEADER}: only mutations take an idempotency key (actions may have side effects "
                             "the engine cannot undo or replay)")
    try:
        if kind == "query":
            outcome = await runner.query(path, args, identity)
        elif kind == "mutation" and key is not None:
            outcome = name_the_header(await runner.mutation(
                path, args, identity, session=idempotent_session(key), request_id=f"{HEADER}:{key}",
                binding=args_binding(args)))
        elif kind == "mutation":
            outcome = await runner.mutation(path, args, identity)
        else:
            outcome = await runner.action(path, args, identity)
    except DATABASE_DOWN as error:  # the call's own log line already holds the traceback
        log.warning("database unavailable for %s: %s: %s", path, type(error).__name__, error)
        raise database_unavailable() from None
    return outcome_response(outcome)


async def _handle(request: Request[Any, Any, Any], kind: str) -> Response[bytes]:
    try:
        envelope = _decode(await request.body(), _Envelope)
        _check_format(envelope.format)
        return await _call(request, kind, envelope.path, _args_object(envelope.args))
    except (BackendError, AppError) as error:
        return error_response(error)


@post("/api/query", status_code=200)
async def api_query(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _handle(request, "query")


@post("/api/mutation", status_code=200)
async def api_mutation(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _handle(request, "mutation")


@post("/api/action", status_code=200)
async def api_action(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _handle(request, "action")


@post("/api/function", status_code=200)
async def api_function(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        envelope = _decode(await request.body(), _Envelope)
        _check_format(envelope.format)
        spec = _backend(request).registry.resolve(envelope.path)
        return await _call(request, spec.kind, envelope.path, _args_object(envelope.args))
    except BackendError as error:
        return error_response(error)


@post("/api/run/{function_path:path}", status_code=200)
async def api_run(request: Request[Any, Any, Any], function_path: str) -> Response[bytes]:
    """``/api/run/classes/templates/create`` calls ``classes/templates:create``."""
    try:
        module, _, name = function_path.strip("/").rpartition("/")
        path = f"{module}:{name}" if module else name
        envelope = _decode(await request.body() or b"{}", _RunEnvelope)
        _check_format(envelope.format)
        spec = _backend(request).registry.resolve(path)
        return await _call(request, spec.kind, path, _args_object(envelope.args))
    except BackendError as error:
        return error_response(error)


@get("/health")
async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
    backend = _backend(request)
    ok = await backend.healthy()
    return json_response({"status": "ok" if ok else "degraded", "functions": len(backend.registry.functions),
                          "pid": os.getpid()}, 200 if ok else 503)


@get("/api/functions")
async def list_functions(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every public function with its kind and argument/return JSON Schemas."""
    backend = _backend(request)
    listing = [
        {"path": s.path, "kind": s.kind, "args": s.args.json_schema(), "returns": s.returns.json_schema()}
        for s in backend.registry
        if not s.internal
    ]
    return json_response(listing)


@get("/api/openapi.json")
async def openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The HTTP API of every public function, with argument and result schemas."""
    from ._openapi import openapi_document

    return json_response(openapi_document(_backend(request).registry))


class _CollapseSlashes:
    """``http://host/`` as a deployment address makes clients call ``//api/...``; treat it as ``/api/...``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "//" in scope["path"]:
            path = scope["path"]
            while "//" in path:
                path = path.replace("//", "/")
            scope = {**scope, "path": path, "raw_path": path.encode()}  # type: ignore[assignment,typeddict-item]
        await self.app(scope, receive, send)


def create_app(backend: Backend) -> Any:
    from ..dashboard import dashboard_routes
    from ..sync.endpoint import sync_routes

    app = Litestar(
        route_handlers=[api_query, api_mutation, api_action, api_function, api_run, health, list_functions, openapi,
                        *sync_routes(), *dashboard_routes(backend)],
        cors_config=CORSConfig(allow_origins=["*"], allow_headers=["*"], allow_methods=["GET", "POST", "OPTIONS"]),
        request_max_body_size=knobs.MAX_MESSAGE_BYTES,
        openapi_config=None,
        debug=False,
        # Anything a handler did not turn into a response: logged once with a request id, never a bare 500.
        exception_handlers={500: lambda _request, error: error_response(error)},
        logging_config=None,  # the server's log format is set by ``calllog.configure``, not by litestar
    )
    app.state.backend = backend
    return _CollapseSlashes(WithPeer(app))
