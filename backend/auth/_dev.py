"""Local-development conveniences: a per-data-dir HS256 secret and a token minter.

A generated secret (rather than a hard-coded default) means a dev server that
is accidentally exposed does not accept tokens anyone on the internet can mint.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import jwt

DEV_ISSUER: Final = "tidewater-dev"
DEV_SECRET_FILENAME: Final = "jwt_secret"

# Claims mint_dev_token sets itself; letting ``extra`` override them would be confusing.
_RESERVED: Final[frozenset[str]] = frozenset({"sub", "iss", "iat", "exp", "aud", "name", "email"})


def load_or_create_dev_secret(data_dir: Path) -> str:
    """Return the secret in ``data_dir/jwt_secret``, creating it (mode 0600) on first use.

    The file is written to a temporary name and hard-linked into place, so a
    concurrent starter either wins the race or reads the complete winner; no
    reader ever sees a half-written secret.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_SECRET_FILENAME
    if not path.exists():
        _publish_new_secret(path)
    return _read_secret(path)


def _publish_new_secret(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed, but never widened; be exact
        os.write(fd, (secrets.token_urlsafe(48) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another process won; use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_secret(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Tighten rather than refuse: the file is ours and the fix is unambiguous.
        path.chmod(0o600)
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"dev JWT secret file {str(path)!r} is empty or too short; delete it to regenerate")
    return secret


def mint_dev_token(
    secret: str,
    subject: str,
    name: str | None = None,
    email: str | None = None,
    ttl_seconds: float = 3600,
    issuer: str = DEV_ISSUER,
    audience: str | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    now: float | None = None,
) -> str:
    """Sign an HS256 token for local development and tests.

    ``now`` pins the issue time so tests can mint already-expired or
    not-yet-valid tokens deterministically.
    """
    if not secret:
        raise ValueError("secret must be non-empty")
    if not subject:
        raise ValueError("subject must be non-empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    clashes = sorted(_RESERVED.intersection(extra or {}))
    if clashes:
        raise ValueError(f"extra must not set {', '.join(clashes)}; use the named parameters")
    issued_at = time.time() if now is None else now
    payload: dict[str, Any] = dict(extra or {})
    payload.update(sub=subject, iss=issuer, iat=int(issued_at), exp=int(issued_at + ttl_seconds))
    if audience is not None:
        payload["aud"] = audience
    if name is not None:
        payload["name"] = name
    if email is not None:
        payload["email"] = email
    return jwt.encode(payload, secret, algorithm="HS256")
