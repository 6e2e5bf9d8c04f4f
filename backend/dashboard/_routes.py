"""The dashboard's HTTP routes (``/_dashboard``), the booking web app's files (``/``) and dev-only sign-in.

Every ``/_dashboard/api`` route needs an admin (see ``_access``); writes run through the same ``Runner``
as any client call, audited as ``admin:<name>``. Pages and scripts are plain files, read on each request.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from .. import knobs
from ..errors import AppError, BackendError, InvalidArgs, InvalidRequest, NotFound
from ..http._responses import error_response, json_response
from ..values import encode_error_data
from . import _access, _data
from ._identity import admin_identity, clean_admin_name

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["dashboard_routes"]

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png", ".map": "application/json"}
_NO_STORE = {"cache-control": "no-store"}
# No sniffing a file into another type, no framing (clickjacking the function runner or the booking buttons),
# and for the dashboard only its own scripts, styles and API: an injected tag could neither run nor call out.
_WEB_HEADERS = {**_NO_STORE, "x-content-type-options": "nosniff", "x-frame-options": "DENY",
                "content-security-policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"}
_DASHBOARD_HEADERS = {
    **_WEB_HEADERS, "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
}

Req = Request[Any, Any, Any]


def _backend(request: Req) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def _guarded(request: Req, body: Callable[[Backend, _access.Admin], Awaitable[Any]]) -> Response[bytes]:
    backend = _backend(request)
    try:
        # Every API answer is data and every POST may write: none for pages of another origin.
        _access.require_same_origin(request)
        admin = _access.require_admin(backend, request)
        response = json_response(await body(backend, admin))
    except (BackendError, AppError) as error:
        response = error_response(error)
    response.headers.update(_DASHBOARD_HEADERS)
    return response


def _file(folder: Path, name: str, headers: dict[str, str]) -> Response[bytes]:
    """A file inside ``folder`` (after symlinks), of a known type; anything else, a NUL byte or a name too
    long for the OS included, is 404."""
    missing = Response(content=b"not found", status_code=404, media_type="text/plain", headers=headers)
    try:
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents or not path.is_file() or path.suffix not in _TYPES:
            return missing
        return Response(content=path.read_bytes(), media_type=_TYPES[path.suffix], headers=headers)
    except (OSError, ValueError):
        return missing


# -- pages ----------------------------------------------------------------------------------------------


@get("/_dashboard", include_in_schema=False)
async def dashboard_page(request: Req) -> Response[Any]:
    try:
        _access.require_admin(_backend(request), request)
    except BackendError:
        return Redirect("/_dashboard/login")
    return _file(STATIC, "index.html", _DASHBOARD_HEADERS)


@get("/_dashboard/static/{name:str}", include_in_schema=False)
async def dashboard_static(name: str) -> Response[bytes]:
    return _file(STATIC, name, _DASHBOARD_HEADERS)


def _login_page(message: str = "", status: int = 200) -> Response[bytes]:
    page = (STATIC / "login.html").read_text().replace("{{message}}", message)
    return Response(content=page.encode(), status_code=status, media_type=_TYPES[".html"], headers=_DASHBOARD_HEADERS)


@get("/_dashboard/login", include_in_schema=False)
async def login_page(request: Req) -> Response[bytes]:
    backend = _backend(request)
    if _access.admin_key(backend) is not None:
        return _login_page()
    problem = _access.key_problem(backend.config.admin_key) if backend.config.admin_key else None
    return _login_page(f"The dashboard is closed: {problem or 'start the server with BACKEND_ADMIN_KEY set'}.")


@post("/_dashboard/login", include_in_schema=False, status_code=200)
async def login(request: Req) -> Response[Any]:
    backend = _backend(request)
    try:
        _access.require_same_origin(request)
    except BackendError as error:
        return error_response(error)
    form = await request.form()
    key = _access.admin_key(backend)
    offered = str(form.get("key") or "")
    if not key or not hmac.compare_digest(offered.encode(), key.encode()):
        return _login_page("That is not the admin key.", 401)
    try:
        name = clean_admin_name(str(form.get("name") or "admin"))
    except BackendError as error:
        return _login_page(error.message, 400)
    response: Response[Any] = Redirect("/_dashboard")
    response.set_cookie(Cookie(key=_access.COOKIE, value=_access.login_cookie(key, name), path="/_dashboard",
                               httponly=True, samesite="strict", max_age=knobs.DASHBOARD_SESSION_SECONDS,
                               secure=request.url.scheme == "https"))
    return response


@post("/_dashboard/logout", include_in_schema=False, status_code=200)
async def logout(request: Req) -> Response[Any]:
    response: Response[Any] = Redirect("/_dashboard/login")
    response.delete_cookie(_access.COOKIE, path="/_dashboard")
    return response


# -- JSON API -------------------------------------------------------------------------------------------


class _RowsRequest(msgspec.Struct, forbid_unknown_fields=True):
    table: str
    index: str = "by_creation_time"
    eq: dict[str, Any] = msgspec.field(default_factory=dict)
    includeDeleted: bool = False
    order: str = "desc"
    cursor: str | None = None
    numItems: int = 25
    tenant: str | None = None


class _Identity(msgspec.Struct, forbid_unknown_fields=True):
    kind: str = "admin"  # admin | member | anonymous
    subject: str | None = None


class _RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    identity: _Identity = msgspec.field(default_factory=_Identity)


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"malformed request: {error}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("malformed request: the body is not valid JSON") from None
    except RecursionError:  # the JSON decoder's own nesting bound
        raise InvalidRequest(f"malformed request: values may nest at most {knobs.MAX_VALUE_DEPTH} levels deep") from None


@get("/_dashboard/api/meta", include_in_schema=False)
async def api_meta(request: Req) -> Response[bytes]:
    async def body(backend: Backend, admin: _access.Admin) -> Any:
        tenancy = backend.schema.tenancy
        return {"admin": f"admin:{admin.name}", "via": admin.via, "dev": backend.config.dev,
                "pollMs": knobs.DASHBOARD_POLL_MS, "maxPageRows": knobs.DASHBOARD_MAX_PAGE_ROWS,
                "tenantTable": None if tenancy is None else tenancy.root_table}
    return await _guarded(request, body)


@get("/_dashboard/api/tables", include_in_schema=False)
async def api_tables(request: Req) -> Response[bytes]:
    return await _guarded(request, lambda backend, _: _async(_data.table_listing(backend)))


async def _async(value: Any) -> Any:
    return value


@post("/_dashboard/api/rows", include_in_schema=False, status_code=200)
async def api_rows(request: Req) -> Response[bytes]:
    async def body(backend: Backend, _: _access.Admin) -> Any:
        ask = _decode(await request.body(), _RowsRequest)
        return await _data.rows(backend, ask.table, index=ask.index, eq=ask.eq, include_deleted=ask.includeDeleted,
                                order=ask.order, cursor=ask.cursor, num_items=ask.numItems, tenant=ask.tenant)
    return await _guarded(request, body)


@get("/_dashboard/api/tenants", include_in_schema=False)
async def api_tenants(request: Req) -> Response[bytes]:
    return await _guarded(request, lambda backend, _: _data.tenants(backend))


@get("/_dashboard/api/members", include_in_schema=False)
async def api_members(request: Req, tenant: str) -> Response[bytes]:
    return await _guarded(request, lambda backend, _: _data.members(backend, tenant))


@get("/_dashboard/api/functions", include_in_schema=False)
async def api_functions(request: Req) -> Response[bytes]:
    async def body(backend: Backend, _: _access.Admin) -> Any:
        return [{"path": s.path, "kind": s.kind, "internal": s.internal, "tenantArg": s.tenant_arg,
                 "roles": list(s.roles) if s.roles else None, "doc": (s.fn.__doc__ or "").strip(),
                 "args": s.args.json_schema()}
                for s in sorted(backend.registry, key=lambda s: s.path)]
    return await _guarded(request, body)


@post("/_dashboard/api/run", include_in_schema=False, status_code=200)
async def api_run(request: Req) -> Response[bytes]:
    async def body(backend: Backend, admin: _access.Admin) -> Any:
        ask = _decode(await request.body(), _RunRequest)
        if ask.identity.kind == "admin":
            identity: Any = admin_identity(admin.name)
        elif ask.identity.kind == "member":
            identity = admin_identity(admin.name, ask.identity.subject or "")
        elif ask.identity.kind == "anonymous":
            identity = None
        else:
            raise InvalidArgs("$.identity.kind: one of admin, member, anonymous")
        spec = backend.registry.resolve(ask.path, allow_internal=True)
        runner = backend.runner
        call = {"query": runner.query, "mutation": runner.mutation, "action": runner.action}[spec.kind]
        started = time.perf_counter()
        outcome = await call(spec.path, ask.args, identity, allow_internal=True)
        ms = (time.perf_counter() - started) * 1000.0
        result: dict[str, Any] = {"kind": spec.kind, "ms": round(ms, 3), "logLines": outcome.log_lines,
                                  "actor": getattr(identity, "actor", None)}
        error = outcome.error
        if error is None:
            result.update(ok=True, value=outcome.value)
        elif isinstance(error, AppError):
            result.update(ok=False, error={"code": "AppError", "message": error.message,
                                           "data": encode_error_data(error.data)})
        elif isinstance(error, BackendError):
            result.update(ok=False, error=error.to_wire())
        else:
            result.update(ok=False, error={"code": "InternalServerError", "message": "Server Error"})
        return result
    return await _guarded(request, body)


@get("/_dashboard/api/logs", include_in_schema=False)
async def api_logs(request: Req, after: int = 0, tenant: str | None = None) -> Response[bytes]:
    async def body(backend: Backend, _: _access.Admin) -> Any:
        log = getattr(backend, "call_log", None)
        if log is None:
            return {"last": 0, "calls": [], "enabled": False}
        return {"last": log.last_seq, "calls": [r.to_json() for r in log.since(after, tenant=tenant)], "enabled": True}
    return await _guarded(request, body)


@get("/_dashboard/api/sessions", include_in_schema=False)
async def api_sessions(request: Req, tenant: str | None = None) -> Response[bytes]:
    return await _guarded(request, lambda backend, _: _async(_data.sessions(backend, tenant)))


@get("/_dashboard/api/jobs", include_in_schema=False)
async def api_jobs(request: Req, tenant: str | None = None) -> Response[bytes]:
    return await _guarded(request, lambda backend, _: _data.jobs(backend, tenant))


# -- the booking web app and its dev sign-in -------------------------------------------------------------


def _web_dir(request: Req) -> Path | None:
    folder = _backend(request).config.web_dir
    return folder if folder is not None and folder.is_dir() else None


@get("/", include_in_schema=False)
async def web_index(request: Req) -> Response[bytes]:
    folder = _web_dir(request)
    if folder is None:
        return Response(content=b"no web app here; the dashboard is at /_dashboard", media_type="text/plain")
    return _file(folder, "index.html", _WEB_HEADERS)


@get("/web/{name:path}", include_in_schema=False)
async def web_files(request: Req, name: str) -> Response[bytes]:
    folder = _web_dir(request)
    if folder is None:
        return Response(content=b"not found", status_code=404, media_type="text/plain")
    return _file(folder, name.lstrip("/"), _WEB_HEADERS)


def _dev_only(request: Req) -> None:
    """The demo sign-in exists only for ``dev`` on loopback, and only for the page's own origin."""
    backend = _backend(request)
    if not backend.config.dev or not _access.is_loopback(request):
        raise NotFound("not found")
    _access.require_same_origin(request)


