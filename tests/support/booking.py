"""A small world for booking tests: one business, its members and classes, and calls made as its people."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from backend import AppError
from backend.testing import ManualClock, TestBackend
from backend.validators import camel

UTC = dt.UTC


@asynccontextmanager
async def clocked_backend(now: dt.datetime) -> AsyncIterator[TestBackend]:
    """A module's backend for booking rules: a clock the test moves, no scheduler loop, no served port."""
    async with TestBackend(clock=ManualClock(now), run_scheduler=False, serve=False) as harness:
        yield harness


def clock_at(tb: TestBackend, now: dt.datetime) -> ManualClock:
    """``tb``'s clock set back to ``now`` (each test starts from the module's instant)."""
    assert isinstance(tb.clock, ManualClock)
    tb.clock.set(now)
    return tb.clock


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class World:
    tb: TestBackend
    business_id: str
    owner: str
    tag: str
    members: dict[str, str] = field(default_factory=dict)  # subject -> member id

    async def internal(self, path: str, args: dict[str, Any]) -> Any:
        from backend.values import decode_value

        outcome = await self.tb.runner.mutation(path, args, None, allow_internal=True)
        if outcome.error is not None:
            raise outcome.error
        return decode_value(outcome.value)

    async def member(self, name: str, role: str = "customer") -> str:
        subject = f"{self.tag}-{name}"
        member_id: str = await self.internal(
            "testing_fixtures:add_member", {"businessId": self.business_id, "subject": subject, "role": role}
        )
        self.members[name] = member_id
        return member_id

    def subject(self, name: str) -> str:
        return self.owner if name == "owner" else f"{self.tag}-{name}"

    async def instance(self, starts_at: dt.datetime, **fields: Any) -> str:
        args = {"businessId": self.business_id, "startsAt": iso(starts_at), **{camel(k): v for k, v in fields.items()}}
        instance_id: str = await self.internal("testing_fixtures:add_instance", args)
        return instance_id

    async def settings(self, **values: Any) -> None:
        await self.internal("testing_fixtures:set_settings", {"businessId": self.business_id, "settings": values})

    async def grant(self, name: str, credits: int, expires_on: str, note: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"businessId": self.business_id, "memberId": self.members[name], "credits": credits,
                                "expiresOn": expires_on}
        if note is not None:
            args["note"] = note
        result: dict[str, Any] = await self.tb.mutation("credits:grant", args, as_user=self.owner)
        return result

    async def book(self, name: str, instance_id: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.tb.mutation(
            "bookings:book", {"instanceId": instance_id, **args}, as_user=self.subject(name)
        )
        return result

    async def refused(self, name: str, instance_id: str, **args: Any) -> dict[str, Any]:
        """Book and expect a refusal; returns the error data."""
        try:
            result = await self.book(name, instance_id, **args)
        except AppError as error:
            data: dict[str, Any] = error.data
            return data
        raise AssertionError(f"expected a refusal, got {result}")

    async def cancel(self, name: str, booking_id: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.tb.mutation(
            "bookings:cancel", {"bookingId": booking_id, **args}, as_user=self.subject(name)
        )
        return result

    async def balance(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.tb.query(
            "credits:balance", {"businessId": self.business_id, "memberId": self.members[name]}, as_user=self.owner
        )
        return result

    async def roster(self, instance_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.tb.query(
            "bookings:for_instance", {"instanceId": instance_id}, as_user=self.owner
        )
        return result

    async def instance_row(self, instance_id: str) -> dict[str, Any]:
        rows = await self.tb.sql("SELECT * FROM class_instances WHERE _id = $1", instance_id)
        return dict(rows[0])

    async def booking_row(self, booking_id: str) -> dict[str, Any]:
        rows = await self.tb.sql("SELECT * FROM bookings WHERE _id = $1", booking_id)
        return dict(rows[0])

    async def ledger_sum(self, name: str) -> int:
        rows = await self.tb.sql(
            "SELECT COALESCE(SUM(amount), 0) AS s FROM credit_ledger WHERE member_id = $1", self.members[name]
        )
        return int(rows[0]["s"])

    async def lots_sum(self, name: str) -> int:
        rows = await self.tb.sql(
            "SELECT COALESCE(SUM(remaining), 0) AS s FROM credit_lots WHERE member_id = $1", self.members[name]
        )
        return int(rows[0]["s"])

    async def outbox(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = await self.tb.sql(
            "SELECT * FROM outbox WHERE business_id = $1 ORDER BY _creation_time, _id", self.business_id
        )
        return [dict(r) for r in rows if kind is None or r["kind"] == kind]


async def new_world(tb: TestBackend, timezone: str = "UTC", **settings: Any) -> World:
    tag = uuid.uuid4().hex[:10]
    owner = f"{tag}-owner"
    business_id = await tb.mutation("businesses:create", {"name": f"Studio {tag}", "timezone": timezone},
                                    as_user=owner)
    world = World(tb, business_id, owner, tag)
    rows = await tb.sql("SELECT _id FROM members WHERE business_id = $1 AND subject = $2", business_id, owner)
    world.members["owner"] = rows[0]["_id"]
    if settings:
        await world.settings(**settings)
    return world
