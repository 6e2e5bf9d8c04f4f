"""Who may open the dashboard: anyone on loopback under ``dev``; otherwise only holders of the admin key.

The key comes as an ``X-Admin-Key`` header or, after the login form, as a signed cookie
(``<name>.<expiry>.<HMAC-SHA256 of both under the key>``, HttpOnly, SameSite=Strict); every comparison is
constant-time. Ordinary JWTs are never looked at here, so no token opens the dashboard. Unsafe requests
(and the dev token endpoint, whose answer is a secret) must come from the dashboard's own origin, because
the API allows any origin for CORS and a loopback server is reachable from any page the browser opens.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import knobs
from ..errors import Forbidden, Unauthenticated
from ._identity import clean_admin_name

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["COOKIE", "NAME_COOKIE", "Admin", "admin_key", "is_loopback", "key_problem", "login_cookie", "require_admin",
           "require_same_origin"]

COOKIE = "tw_admin"
NAME_COOKIE = "tw_admin_name"
HEADER = "x-admin-key"


class Admin:
    """An admin let in, and how (``dev`` loopback or ``key``)."""

    def __init__(self, name: str, via: str) -> None:
        self.name = name
        self.via = via


def is_loopback(request: Any) -> bool:
    """The request came over loopback *and* names a loopback host, so a page of a domain rebound to
    127.0.0.1 (DNS rebinding) does not count as local."""
    client = request.client
    if client is None or not client.host:
        return False
    try:
        if not ipaddress.ip_address(client.host).is_loopback:
            return False
    except ValueError:
        return False
    host = _hostname(request.headers.get("host", ""))
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_problem(key: str | None) -> str | None:
    """Why ``key`` cannot guard the dashboard (too short), or None when it can or none is set."""
    if key is not None and len(key.strip()) < knobs.DASHBOARD_MIN_ADMIN_KEY_CHARS:  # spaces are no secret
        return (f"BACKEND_ADMIN_KEY must be at least {knobs.DASHBOARD_MIN_ADMIN_KEY_CHARS} characters "
                "(BACKEND_DASHBOARD_MIN_ADMIN_KEY_CHARS)")
    return None


def admin_key(backend: Backend) -> str | None:
    """The key that opens the dashboard; None (closed) when none is set or it is too short to guard it."""
    key = backend.config.admin_key
    return key if key and key_problem(key) is None else None


def _hostname(netloc: str) -> str:
    """The host part of ``host[:port]``; "" when it cannot be parsed (``[::1`` makes urlsplit raise)."""
    try:
        return urlsplit("//" + netloc).hostname or ""
    except ValueError:
        return ""


def _sign(key: str, payload: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def login_cookie(key: str, name: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + knobs.DASHBOARD_SESSION_SECONDS)
    payload = f"{name}.{expires}"
    return f"{payload}.{_sign(key, payload)}"


def _cookie_admin(key: str, value: str) -> str | None:
    payload, _, signature = value.rpartition(".")  # name.expiry.signature
    name, _, expiry = payload.rpartition(".")
    # A header may carry any latin-1 text; compare_digest takes only ASCII strings.
    if not name or not expiry.isascii() or not expiry.isdigit() or not signature or not signature.isascii():
        return None
    if not hmac.compare_digest(_sign(key, payload), signature):
        return None
    if int(expiry) < time.time():
        return None
    return name


def require_admin(backend: Backend, request: Any) -> Admin:
    """The admin making this request, or ``Unauthenticated`` (401)."""
    config = backend.config
    key = admin_key(backend)
    if key:
        offered = request.headers.get(HEADER)
        if offered is not None:
            if hmac.compare_digest(offered.encode(), key.encode()):
                return Admin(clean_admin_name(request.headers.get("x-admin-name")), "key")
            raise Unauthenticated("the admin key is wrong")
        cookie = request.cookies.get(COOKIE)
        if cookie:
            name = _cookie_admin(key, cookie)
            if name is not None:
                return Admin(name, "key")
    if config.dev and is_loopback(request):
        return Admin(clean_admin_name(request.cookies.get(NAME_COOKIE) or "dev"), "dev")
    if not key:
        problem = key_problem(config.admin_key) if config.admin_key else None
        raise Unauthenticated(f"the dashboard is closed: {problem or 'start the server with BACKEND_ADMIN_KEY set'}")
    raise Unauthenticated("sign in with the admin key (BACKEND_ADMIN_KEY)")


def require_same_origin(request: Any) -> None:
    """Refuse requests a page of another origin made (``Origin`` or ``Sec-Fetch-Site`` say so)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site requests to the dashboard are refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # an unparsable origin (``http://[``) is no origin of ours
        netloc = None
    if origin == "null" or netloc != host:
        raise Forbidden("cross-origin requests to the dashboard are refused")
