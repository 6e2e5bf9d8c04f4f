"""A studio for schedule tests: one business with venues and class series, driven through the public API.

Times are controlled by the backend's ``ManualClock``; rows are read back with plain SQL so tests see what
is stored, not what a function chooses to return.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from backend.testing import ManualClock, TestBackend

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """An aware instant from ISO text with an offset (``2025-03-23T09:00:00Z``)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Studio:
    tb: TestBackend
    business_id: str
    owner: str
    tag: str
    venues: dict[str, str] = field(default_factory=dict)  # name -> venue id
    members: dict[str, str] = field(default_factory=dict)  # name -> member id

    @property
    def clock(self) -> ManualClock:
        assert isinstance(self.tb.clock, ManualClock)
        return self.tb.clock

    def subject(self, name: str) -> str:
        return self.owner if name == "owner" else f"{self.tag}-{name}"

    async def call(self, kind: str, path: str, args: dict[str, Any], as_user: str = "owner") -> Any:
        method = getattr(self.tb, kind)
        return await method(path, args, as_user=self.subject(as_user))

    async def mutation(self, path: str, args: dict[str, Any], as_user: str = "owner") -> Any:
        return await self.call("mutation", path, args, as_user)

    async def query(self, path: str, args: dict[str, Any], as_user: str = "owner") -> Any:
        return await self.call("query", path, args, as_user)

    async def internal(self, path: str, args: dict[str, Any]) -> Any:
        from backend.values import decode_value

        outcome = await self.tb.runner.mutation(path, args, None, allow_internal=True)
        if outcome.error is not None:
            raise outcome.error
        return decode_value(outcome.value)

    async def member(self, name: str, role: str = "customer") -> str:
        member_id: str = await self.mutation(
            "members:add", {"businessId": self.business_id, "subject": self.subject(name), "role": role, "name": name}
        )
        self.members[name] = member_id
        return member_id

    async def venue(self, name: str, timezone: str | None = None, capacity: int | None = None) -> str:
        args: dict[str, Any] = {"businessId": self.business_id, "name": name}
        if timezone is not None:
            args["timezone"] = timezone
        if capacity is not None:
            args["capacity"] = capacity
        venue_id: str = await self.mutation("venues:create", args)
        self.venues[name] = venue_id
        return venue_id

    async def template(self, venue: str, start_date: str, start_time: str, rrule: str, **extra: Any) -> str:
        args: dict[str, Any] = {
            "businessId": self.business_id, "venueId": self.venues[venue], "name": extra.pop("name", "Flow"),
            "startDate": start_date, "startTime": start_time, "durationMinutes": extra.pop("durationMinutes", 60),
            "rrule": rrule, "capacity": extra.pop("capacity", 10), **extra,
        }
        template_id: str = await self.mutation("classes:create_template", args)
        return template_id

    async def settings(self, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.mutation(
            "businesses:update_settings", {"businessId": self.business_id, **values}
        )
        return result

    async def schedule(self, start: str, end: str, venue: str | None = None, as_user: str = "owner") -> list[dict[str, Any]]:
        args: dict[str, Any] = {"businessId": self.business_id, "from": start, "to": end}
        if venue is not None:
            args["venueId"] = self.venues[venue]
        result: list[dict[str, Any]] = await self.query("classes:list_instances", args, as_user)
        return result

    async def rows(self, template_id: str | None = None, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Instance rows of the business (or of one template), in start order."""
        sql = "SELECT * FROM class_instances WHERE business_id = $1"
        args: list[Any] = [self.business_id]
        if template_id is not None:
            sql += " AND template_id = $2"
            args.append(template_id)
        if not include_deleted:
            sql += " AND NOT deleted"
        rows = await self.tb.sql(sql + " ORDER BY starts_at, _id", *args)
        return [dict(r) for r in rows]

    async def row(self, table: str, document_id: str) -> dict[str, Any]:
        rows = await self.tb.sql(f"SELECT * FROM {table} WHERE _id = $1", document_id)
        return dict(rows[0])

    async def simulate_booking(self, instance_id: str, booked: int = 1) -> None:
        """Mark seats as taken without a bookings row: what generation and edits must respect."""
        await self.tb.sql("UPDATE class_instances SET booked = $2 WHERE _id = $1", instance_id, booked)

    async def book(self, name: str, instance_id: str, credits: int = 5) -> str:
        """A real booking paid with credits (granted first), made by staff for the member (window override)."""
        if name not in self.members:
            await self.member(name)
        await self.mutation("credits:grant", {"businessId": self.business_id, "memberId": self.members[name],
                                              "credits": credits, "expiresOn": "2099-12-31"})
        result: dict[str, Any] = await self.mutation(
            "bookings:book", {"instanceId": instance_id, "memberId": self.members[name], "payWith": "credits",
                              "overrideReason": "booked by the front desk"})
        assert result["status"] == "confirmed", result
        booking_id: str = result["bookingId"]
        return booking_id

    async def credits(self, name: str) -> int:
        rows = await self.tb.sql(
            "SELECT COALESCE(SUM(amount), 0) AS s FROM credit_ledger WHERE member_id = $1", self.members[name])
        return int(rows[0]["s"])

    async def outbox(self, kind: str) -> list[dict[str, Any]]:
        rows = await self.tb.sql(
            "SELECT * FROM outbox WHERE business_id = $1 AND kind = $2 ORDER BY _creation_time, _id", self.business_id, kind
        )
        return [dict(r) for r in rows]

    async def extend(self) -> dict[str, int]:
        result: dict[str, int] = await self.internal("classes:extend_horizons", {"businessId": self.business_id})
        return result


async def new_studio(tb: TestBackend, timezone: str = "UTC", currency: str = "GBP") -> Studio:
    tag = uuid.uuid4().hex[:10]
    owner = f"{tag}-owner"
    business_id = await tb.mutation(
        "businesses:create", {"name": f"Studio {tag}", "timezone": timezone, "currency": currency}, as_user=owner
    )
    studio = Studio(tb, business_id, owner, tag)
    rows = await tb.sql("SELECT _id FROM members WHERE business_id = $1 AND subject = $2", business_id, owner)
    studio.members["owner"] = rows[0]["_id"]
    return studio
