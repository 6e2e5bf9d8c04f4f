"""Which keys and claim rules the verifier enforces, and how they come from the environment."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ._dev import load_or_create_dev_secret

ENV_SECRET = "BACKEND_JWT_SECRET"
ENV_PUBLIC_KEY_FILE = "BACKEND_JWT_PUBLIC_KEY_FILE"
ENV_JWKS_FILE = "BACKEND_JWT_JWKS_FILE"
ENV_ISSUER = "BACKEND_JWT_ISSUER"
ENV_AUDIENCE = "BACKEND_JWT_AUDIENCE"


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Verification settings; each configured key source enables only its own algorithm.

    ``hs256_secret`` enables HS256, ``public_key_pem`` enables RS256 or ES256
    (by key type) and ``jwks`` (a parsed JWKS document, keys picked by ``kid``)
    enables whichever of RS256/ES256 its keys support. ``issuer`` and
    ``audience`` are only checked when set. ``leeway_seconds`` absorbs clock
    skew between the token issuer and this server.
    """

    hs256_secret: str | None = None
    public_key_pem: str | None = None
    jwks: dict[str, Any] | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 5

    def __post_init__(self) -> None:
        if not math.isfinite(self.leeway_seconds) or self.leeway_seconds < 0:
            raise ValueError("leeway_seconds must be a finite number >= 0")
        if self.hs256_secret == "":
            raise ValueError("hs256_secret must not be empty; use None to disable HS256")

    def __repr__(self) -> str:
        # The HS256 secret must never reach logs via a stray repr().
        secret = "None" if self.hs256_secret is None else "'<redacted>'"
        pem = "None" if self.public_key_pem is None else "'<pem>'"
        jwks = "None" if self.jwks is None else f"<{len(self.jwks.get('keys') or [])} keys>"
        return (
            f"AuthConfig(hs256_secret={secret}, public_key_pem={pem}, jwks={jwks}, "
            f"issuer={self.issuer!r}, audience={self.audience!r}, leeway_seconds={self.leeway_seconds!r})"
        )

    @property
    def has_keys(self) -> bool:
        """Whether any token could possibly verify under this config."""
        return self.hs256_secret is not None or self.public_key_pem is not None or self.jwks is not None

    @classmethod
    def from_env(
        cls, data_dir: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> AuthConfig:
        """Read ``BACKEND_JWT_*`` variables (empty values count as unset).

        With no secret or key configured and a ``data_dir`` given, fall back to
        a per-deployment random HS256 secret so local development works out of
        the box without ever shipping a well-known default secret.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        secret = get(ENV_SECRET)
        key_file = get(ENV_PUBLIC_KEY_FILE)
        jwks_file = get(ENV_JWKS_FILE)
        public_key_pem = _read_text(key_file, ENV_PUBLIC_KEY_FILE) if key_file else None
        jwks = _read_jwks(jwks_file) if jwks_file else None
        if secret is None and key_file is None and jwks_file is None and data_dir is not None:
            secret = load_or_create_dev_secret(data_dir)
        return cls(
            hs256_secret=secret,
            public_key_pem=public_key_pem,
            jwks=jwks,
            issuer=get(ENV_ISSUER),
            audience=get(ENV_AUDIENCE),
        )


def _read_text(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{variable}={path!r} cannot be read: {exc.strerror or exc}") from exc


def _read_jwks(path: str) -> dict[str, Any]:
    text = _read_text(path, ENV_JWKS_FILE)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{ENV_JWKS_FILE}={path!r} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{ENV_JWKS_FILE}={path!r} must be a JWKS object with a 'keys' list")
    return document
