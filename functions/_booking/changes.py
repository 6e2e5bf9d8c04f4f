"""When the studio changes a class people are booked into: their bookings follow it (T7, W2, C4).

A moved class (new start, end or venue) carries its members along: each active booking and waitlist entry
takes the new times (overlap checks and ``bookings:mine`` read them), is marked ``policy.freeCancel`` so the
member may leave without a penalty whenever they like, and a ``class_changed`` notice is queued. A class
given more seats fills them from its waitlist in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .model import collect
from .outbox import notify
from .waitlist import promote

__all__ = ["FOLLOWING", "class_moved", "seats_added"]

#: Bookings that follow their class when it moves: seated ones and waiting ones.
FOLLOWING = ("confirmed", "checked_in", "waitlisted", "offered")


async def class_moved(
    ctx: Any, instance: dict[str, Any], changes: list[str], starts_at: dt.datetime, ends_at: dt.datetime
) -> list[str]:
    """Move the class's active bookings to its new times with a free-cancel option; returns their ids."""
    business_id, instance_id = instance["businessId"], instance["_id"]
    moved: list[str] = []
    for status in FOLLOWING:
        rows = await collect(ctx.db.query("bookings").with_index(
            "by_instance_status",
            lambda q, s=status: q.eq("businessId", business_id).eq("instanceId", instance_id).eq("status", s),
        ))
        for row in rows:
            policy = {**(row.get("policy") or {}), "freeCancel": True}
            await ctx.db.patch(row["_id"], {"startsAt": starts_at, "endsAt": ends_at, "policy": policy})
            await notify(ctx, business_id, "class_changed", row["memberId"], instanceId=instance_id,
                         bookingId=row["_id"], changes=changes, startsAt=starts_at, endsAt=ends_at,
                         status=row["status"], freeCancel=True)
            moved.append(row["_id"])
    return moved


async def seats_added(ctx: Any, instance: dict[str, Any]) -> list[str]:
    """More seats than bookings: promote from the waitlist now (W2), under the usual cutoff (W3)."""
    if instance["capacity"] <= instance["booked"] or instance["waitlisted"] <= 0:
        return []
    return await promote(ctx, instance)
