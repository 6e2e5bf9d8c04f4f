"""One HTTP POST per attempt, outside any transaction: the standard library's client in a worker thread.

No redirects are followed (a redirect could lead into the server's network), no proxy from the environment
is used, and the whole attempt is bounded by ``config.timeout_seconds()``. Any 2xx is a success; anything
else, a timeout or a refused connection is a failure to retry.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from . import config
from .urls import UrlProblem, check_resolved

__all__ = ["Attempt", "post"]

_MAX_ERROR = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is then reported as an HTTPError: a failed attempt


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Attempt:
    try:
        check_resolved(url)
    except UrlProblem as problem:
        return Attempt(False, None, f"refused: {problem}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(1024)
            return Attempt(200 <= response.status < 300, response.status, None)
    except urllib.error.HTTPError as error:
        return Attempt(False, error.code, f"HTTP {error.code}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return Attempt(False, None, f"{type(error).__name__}: {reason}"[:_MAX_ERROR])


async def post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    timeout = config.timeout_seconds()
    try:
        return await asyncio.wait_for(asyncio.to_thread(_post, url, body, headers, timeout), timeout * 2 + 1)
    except TimeoutError:
        return Attempt(False, None, "timed out")
