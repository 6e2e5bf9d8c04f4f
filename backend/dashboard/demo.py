"""Demo data for development: one studio with a venue, a week of classes, a staff member and two customers.

Everything is created through the booking platform's own mutations (as its owner), so the rows, audit trail
and notifications are exactly what the app would make. Seeding twice does nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..auth import UserIdentity
from ..auth._dev import DEV_ISSUER
from ..values import decode_value

if TYPE_CHECKING:
    from ..server import Backend

__all__ = ["DEMO_BUSINESS", "DEMO_USERS", "DemoUser", "existing_business", "seed", "seed_if_empty"]

DEMO_BUSINESS = "Harbour Yoga"
DEMO_TIMEZONE = "Europe/London"


@dataclass(frozen=True)
class DemoUser:
    subject: str
    name: str
    role: str


DEMO_USERS = (
    DemoUser("demo-olivia", "Olivia Park", "owner"),
    DemoUser("demo-sam", "Sam Rivera", "admin"),
    DemoUser("demo-casey", "Casey Lee", "customer"),
    DemoUser("demo-jordan", "Jordan Kim", "customer"),
)

# (name, local start time, minutes, RRULE, capacity)
_CLASSES = (
    ("Morning Flow", "07:30", 60, "FREQ=DAILY", 12),
    ("Lunchtime Pilates", "12:30", 45, "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", 8),
    ("Evening Yin", "19:00", 75, "FREQ=WEEKLY;BYDAY=MO,WE,FR,SU", 3),
    ("Saturday Vinyasa", "10:00", 90, "FREQ=WEEKLY;BYDAY=SA", 15),
)


def demo_identity(user: DemoUser, issuer: str = DEV_ISSUER) -> UserIdentity:
    return UserIdentity(subject=user.subject, issuer=issuer, token_identifier=f"{issuer}|{user.subject}",
                        name=user.name)


class SeedFailed(RuntimeError):
    pass


async def _call(backend: Backend, path: str, args: dict[str, Any], user: DemoUser) -> Any:
    outcome = await backend.runner.mutation(path, args, demo_identity(user))
    if outcome.error is not None:
        raise SeedFailed(f"{path}: {outcome.error}")
    return decode_value(outcome.value)


def _booking_schema(backend: Backend) -> bool:
    """The demo is the booking app's: a project with another schema has nothing to seed or sign in to."""
    return "businesses" in backend.schema.tables


async def existing_business(backend: Backend) -> str | None:
    if not _booking_schema(backend):
        return None
    assert backend.pool is not None
    async with backend.pool.acquire() as conn:
        found: str | None = await conn.fetchval("SELECT _id FROM businesses WHERE name = $1 LIMIT 1", DEMO_BUSINESS)
    return found


async def seed_if_empty(backend: Backend) -> bool:
    """Seed a database that has no business at all (a fresh clone's first ``dev``); True when it did.
    A project without the booking platform's functions and tables (any other app) is left alone."""
    assert backend.pool is not None
    if not _booking_schema(backend) or not _has_demo_functions(backend):
        return False
    async with backend.pool.acquire() as conn:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM businesses)"):
            return False
    await seed(backend)
    return True


def _has_demo_functions(backend: Backend) -> bool:
    needed = ("businesses:create", "businesses:update_settings", "members:add")
    try:
        for path in needed:
            backend.registry.resolve(path, allow_internal=False)
    except Exception:
        return False
    return True


async def seed(backend: Backend, *, booking_opens_days_before: int = 5) -> str:
    """Create the demo studio (unless it exists) and return its id.

    The booking window opens ``booking_opens_days_before`` days ahead, so the week's last classes show
    "booking opens …" rather than a book button.
    """
    found = await existing_business(backend)
    if found is not None:
        return found
    owner, staff, *customers = DEMO_USERS
    business = await _call(backend, "businesses:create",
                           {"name": DEMO_BUSINESS, "timezone": DEMO_TIMEZONE, "currency": "GBP"}, owner)
    await _call(backend, "businesses:update_settings",
                {"businessId": business, "bookingOpensDaysBefore": booking_opens_days_before}, owner)
    for user in (staff, *customers):
        await _call(backend, "members:add", {"businessId": business, "subject": user.subject, "role": user.role,
                                             "name": user.name}, owner)
    venue = await _call(backend, "venues:create",
                        {"businessId": business, "name": "Harbour Studio", "capacity": 20}, owner)
    today = dt.datetime.now(ZoneInfo(DEMO_TIMEZONE)).date()
    for name, start, minutes, rrule, capacity in _CLASSES:
        await _call(backend, "classes:create_template", {
            "businessId": business, "venueId": venue, "name": name, "startDate": today.isoformat(),
            "startTime": start, "durationMinutes": minutes, "rrule": rrule, "capacity": capacity,
        }, owner)
    members = await _members(backend, business)
    expires = (today + dt.timedelta(days=90)).isoformat()
    for user in customers:
        await _call(backend, "credits:grant", {"businessId": business, "memberId": members[user.subject],
                                               "credits": 10, "expiresOn": expires, "note": "welcome pack"}, staff)
    return str(business)


async def _members(backend: Backend, business: str) -> dict[str, str]:
    assert backend.pool is not None
    async with backend.pool.acquire() as conn:
        rows = await conn.fetch("SELECT _id, subject FROM members WHERE business_id = $1", business)
    return {r["subject"]: r["_id"] for r in rows}
