"""Notifications are rows in ``outbox``, written in the transaction that caused them (W6, M7).

Nothing is sent from inside a mutation: a rollback removes the notification with the change, and a sender
picks up ``pending`` rows after commit.
"""

from __future__ import annotations

from typing import Any

from .model import plain

__all__ = ["notify"]


async def notify(ctx: Any, business_id: str, kind: str, recipient_id: str | None, **payload: Any) -> str:
    """Queue one notification; ``payload`` keys are camelCase and instants become ISO strings."""
    # Rows of one transaction share their creation time; the ordinal keeps them in the order they were
    # written, so webhooks deliver them in that order (H2).
    ordinal = getattr(ctx, "_outbox_ordinal", 0)
    ctx._outbox_ordinal = ordinal + 1
    doc = {
        "businessId": business_id,
        "kind": kind,
        "recipientId": recipient_id,
        "payload": plain(payload),
        "status": "pending",
        "ordinal": ordinal,
    }
    outbox_id: str = await ctx.db.insert("outbox", doc)
    return outbox_id
