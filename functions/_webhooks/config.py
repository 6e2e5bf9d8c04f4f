"""Limits of webhook delivery, each with a default, bounds and an environment override (read on every use,
so an operator's change applies without a code change and a test can set one for itself).

``BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS=1`` lets endpoints point at loopback, private, link-local and other
non-public addresses. It is off by default: a tenant must not be able to make the server call into its own
network (SSRF). Only an operator sets it, e.g. for tests against a local receiver.
"""

from __future__ import annotations

import os

__all__ = [
    "allow_private_urls",
    "batch_size",
    "max_rounds",
    "retry_base_seconds",
    "retry_max_seconds",
    "retry_window_seconds",
    "timeout_seconds",
]


def _number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = float(raw)
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside {low}..{high}")
    return value


def allow_private_urls() -> bool:
    """Whether endpoints may resolve to non-public addresses (``BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS``)."""
    return os.environ.get("BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS", "0").lower() in ("1", "true", "yes")


def timeout_seconds() -> float:
    """Seconds one delivery attempt may take, connect to last byte (``BACKEND_WEBHOOK_TIMEOUT_SECONDS``)."""
    return _number("BACKEND_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.05, 120.0)


def retry_base_seconds() -> float:
    """Wait after the first failed attempt; doubles after each further failure (``…_RETRY_BASE_SECONDS``)."""
    return _number("BACKEND_WEBHOOK_RETRY_BASE_SECONDS", 30.0, 0.0, 3600.0)


def retry_max_seconds() -> float:
    """Longest wait between two attempts (``BACKEND_WEBHOOK_RETRY_MAX_SECONDS``)."""
    return _number("BACKEND_WEBHOOK_RETRY_MAX_SECONDS", 3600.0, 1.0, 86400.0)


def retry_window_seconds() -> float:
    """How long after its first attempt a delivery keeps being retried before it is marked failed
    (``BACKEND_WEBHOOK_RETRY_WINDOW_SECONDS``, a day)."""
    return _number("BACKEND_WEBHOOK_RETRY_WINDOW_SECONDS", 86400.0, 1.0, 7 * 86400.0)


def batch_size() -> int:
    """Outbox events fanned out to endpoints per business in one pass (``BACKEND_WEBHOOK_BATCH``)."""
    return int(_number("BACKEND_WEBHOOK_BATCH", 200, 1, 5000))


def max_rounds() -> int:
    """Deliveries one run of the delivery action makes per endpoint at most, one after another in order
    (``BACKEND_WEBHOOK_MAX_ROUNDS``)."""
    return int(_number("BACKEND_WEBHOOK_MAX_ROUNDS", 50, 1, 10_000))
