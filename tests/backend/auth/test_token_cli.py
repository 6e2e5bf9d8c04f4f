"""``python -m backend token`` prints a development token the server's verifier accepts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.auth import AuthConfig, AuthFailed, TokenVerifier, load_or_create_dev_secret

ROOT = Path(__file__).resolve().parents[3]
SECRET = "cli-secret-" + "c" * 40


def run_token(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_JWT_")}
    return subprocess.run([sys.executable, "-m", "backend", "token", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_token_with_secret_verifies_with_every_claim(tmp_path: Path) -> None:
    before = int(time.time())
    done = run_token("--sub", "ann", "--name", "Ann Lee", "--email", "ann@example.test", "--ttl", "120",
                     "--data-dir", str(tmp_path), env={"BACKEND_JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    identity = TokenVerifier(AuthConfig(hs256_secret=SECRET)).verify(token)
    assert (identity.subject, identity.name, identity.email) == ("ann", "Ann Lee", "ann@example.test")
    assert identity.issuer == "tidewater-dev"
    assert identity.token_identifier == "tidewater-dev|ann"
    assert identity.expires_at is not None
    assert before + 120 <= identity.expires_at <= int(time.time()) + 120
    assert identity.expires_at - identity.claims["iat"] == 120
    with pytest.raises(AuthFailed) as refused:
        TokenVerifier(AuthConfig(hs256_secret="another-" + SECRET)).verify(token)
    assert refused.value.code == "BadSignature"
    assert not (tmp_path / "jwt_secret").exists()  # a configured secret wins over the dev secret


def test_token_honours_configured_issuer_and_audience(tmp_path: Path) -> None:
    env = {"BACKEND_JWT_SECRET": SECRET, "BACKEND_JWT_ISSUER": "https://auth.test", "BACKEND_JWT_AUDIENCE": "api"}
    done = run_token("--sub", "bob", "--data-dir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET, issuer="https://auth.test", audience="api"))
    identity = verifier.verify(done.stdout.strip())
    assert identity.subject == "bob" and identity.name is None and identity.email is None


def test_token_expires_after_its_ttl(tmp_path: Path) -> None:
    done = run_token("--sub", "ann", "--ttl", "60", "--data-dir", str(tmp_path), env={"BACKEND_JWT_SECRET": SECRET})
    verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET, leeway_seconds=0))
    with pytest.raises(AuthFailed) as refused:
        verifier.verify(done.stdout.strip(), now=time.time() + 61)
    assert refused.value.code == "TokenExpired"


def test_without_a_secret_the_data_dir_dev_secret_signs(tmp_path: Path) -> None:
    done = run_token("--sub", "dev-user", "--data-dir", str(tmp_path), env={})
    assert done.returncode == 0, done.stderr
    secret = load_or_create_dev_secret(tmp_path)  # created by the command on first use
    assert TokenVerifier(AuthConfig(hs256_secret=secret)).verify(done.stdout.strip()).subject == "dev-user"


def test_sub_is_required() -> None:
    done = run_token(env={"BACKEND_JWT_SECRET": SECRET})
    assert done.returncode != 0
    assert "--sub" in done.stderr
