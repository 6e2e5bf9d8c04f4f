"""Giving back what a booking paid, by the way it was paid (C7, F3, F14): credits to their very lots, a
membership use to its period, a drop-in payment queued for refund to its original method."""

from __future__ import annotations

from typing import Any

from . import ledger
from .membership import release
from .outbox import notify

__all__ = ["refund_booking"]


async def refund_booking(ctx: Any, booking: dict[str, Any], reason: str) -> dict[str, Any]:
    """Credits back to their lots (``ledger.Refund``; a second call finds nothing left to return), or the
    drop-in payment queued for refund (``{amountCents}``; callers refund a booking once)."""
    if booking.get("payWith") == "credits":
        result = await ledger.refund(ctx, booking["businessId"], booking, reason)
        return result.to_json()
    if booking.get("payWith") == "membership":
        return await release(ctx, booking)
    amount = booking.get("amountCents") or 0
    if amount > 0:
        await notify(ctx, booking["businessId"], "refund_payment", booking["memberId"], bookingId=booking["_id"],
                     amountCents=amount, quote=booking.get("quote"), reason=reason)
    return {"amountCents": amount}
