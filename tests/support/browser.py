"""Helpers for the browser tests: pages in contexts of their own, screenshots, the demo studio's rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from backend.testing import TestBackend

ARTIFACTS = Path(__file__).resolve().parents[1] / "browser" / "artifacts"


async def new_page(browser: Any, url: str, *, width: int = 1280, height: int = 900) -> Any:
    """A page in a browser context of its own (its own storage and sockets), errors surfaced in the test."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    track_errors(page)
    await page.goto(url)
    return page


def track_errors(page: Any) -> None:
    """Uncaught script errors of the page collect in ``page.errors`` (tests assert it stays empty)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def business_of(tb: TestBackend) -> str:
    rows = await tb.sql("SELECT _id FROM businesses LIMIT 1")
    return str(rows[0]["_id"])


async def member_id(tb: TestBackend, subject: str) -> str:
    rows = await tb.sql("SELECT _id FROM members WHERE subject = $1", subject)
    return str(rows[0]["_id"])


async def week_classes(tb: TestBackend) -> list[dict[str, Any]]:
    """The week's classes as the web app lists them (today and the six days after, in the studio's zone)."""
    business = await business_of(tb)
    now = dt.datetime.now(dt.UTC)
    classes: list[dict[str, Any]] = await tb.query("classes:list_instances", {
        "businessId": business, "from": (now - dt.timedelta(days=1)).isoformat(),
        "to": (now + dt.timedelta(days=8)).isoformat()}, as_user="demo-casey")
    return classes
