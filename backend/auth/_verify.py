"""Token verification: signature first, then time and audience rules, then identity.

Claims are only read after the signature checks out, and error messages are
built from fixed text plus short, truncated claim values, never from the token.
"""

from __future__ import annotations

import time
from typing import Any, Final

import jwt
import msgspec
from jwt.exceptions import InvalidSignatureError, InvalidTokenError

from ._config import AuthConfig
from ._identity import AuthFailed, UserIdentity, format_time, is_numeric_date
from ._keys import VerificationKey, load_keys

MAX_TOKEN_CHARS: Final = 64 * 1024  # far above real tokens; bounds work done on garbage
_SHOW_LIMIT: Final = 80

# Signature checking only; the claim rules below are ours so that ``now`` is
# injectable and every failure maps to one stable code with a precise message.
_JWS: Final = jwt.PyJWS(options={"verify_signature": True, "enforce_minimum_key_length": True})


class TokenVerifier:
    """Verifies bearer JWTs against one ``AuthConfig``; safe to share across tasks."""

    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._keys: tuple[VerificationKey, ...] = load_keys(config)
        self._algorithms: tuple[str, ...] = tuple(sorted({k.algorithm for k in self._keys}))

    @property
    def config(self) -> AuthConfig:
        return self._config

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The only ``alg`` header values this verifier will accept."""
        return self._algorithms

    def verify(self, token: str | None, now: float | None = None) -> UserIdentity:
        """Return the identity a token proves, or raise ``AuthFailed``."""
        now = time.time() if now is None else now
        if token is None or (isinstance(token, str) and not token.strip()):
            raise AuthFailed("MissingToken", "no token was provided")
        if not isinstance(token, str):
            raise AuthFailed("MalformedToken", f"token must be a string, not {type(token).__name__}")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthFailed("MalformedToken", f"token is longer than {MAX_TOKEN_CHARS} characters")
        header = self._header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthFailed("UnsupportedAlgorithm", self._algorithm_message(alg))
        payload = self._verified_payload(token, alg, header.get("kid"))
        self._check_times(payload, now)
        self._check_issuer(payload)
        self._check_audience(payload)
        return UserIdentity.from_claims(payload)

    def is_expired(self, identity: UserIdentity, now: float | None = None) -> bool:
        """Whether a previously verified identity has expired (same leeway as ``verify``).

        Sessions outlive tokens, so the engine calls this before every function run.
        """
        if identity.expires_at is None:
            return False
        now = time.time() if now is None else now
        return now >= identity.expires_at + self._config.leeway_seconds

    def check_not_expired(self, identity: UserIdentity, now: float | None = None) -> None:
        """Raise ``AuthFailed("TokenExpired", ...)`` if ``is_expired``; a one-line guard for callers."""
        if self.is_expired(identity, now) and identity.expires_at is not None:
            raise AuthFailed("TokenExpired", f"token expired at {format_time(identity.expires_at)}")

    def _header(self, token: str) -> dict[str, Any]:
        if token.count(".") != 2:
            raise AuthFailed(
                "MalformedToken", "token is not a compact JWS (expected header.payload.signature)"
            )
        try:
            header = _JWS.get_unverified_header(token)
        except InvalidTokenError:
            raise AuthFailed(
                "MalformedToken", "token segments are not valid base64url or its header is not a JSON object"
            ) from None
        return header

    def _algorithm_message(self, alg: object) -> str:
        allowed = (
            ", ".join(self._algorithms) if self._algorithms else "none (no verification keys configured)"
        )
        if alg is None:
            return f"token header has no alg; accepted algorithms: {allowed}"
        return f"token algorithm {_show(alg)} is not accepted; accepted algorithms: {allowed}"

    def _verified_payload(self, token: str, alg: str, kid: object) -> dict[str, Any]:
        candidates = [k for k in self._keys if k.algorithm == alg]
        if isinstance(kid, str) and any(k.kid is not None for k in candidates):
            with_kid = [k for k in candidates if k.kid == kid]
            # A kid we do not know may still belong to a lone PEM key without a kid.
            candidates = with_kid or [k for k in candidates if k.kid is None]
            if not candidates:
                raise AuthFailed("BadSignature", f"no configured {alg} key has kid {_show(kid)}")
        for key in candidates:
            try:
                raw = _JWS.decode(token, key.key, algorithms=[alg])
            except InvalidSignatureError:
                continue
            except InvalidTokenError:
                raise AuthFailed("MalformedToken", "token could not be decoded as a JWS") from None
            return _parse_payload(raw)
        raise AuthFailed("BadSignature", f"token signature does not verify with any configured {alg} key")

    def _check_times(self, payload: dict[str, Any], now: float) -> None:
        leeway = self._config.leeway_seconds
        exp, nbf = payload.get("exp"), payload.get("nbf")
        if exp is not None:
            if not is_numeric_date(exp):
                raise AuthFailed("MalformedToken", "token exp claim must be a finite number of epoch seconds")
            if now >= exp + leeway:
                raise AuthFailed(
                    "TokenExpired",
                    f"token expired at {format_time(exp)} (now {format_time(now)}, leeway {leeway:g}s)",
                )
        if nbf is not None:
            if not is_numeric_date(nbf):
                raise AuthFailed("MalformedToken", "token nbf claim must be a finite number of epoch seconds")
            if now + leeway < nbf:
                raise AuthFailed(
                    "TokenNotYetValid",
                    f"token is not valid before {format_time(nbf)} (now {format_time(now)}, leeway {leeway:g}s)",
                )

    def _check_issuer(self, payload: dict[str, Any]) -> None:
        expected = self._config.issuer
        if expected is None:
            return
        iss = payload.get("iss")
        if iss is None:
            raise AuthFailed("WrongIssuer", f"token has no iss claim; expected issuer {_show(expected)}")
        # Providers disagree about a trailing slash on the issuer URL; Convex ignores it too.
        if not isinstance(iss, str) or iss.rstrip("/") != expected.rstrip("/"):
            raise AuthFailed(
                "WrongIssuer",
                f"token issuer {_show(iss)} does not match the configured issuer {_show(expected)}",
            )

    def _check_audience(self, payload: dict[str, Any]) -> None:
        expected = self._config.audience
        if expected is None:
            return
        aud = payload.get("aud")
        if aud is None:
            raise AuthFailed("WrongAudience", f"token has no aud claim; expected audience {_show(expected)}")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthFailed("MalformedToken", "token aud claim must be a string or a list of strings")
        if expected not in audiences:
            raise AuthFailed(
                "WrongAudience",
                f"token audience {_show(aud)} does not include the configured audience {_show(expected)}",
            )


def _parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise AuthFailed("MalformedToken", "token payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise AuthFailed("MalformedToken", "token payload must be a JSON object")
    return payload


def _show(value: object) -> str:
    """repr() of a claim value, truncated so attacker-chosen claims cannot flood logs."""
    text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."