@get("/_dev/demo", include_in_schema=False)
async def dev_demo(request: Req) -> Response[bytes]:
    from .demo import DEMO_USERS, existing_business

    try:
        _dev_only(request)
        business = await existing_business(_backend(request))
    except BackendError as error:
        return error_response(error)
    return json_response({"businessId": business,
                          "users": [{"subject": u.subject, "name": u.name, "role": u.role} for u in DEMO_USERS]})


class _TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    subject: str


@post("/_dev/token", include_in_schema=False, status_code=200)
async def dev_token(request: Req) -> Response[bytes]:
    from ..auth import mint_dev_token
    from ..auth._dev import DEV_ISSUER
    from .demo import DEMO_USERS

    try:
        _dev_only(request)
        ask = _decode(await request.body(), _TokenRequest)
        user = next((u for u in DEMO_USERS if u.subject == ask.subject), None)
        if user is None:
            raise InvalidArgs(f"$.subject: not a demo user ({', '.join(u.subject for u in DEMO_USERS)})")
        config = _backend(request).verifier.config
        if config.hs256_secret is None:
            raise InvalidRequest("no HS256 secret is configured, so no dev token can be signed")
        token = mint_dev_token(config.hs256_secret, user.subject, name=user.name, ttl_seconds=12 * 3600,
                               issuer=config.issuer or DEV_ISSUER, audience=config.audience)
    except BackendError as error:
        return error_response(error)
    return json_response({"token": token, "subject": user.subject, "name": user.name, "role": user.role})


def dashboard_routes(backend: Backend) -> list[Any]:
    """The route handlers, and the call log installed on the runner (when the knob allows one)."""
    if knobs.DASHBOARD_CALL_LOG_SIZE > 0 and getattr(backend, "call_log", None) is None:
        from ._calls import CallLog

        log = CallLog(knobs.DASHBOARD_CALL_LOG_SIZE)
        backend.call_log = log  # type: ignore[attr-defined]
        backend.runner.on_call = log.record
    return [dashboard_page, dashboard_static, login_page, login, logout, api_meta, api_tables, api_rows,
            api_tenants, api_members, api_functions, api_run, api_logs, api_sessions, api_jobs,
            web_index, web_files, dev_demo, dev_token]
