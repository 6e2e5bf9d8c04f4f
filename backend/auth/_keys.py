"""Turn configured secrets and public keys into (algorithm, key) pairs.

Binding every key to exactly one algorithm up front is what defeats algorithm
confusion: the token header only selects among these pairs, it never decides
how a key is interpreted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from ._config import AuthConfig

MIN_HMAC_SECRET_BYTES: Final = 32  # RFC 7518 section 3.2: at least the hash size
MIN_RSA_BITS: Final = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key usable for exactly one algorithm; ``kid`` is set for JWKS keys."""

    algorithm: str
    key: str | PublicKey
    kid: str | None = None


def load_keys(config: AuthConfig) -> tuple[VerificationKey, ...]:
    """All verification keys from ``config``; raises ValueError on unusable configuration."""
    keys: list[VerificationKey] = []
    if config.hs256_secret is not None:
        if len(config.hs256_secret.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"hs256_secret must be at least {MIN_HMAC_SECRET_BYTES} bytes for HS256")
        try:
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(config.hs256_secret)
        except InvalidKeyError:
            # A public key used as an HMAC secret is the algorithm-confusion attack waiting to happen.
            raise ValueError(
                "hs256_secret looks like a PEM/SSH key; HS256 needs a random shared secret"
            ) from None
        keys.append(VerificationKey("HS256", config.hs256_secret))
    if config.public_key_pem is not None:
        key = _load_pem(config.public_key_pem)
        keys.append(VerificationKey(_algorithm_for(key, "public_key_pem"), key))
    if config.jwks is not None:
        keys.extend(_load_jwks(config.jwks))
    return tuple(keys)


def _load_pem(pem: str) -> PublicKey:
    data = pem.strip().encode("ascii", errors="replace")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            loaded: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            loaded = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(
            "public_key_pem is not a PEM public key or certificate (private keys are not accepted)"
        ) from exc
    if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(
            f"public_key_pem holds a {type(loaded).__name__}; only RSA and EC P-256 are supported"
        )
    return loaded


def _algorithm_for(key: PublicKey, where: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where}: RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return "RS256"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"{where}: EC curve {key.curve.name} is not supported; ES256 needs P-256")


def _load_jwks(document: dict[str, Any]) -> list[VerificationKey]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("jwks must be a JWKS object with a 'keys' list")
    keys: list[VerificationKey] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"jwks key #{index} is not an object")
        key = _load_jwk(entry, index)
        if key is not None:
            keys.append(key)
    if not keys:
        raise ValueError("jwks contains no usable RS256 or ES256 signing keys")
    return keys


def _load_jwk(entry: dict[str, Any], index: int) -> VerificationKey | None:
    """Parse one JWK, or None for keys this verifier deliberately ignores.

    Encryption keys, symmetric keys and other key types are skipped rather than
    rejected because provider JWKS files routinely mix them in.
    """
    kty, alg, kid = entry.get("kty"), entry.get("alg"), entry.get("kid")
    where = f"jwks key #{index}" + (f" (kid {kid!r})" if isinstance(kid, str) else "")
    if entry.get("use", "sig") != "sig" or kty not in ("RSA", "EC"):
        return None
    if alg is not None and alg not in ("RS256", "ES256"):
        return None
    if kty == "EC" and entry.get("crv") != "P-256":
        return None
    if kid is not None and not isinstance(kid, str):
        raise ValueError(f"{where}: kid must be a string")
    try:
        loaded = (RSAAlgorithm if kty == "RSA" else ECAlgorithm).from_jwk(json.dumps(entry))
    except Exception as exc:  # PyJWT raises several types for bad key material
        raise ValueError(f"{where}: invalid {kty} key material") from exc
    public = (
        loaded.public_key() if isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else loaded
    )
    algorithm = _algorithm_for(public, where)
    if alg is not None and alg != algorithm:
        raise ValueError(f"{where}: declares alg {alg} but holds a key for {algorithm}")
    return VerificationKey(algorithm, public, kid)
