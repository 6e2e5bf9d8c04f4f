"""Bearer-token (JWT) verification for the engine, independent of every other engine module.

``TokenVerifier(AuthConfig.from_env(data_dir)).verify(token)`` yields a
``UserIdentity`` or raises ``AuthFailed`` with a stable ``code``.
"""

from __future__ import annotations

from ._config import AuthConfig
from ._dev import load_or_create_dev_secret, mint_dev_token
from ._identity import AuthFailed, UserIdentity
from ._verify import TokenVerifier

__all__ = [
    "AuthConfig",
    "AuthFailed",
    "TokenVerifier",
    "UserIdentity",
    "load_or_create_dev_secret",
    "mint_dev_token",
]
