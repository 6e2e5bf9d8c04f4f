"""Shared fixtures: one started backend (real PostgreSQL, real server) for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend.testing import TestBackend


@pytest.fixture(scope="session")
async def tb() -> AsyncIterator[TestBackend]:
    async with TestBackend() as harness:
        yield harness
