"""Which endpoint URLs are acceptable: ``http``/``https`` only, and (unless the operator allows it) never an
address inside the server's own network (SSRF).

A URL is checked twice: when the endpoint is created (scheme, shape, literal addresses and names such as
``localhost``), and before every delivery, after resolving the host name, so a name that later resolves to
a private address (DNS rebinding) is still refused. Redirects are never followed (see ``sender.py``).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from . import config

__all__ = ["MAX_URL_LENGTH", "UrlProblem", "check_resolved", "check_shape"]

MAX_URL_LENGTH = 2048
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class UrlProblem(ValueError):
    """Why a URL may not be used as an endpoint (the message is shown to the caller)."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified)


def check_shape(url: str) -> tuple[str, int]:
    """Scheme, host and port of an acceptable URL; literal non-public hosts refused unless allowed."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlProblem(f"is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlProblem("must be an http or https URL")
    if not parts.hostname:
        raise UrlProblem("has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlProblem("must not carry credentials; use the signing secret instead")
    if parts.fragment:
        raise UrlProblem("must not have a fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlProblem("has an invalid port") from None
    host = parts.hostname.rstrip(".").lower()
    if not config.allow_private_urls():
        if host in _LOCAL_NAMES or host.endswith(".localhost"):
            raise UrlProblem("points at this server (loopback addresses are not allowed)")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and not _public(literal):
            raise UrlProblem("points at a private, loopback or reserved address")
    return host, port


def check_resolved(url: str) -> None:
    """Resolve the host and refuse it if any address it names is not public (unless allowed)."""
    host, port = check_shape(url)
    if config.allow_private_urls():
        return
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise UrlProblem(f"host cannot be resolved ({error})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _public(address):
            raise UrlProblem(f"resolves to a non-public address ({address})")
