"""Headless Chromium (the Debian ``chromium`` package) driven by Playwright, against a served ``dev`` backend.

The browser is never downloaded by Playwright: ``executable_path`` points at the system's Chromium
(``BROWSER_EXECUTABLE``, default ``/usr/bin/chromium``). Where it or Playwright is missing, the tests skip
and say how to install them. Screenshots go to ``tests/browser/artifacts/`` (not committed); helpers live in ``tests/support/browser.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backend.dashboard.demo import seed
from backend.testing import TestBackend

EXECUTABLE = os.environ.get("BROWSER_EXECUTABLE", "/usr/bin/chromium")


def _browser_missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    if not (Path(EXECUTABLE).exists() or shutil.which(EXECUTABLE)):
        return (f"no Chromium at {EXECUTABLE}: install the Debian package (apt-get install -y chromium) "
                "or set BROWSER_EXECUTABLE")
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    reason = _browser_missing()
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
async def app() -> AsyncIterator[TestBackend]:
    """A ``dev`` server (dashboard open on loopback, demo sign-in) with the demo studio."""
    async with TestBackend(dev=True) as tb:
        assert tb.backend is not None
        await seed(tb.backend)
        yield tb


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=EXECUTABLE, args=["--no-sandbox"])
        yield launched
        await launched.close()
