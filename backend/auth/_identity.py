"""The verified caller identity and the error raised when a token is refused.

These two types are the whole contract between token verification and the rest
of the engine, so they live apart from the verification machinery.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

import msgspec

AuthErrorCode = Literal[
    "MissingToken",
    "MalformedToken",
    "BadSignature",
    "TokenExpired",
    "TokenNotYetValid",
    "WrongIssuer",
    "WrongAudience",
    "UnsupportedAlgorithm",
    "MissingSubject",
]

AUTH_ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(AuthErrorCode))


class AuthFailed(Exception):
    """A token was refused; ``code`` is stable for clients, ``message`` is for humans.

    Deliberately a plain ``Exception`` so this package stays independent of the
    engine's error hierarchy; the engine adapts it at its boundary. The message
    never contains the token itself, so it is safe to log and to send back.
    """

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        if code not in AUTH_ERROR_CODES:
            raise ValueError(f"unknown auth error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code: AuthErrorCode = code
        self.message: str = message

    def __repr__(self) -> str:
        return f"AuthFailed(code={self.code!r}, message={self.message!r})"


#: Subjects starting with this are the dashboard's admins; tokens cannot carry them.
RESERVED_SUBJECT_PREFIX: Final = "admin:"

# OIDC standard claim -> Convex UserIdentity field (see Convex's keybroker crate).
_OIDC_TO_CONVEX: Final[dict[str, str]] = {
    "given_name": "givenName",
    "family_name": "familyName",
    "nickname": "nickname",
    "preferred_username": "preferredUsername",
    "profile": "profileUrl",
    "picture": "pictureUrl",
    "email_verified": "emailVerified",
    "gender": "gender",
    "birthdate": "birthday",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phoneNumber",
    "phone_number_verified": "phoneNumberVerified",
    "address": "address",
    "updated_at": "updatedAt",
}

# Token mechanics rather than facts about the user; Convex does not expose them.
_PROTOCOL_CLAIMS: Final[frozenset[str]] = frozenset({"aud", "iat", "nbf", "jti"})


class UserIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the caller is, as established by a verified token.

    ``claims`` keeps every claim not lifted into a field (including ``aud``,
    ``iat`` and custom claims) so functions can read provider-specific data.
    """

    subject: str
    issuer: str | None
    token_identifier: str
    name: str | None = None
    email: str | None = None
    expires_at: float | None = None
    claims: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_claims(cls, payload: Mapping[str, Any]) -> UserIdentity:
        """Build an identity from already-verified claims (no signature or time checks)."""
        sub = payload.get("sub")
        if sub is None:
            raise AuthFailed("MissingSubject", "token has no sub claim; a subject is required")
        if not isinstance(sub, str) or not sub:
            raise AuthFailed("MissingSubject", "token sub claim must be a non-empty string")
        if sub.lstrip().casefold().startswith(RESERVED_SUBJECT_PREFIX):
            # Audit rows name dashboard writes ``admin:<name>``; no token may claim to be one, nor look like
            # one to a reader of the audit trail (``Admin:alice``, `` admin:alice``).
            raise AuthFailed("MalformedToken", f"token sub claim must not start with {RESERVED_SUBJECT_PREFIX!r}")
        iss = payload.get("iss")
        if iss is not None and not isinstance(iss, str):
            raise AuthFailed("MalformedToken", "token iss claim must be a string")
        exp = payload.get("exp")
        if exp is not None and not is_numeric_date(exp):
            raise AuthFailed("MalformedToken", "token exp claim must be a finite number of epoch seconds")
        name, email = payload.get("name"), payload.get("email")
        lifted = {"sub", "iss", "exp"}
        if isinstance(name, str):
            lifted.add("name")
        if isinstance(email, str):
            lifted.add("email")
        return cls(
            subject=sub,
            issuer=iss,
            token_identifier=f"{iss or ''}|{sub}",
            name=name if isinstance(name, str) else None,
            email=email if isinstance(email, str) else None,
            expires_at=float(exp) if exp is not None else None,
            claims={k: v for k, v in payload.items() if k not in lifted},
        )

    def to_wire(self) -> dict[str, Any]:
        """Convex's ``ctx.auth.getUserIdentity()`` shape: camelCase, None omitted.

        Core fields are written last so a custom claim can never impersonate
        ``tokenIdentifier``, ``subject`` or ``issuer``.
        """
        wire: dict[str, Any] = {}
        for key, value in self.claims.items():
            if key in _PROTOCOL_CLAIMS or value is None:
                continue
            if key in _OIDC_TO_CONVEX:
                value = _convex_value(key, value)
                key = _OIDC_TO_CONVEX[key]
            wire[key] = value
        core = {
            "tokenIdentifier": self.token_identifier,
            "subject": self.subject,
            "issuer": self.issuer,
            "name": self.name,
            "email": self.email,
        }
        for key, value in core.items():
            wire.pop(key, None)
            if value is not None:
                wire[key] = value
        return wire


def is_numeric_date(value: object) -> bool:
    """JWT NumericDate: a finite JSON number (bools are ints in Python, so excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_time(epoch: float) -> str:
    """Render epoch seconds as ``2026-01-01T00:00:00Z`` for error messages."""
    try:
        moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{epoch:g} (epoch seconds)"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _convex_value(claim: str, value: Any) -> Any:
    """Convex flattens ``address`` to its formatted text and ``updated_at`` to RFC 3339."""
    if claim == "address" and isinstance(value, dict) and isinstance(value.get("formatted"), str):
        return value["formatted"]
    if claim == "updated_at" and is_numeric_date(value):
        return format_time(float(value))
    return value
