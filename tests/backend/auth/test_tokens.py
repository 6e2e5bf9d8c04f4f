"""Token verification: every failure code, each key type, JWKS, leeway, and the dev secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from backend.auth import (
    AuthConfig,
    AuthFailed,
    TokenVerifier,
    UserIdentity,
    load_or_create_dev_secret,
    mint_dev_token,
)

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "user-1", "iss": "https://issuer.test", "iat": NOW, "exp": NOW + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: Any, signature: bytes = b"sig") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def hs_verifier(**config: Any) -> TokenVerifier:
    return TokenVerifier(AuthConfig(hs256_secret=SECRET, **config))


def expect_failure(verifier: TokenVerifier, token: Any, code: str, now: float = NOW) -> AuthFailed:
    """Assert the code, and that no rendering of the error leaks the token."""
    with pytest.raises(AuthFailed) as info:
        verifier.verify(token, now=now)
    err = info.value
    assert err.code == code, err.message
    assert str(err) == f"{code}: {err.message}"
    if isinstance(token, str) and token.strip():
        for rendering in (err.message, str(err), repr(err)):
            assert token.strip() not in rendering
            for segment in token.split("."):
                if len(segment) >= 16:
                    assert segment not in rendering
    return err


# --- happy paths ---------------------------------------------------------------------------


def test_hs256_dev_token_round_trip() -> None:
    token = mint_dev_token(
        SECRET, "user-1", name="Ada", email="ada@example.com", extra={"role": "admin"}, now=NOW
    )
    identity = TokenVerifier(AuthConfig(hs256_secret=SECRET)).verify(token, now=NOW + 10)
    assert identity == UserIdentity(
        subject="user-1",
        issuer="tidewater-dev",
        token_identifier="tidewater-dev|user-1",
        name="Ada",
        email="ada@example.com",
        expires_at=float(NOW + 3600),
        claims={"role": "admin", "iat": NOW},
    )


def test_rs256_with_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(AuthConfig(public_key_pem=pem(rsa_key)))
    assert verifier.algorithms == ("RS256",)
    identity = verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"), now=NOW)
    assert (identity.subject, identity.token_identifier) == ("user-1", "https://issuer.test|user-1")


def test_es256_with_pem(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(AuthConfig(public_key_pem=pem(ec_key)))
    assert verifier.algorithms == ("ES256",)
    assert verifier.verify(jwt.encode(claims(sub="e"), ec_key, algorithm="ES256"), now=NOW).subject == "e"


def test_to_wire_matches_convex_shape() -> None:
    payload = claims(
        name="Ada",
        aud="app",
        nbf=NOW,
        jti="j1",
        given_name="Ada",
        picture="https://p/x.png",
        email_verified=True,
        address={"formatted": "1 Main St"},
        updated_at=NOW,
        tenant="t1",
        tokenIdentifier="attacker|spoof",
        nickname=None,
    )
    wire = UserIdentity.from_claims(payload).to_wire()
    assert wire == {
        "tokenIdentifier": "https://issuer.test|user-1",
        "subject": "user-1",
        "issuer": "https://issuer.test",
        "name": "Ada",
        "givenName": "Ada",
        "pictureUrl": "https://p/x.png",
        "emailVerified": True,
        "address": "1 Main St",
        "updatedAt": "2026-01-01T00:00:00Z",
        "tenant": "t1",
    }
    # Without an iss claim, a custom "issuer" claim must not fill the core field either.
    spoof = UserIdentity.from_claims({"sub": "u", "issuer": "https://trusted.test", "name": {"x": 1}})
    assert spoof.to_wire() == {"tokenIdentifier": "|u", "subject": "u"}


# --- JWKS ----------------------------------------------------------------------------------


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        entry = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig"}


@pytest.fixture()
def jwks_verifier(
    rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> TokenVerifier:
    keys = [
        jwk(rsa_key, "k1"),
        jwk(rsa_key2, "k2"),
        jwk(ec_key, "e1"),
        {"kty": "oct", "k": b64(b"x" * 32), "kid": "sym"},  # ignored: not a public key
        {**jwk(rsa_key, "enc"), "use": "enc"},  # ignored: encryption key
    ]
    return TokenVerifier(AuthConfig(jwks={"keys": keys}))


def test_jwks_selects_key_by_kid(jwks_verifier: TokenVerifier, rsa_key2: rsa.RSAPrivateKey) -> None:
    assert jwks_verifier.algorithms == ("ES256", "RS256")
    token = jwt.encode(claims(sub="via-k2"), rsa_key2, algorithm="RS256", headers={"kid": "k2"})
    assert jwks_verifier.verify(token, now=NOW).subject == "via-k2"


def test_jwks_es256_and_kidless_token(
    jwks_verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    es = jwt.encode(claims(sub="ec"), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert jwks_verifier.verify(es, now=NOW).subject == "ec"
    kidless = jwt.encode(claims(sub="nokid"), rsa_key2, algorithm="RS256")
    assert jwks_verifier.verify(kidless, now=NOW).subject == "nokid"


def test_jwks_wrong_or_unknown_kid(jwks_verifier: TokenVerifier, rsa_key2: rsa.RSAPrivateKey) -> None:
    wrong = jwt.encode(claims(), rsa_key2, algorithm="RS256", headers={"kid": "k1"})
    err = expect_failure(jwks_verifier, wrong, "BadSignature")
    assert err.message == "token signature does not verify with any configured RS256 key"
    unknown = jwt.encode(claims(), rsa_key2, algorithm="RS256", headers={"kid": "nope"})
    assert expect_failure(jwks_verifier, unknown, "BadSignature").message == (
        "no configured RS256 key has kid 'nope'"
    )


def test_jwks_without_usable_keys_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="no usable RS256 or ES256"):
        TokenVerifier(AuthConfig(jwks={"keys": [{"kty": "oct", "k": b64(b"x" * 32)}]}))


# --- failure codes -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_token(token: str | None) -> None:
    assert expect_failure(hs_verifier(), token, "MissingToken").message == "no token was provided"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "only.two",
        "a.b.c.d",
        "!!!.@@@.###",
        raw_token({"alg": "HS256"}, [1, 2])[:-3] + "%%%",
    ],
)
def test_malformed_token_structure(token: str) -> None:
    expect_failure(hs_verifier(), token, "MalformedToken")


def test_malformed_payload_after_valid_signature() -> None:
    not_object = jwt.PyJWS().encode(b"[1, 2]", SECRET, algorithm="HS256")
    err = expect_failure(hs_verifier(), not_object, "MalformedToken")
    assert err.message == "token payload must be a JSON object"
    bad_exp = jwt.encode(claims(exp="tomorrow"), SECRET, algorithm="HS256")
    err = expect_failure(hs_verifier(), bad_exp, "MalformedToken")
    assert err.message == "token exp claim must be a finite number of epoch seconds"


def test_bad_signature() -> None:
    forged = jwt.encode(claims(), "another-secret-that-is-long-enough-000", algorithm="HS256")
    err = expect_failure(hs_verifier(), forged, "BadSignature")
    assert err.message == "token signature does not verify with any configured HS256 key"
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    tampered = f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"
    expect_failure(hs_verifier(), tampered, "BadSignature")


def test_token_expired_names_the_time() -> None:
    token = mint_dev_token(SECRET, "u", ttl_seconds=3600, now=NOW - 3600)
    err = expect_failure(hs_verifier(), token, "TokenExpired", now=NOW + 60)
    assert err.message == "token expired at 2026-01-01T00:00:00Z (now 2026-01-01T00:01:00Z, leeway 5s)"


def test_token_not_yet_valid() -> None:
    token = jwt.encode(claims(nbf=NOW + 600), SECRET, algorithm="HS256")
    err = expect_failure(hs_verifier(), token, "TokenNotYetValid")
    assert err.message == (
        "token is not valid before 2026-01-01T00:10:00Z (now 2026-01-01T00:00:00Z, leeway 5s)"
    )


def test_wrong_issuer() -> None:
    verifier = hs_verifier(issuer="https://issuer.test")
    wrong = jwt.encode(claims(iss="https://evil.test"), SECRET, algorithm="HS256")
    assert expect_failure(verifier, wrong, "WrongIssuer").message == (
        "token issuer 'https://evil.test' does not match the configured issuer 'https://issuer.test'"
    )
    missing = jwt.encode(claims(iss=None), SECRET, algorithm="HS256")
    assert "no iss claim" in expect_failure(verifier, missing, "WrongIssuer").message
    slash = jwt.encode(claims(iss="https://issuer.test/"), SECRET, algorithm="HS256")
    assert verifier.verify(slash, now=NOW).issuer == "https://issuer.test/"


def test_wrong_audience() -> None:
    verifier = hs_verifier(audience="my-app")
    wrong = jwt.encode(claims(aud="other-app"), SECRET, algorithm="HS256")
    assert expect_failure(verifier, wrong, "WrongAudience").message == (
        "token audience 'other-app' does not include the configured audience 'my-app'"
    )
    missing = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert "no aud claim" in expect_failure(verifier, missing, "WrongAudience").message
    listed = jwt.encode(claims(aud=["x", "my-app"]), SECRET, algorithm="HS256")
    assert verifier.verify(listed, now=NOW).claims["aud"] == ["x", "my-app"]


def test_unsupported_algorithms(rsa_key: rsa.RSAPrivateKey) -> None:
    none_token = raw_token({"alg": "none", "typ": "JWT"}, claims(), b"")
    err = expect_failure(hs_verifier(), none_token, "UnsupportedAlgorithm")
    assert err.message == "token algorithm 'none' is not accepted; accepted algorithms: HS256"
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256")
    expect_failure(hs_verifier(), rs, "UnsupportedAlgorithm")
    hs512 = jwt.encode(claims(), SECRET + SECRET, algorithm="HS512")
    expect_failure(hs_verifier(), hs512, "UnsupportedAlgorithm")
    no_keys = TokenVerifier(AuthConfig())
    err = expect_failure(no_keys, mint_dev_token(SECRET, "u", now=NOW), "UnsupportedAlgorithm")
    assert err.message.endswith("accepted algorithms: none (no verification keys configured)")


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (None, "token has no sub claim; a subject is required"),
        ("", "token sub claim must be a non-empty string"),
        (42, "token sub claim must be a non-empty string"),
    ],
)
def test_missing_subject(sub: Any, message: str) -> None:
    payload = claims()
    payload.pop("sub")
    if sub is not None:
        payload["sub"] = sub
    token = jwt.PyJWS().encode(json.dumps(payload).encode(), SECRET, algorithm="HS256")
    assert expect_failure(hs_verifier(), token, "MissingSubject").message == message


# --- leeway and expiry re-checks -----------------------------------------------------------


def test_leeway_bounds_exp_and_nbf() -> None:
    token = jwt.encode(claims(exp=NOW, nbf=NOW + 5), SECRET, algorithm="HS256")
    assert hs_verifier().verify(token, now=NOW + 4).subject == "user-1"  # inside both windows
    assert hs_verifier().verify(token, now=NOW).subject == "user-1"  # nbf - 5s is allowed
    expect_failure(hs_verifier(), token, "TokenExpired", now=NOW + 5)
    expect_failure(hs_verifier(leeway_seconds=0), token, "TokenExpired", now=NOW)
    expect_failure(hs_verifier(leeway_seconds=0), token, "TokenNotYetValid", now=NOW - 1)
    expect_failure(hs_verifier(), token, "TokenNotYetValid", now=NOW - 1)


def test_is_expired_before_each_call() -> None:
    verifier = hs_verifier()
    identity = verifier.verify(mint_dev_token(SECRET, "u", ttl_seconds=60, now=NOW), now=NOW)
    assert verifier.is_expired(identity, now=NOW + 64) is False
    assert verifier.is_expired(identity, now=NOW + 65) is True
    verifier.check_not_expired(identity, now=NOW + 64)
    with pytest.raises(AuthFailed) as info:
        verifier.check_not_expired(identity, now=NOW + 65)
    assert (info.value.code, info.value.message) == ("TokenExpired", "token expired at 2026-01-01T00:01:00Z")
    forever = UserIdentity.from_claims({"sub": "svc"})
    assert verifier.is_expired(forever, now=NOW * 10) is False


# --- algorithm confusion -------------------------------------------------------------------


def forge_hs256_with_public_key(public_pem: str) -> str:
    """The classic attack: HMAC the token using the server's *public* key as the secret."""
    signing_input = raw_token({"alg": "HS256", "typ": "JWT"}, claims(sub="admin")).rsplit(".", 1)[0]
    mac = hmac.new(public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_algorithm_confusion_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem(rsa_key)
    forged = forge_hs256_with_public_key(public_pem)
    rs_only = TokenVerifier(AuthConfig(public_key_pem=public_pem))
    assert expect_failure(rs_only, forged, "UnsupportedAlgorithm").message == (
        "token algorithm 'HS256' is not accepted; accepted algorithms: RS256"
    )
    # With HS256 also enabled, the HS256 token is checked against the shared secret only.
    both = TokenVerifier(AuthConfig(hs256_secret=SECRET, public_key_pem=public_pem))
    assert both.algorithms == ("HS256", "RS256")
    expect_failure(both, forged, "BadSignature")
    with pytest.raises(ValueError, match="looks like a PEM"):
        TokenVerifier(AuthConfig(hs256_secret=public_pem))


# --- configuration and dev secret ----------------------------------------------------------


def test_dev_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_dev_secret(data_dir)
    path = data_dir / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create_dev_secret(data_dir) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["jwt_secret"]
    os.chmod(path, 0o644)
    assert load_or_create_dev_secret(data_dir) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_dev_secret(tmp_path / "other") != first


def test_from_env_falls_back_to_dev_secret(tmp_path: Path) -> None:
    config = AuthConfig.from_env(tmp_path, environ={})
    assert config.hs256_secret == (tmp_path / "jwt_secret").read_text().strip()
    token = mint_dev_token(config.hs256_secret, "dev-user", now=NOW)
    assert TokenVerifier(config).verify(token, now=NOW).subject == "dev-user"
    assert AuthConfig.from_env(None, environ={}).has_keys is False


def test_from_env_reads_variables(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem(rsa_key))
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk(ec_key, "e1")]}))
    config = AuthConfig.from_env(
        tmp_path,
        environ={
            "BACKEND_JWT_PUBLIC_KEY_FILE": str(key_file),
            "BACKEND_JWT_JWKS_FILE": str(jwks_file),
            "BACKEND_JWT_ISSUER": "https://issuer.test",
            "BACKEND_JWT_AUDIENCE": "my-app",
        },
    )
    assert (config.hs256_secret, config.issuer, config.audience) == (None, "https://issuer.test", "my-app")
    assert not (tmp_path / "jwt_secret").exists()
    verifier = TokenVerifier(config)
    token = jwt.encode(claims(aud="my-app"), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert verifier.verify(token, now=NOW).subject == "user-1"
    assert verifier.algorithms == ("ES256", "RS256")


def test_from_env_explicit_secret_skips_dev_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKEND_JWT_PUBLIC_KEY_FILE", "BACKEND_JWT_JWKS_FILE", "BACKEND_JWT_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKEND_JWT_SECRET", SECRET)
    monkeypatch.setenv("BACKEND_JWT_AUDIENCE", "")
    config = AuthConfig.from_env(tmp_path)
    assert (config.hs256_secret, config.audience) == (SECRET, None)
    assert list(tmp_path.iterdir()) == []
    assert SECRET not in repr(config)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(AuthConfig(hs256_secret="short"))
    with pytest.raises(ValueError, match="leeway_seconds"):
        AuthConfig(leeway_seconds=-1)
    with pytest.raises(ValueError, match="extra must not set exp, sub"):
        mint_dev_token(SECRET, "u", extra={"sub": "x", "exp": 1})
    with pytest.raises(ValueError, match="BACKEND_JWT_JWKS_FILE"):
        AuthConfig.from_env(None, environ={"BACKEND_JWT_JWKS_FILE": "/nonexistent/jwks.json"})


def test_auth_failed_is_engine_independent() -> None:
    assert AuthFailed.__mro__ == (AuthFailed, Exception, BaseException, object)
    err = AuthFailed("WrongAudience", "m")
    assert (err.code, err.message) == ("WrongAudience", "m")
    with pytest.raises(ValueError, match="unknown auth error code"):
        AuthFailed("Nope", "m")  # type: ignore[arg-type]


def test_messages_truncate_hostile_claims() -> None:
    hostile = "x" * 5000
    token = jwt.encode(claims(iss=hostile), SECRET, algorithm="HS256")
    err = expect_failure(hs_verifier(issuer="https://issuer.test"), token, "WrongIssuer")
    assert len(err.message) < 250
    assert hostile not in err.message
