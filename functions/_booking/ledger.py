"""Credit lots and the append-only ledger (F1-F3, F11).

Every change to a lot's ``remaining`` is paired with a ledger row in the same transaction, so the sum of
``remaining`` over a member's lots always equals the sum of the member's ledger amounts. Two bookings that
spend the same lot both read and write its row, so SERIALIZABLE lets only one of them commit (the other is
retried and then sees the lot empty): a credit is never spent twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from functions._rules.policy import lot_covers_class, lot_expires_at, plan_consumption
from functions._rules.recurrence import resolve_zone
from functions._shared.settings import load_settings

from .model import collect

__all__ = ["Entitlement", "Lot", "Refund", "check_credits", "consume", "grant", "member_lots", "refund"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Lot:
    """A lot as the pure rules see it (``policy.CreditLot``)."""

    id: str
    remaining: int
    expires_at: dt.datetime
    granted_at: dt.datetime


def _lot(row: dict[str, Any]) -> Lot:
    granted = row.get("createdAt") or _EPOCH + dt.timedelta(milliseconds=row["_creationTime"])
    return Lot(row["_id"], row["remaining"], row["expiresAt"], granted)


async def member_lots(db: Any, business_id: str, member_id: str, *, valid_after: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The member's lots, soonest expiry first; with ``valid_after`` only those still valid then."""
    query = db.query("credit_lots")
    if valid_after is None:
        query = query.with_index("by_member_expiry", lambda q: q.eq("businessId", business_id).eq("memberId", member_id))
    else:
        query = query.with_index(
            "by_member_expiry", lambda q: q.eq("businessId", business_id).eq("memberId", member_id).gt("expiresAt", valid_after)
        )
    rows: list[dict[str, Any]] = await collect(query)
    return rows


@dataclass(frozen=True, slots=True)
class Entitlement:
    """Whether the member's credits pay for a class; ``plan`` is None with a reason when they cannot (F9)."""

    plan: list[tuple[Lot, int]] | None
    reason: Literal["no_entitlement", "expires_before_class"] | None
    needed: int
    available_at_class: int
    expiring_lots: list[dict[str, Any]] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "creditsNeeded": self.needed,
            "creditsAvailable": self.available_at_class,
            "expiringLots": self.expiring_lots or None,
        }


async def check_credits(
    db: Any, business_id: str, member_id: str, now: dt.datetime, starts_at: dt.datetime, credits: int) -> Entitlement:
    """Plan the spend of ``credits`` for a class at ``starts_at`` from lots valid now (F2, F3, F11)."""
    rows = [r for r in await member_lots(db, business_id, member_id, valid_after=now) if r["remaining"] > 0]
    lots = [_lot(r) for r in rows]
    covering = sum(lot.remaining for lot in lots if lot_covers_class(lot.expires_at, starts_at))
    plan = plan_consumption(lots, starts_at, credits)
    if plan is not None:
        return Entitlement(plan, None, credits, covering)
    short = [lot for lot in lots if not lot_covers_class(lot.expires_at, starts_at)]
    expiring: list[dict[str, Any]] = [
        {"lotId": lot.id, "remaining": lot.remaining, "expiresAt": lot.expires_at} for lot in short
    ]
    # Credits exist but run out before the class: say so, rather than a bare "no entitlement" (F2, F9).
    reason: Literal["no_entitlement", "expires_before_class"] = (
        "expires_before_class" if short and covering + sum(lot.remaining for lot in short) >= credits
        else "no_entitlement"
    )
    return Entitlement(None, reason, credits, covering, expiring)


async def consume(
    ctx: Any, business_id: str, member_id: str, booking_id: str, plan: list[tuple[Lot, int]], reason: str
) -> int:
    """Spend a planned set of lots for a booking; all of it or (by raising) none of it (F11)."""
    spent = 0
    for lot, amount in plan:
        # ``lot`` was read in this transaction; a concurrent spend of it makes one of the two commits fail.
        await ctx.db.patch(lot.id, {"remaining": lot.remaining - amount})
        await ctx.db.insert("credit_ledger", {
            "businessId": business_id, "memberId": member_id, "lotId": lot.id, "bookingId": booking_id,
            "kind": "consume", "amount": -amount, "reason": reason,
        })
        spent += amount
    return spent


@dataclass(frozen=True, slots=True)
class Refund:
    """What a refund gave back: ``expired_credits`` landed in lots that are no longer usable; with a grace
    period configured they are ``restored_credits`` instead, in a new lot valid until ``restored_until``."""

    credits: int
    expired_credits: int
    restored_credits: int = 0
    restored_lot_id: str | None = None
    restored_until: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"credits": self.credits, "expiredCredits": self.expired_credits}
        if self.restored_credits:
            data.update(restoredCredits=self.restored_credits, restoredLotId=self.restored_lot_id,
                        restoredUntil=self.restored_until)
        return data


async def refund(ctx: Any, business_id: str, booking: dict[str, Any], reason: str) -> Refund:
    """Return a booking's net spend to the very lots it came from (F3); a second call finds nothing left.

    A lot that has expired since still gets its credit back (the ledger stays whole). With the business's
    ``expiredCreditGraceDays`` set, such credits then move to a new lot valid for that many more days
    (an ``expire`` row on the old lot, an ``adjust`` row on the new one); otherwise they stay unusable and
    ``expired_credits`` says so, so the client can show it rather than a silent loss.
    """
    entries = await collect(ctx.db.query("credit_ledger").with_index(
        "by_booking", lambda q: q.eq("businessId", business_id).eq("bookingId", booking["_id"])
    ))
    net: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.get("lotId") is not None and entry["kind"] in ("consume", "refund"):
            net[entry["lotId"]] += entry["amount"]
    credits = 0
    expired: list[tuple[str, int, int]] = []  # (lot, remaining after the refund, credits refunded to it)
    for lot_id, amount in sorted(net.items()):
        if amount >= 0:
            continue
        lot = await ctx.db.get(lot_id, include_deleted=True)
        if lot is None:
            continue
        remaining = lot["remaining"] - amount
        await ctx.db.patch(lot_id, {"remaining": remaining})
        await _entry(ctx, booking, lot_id, "refund", -amount, reason)
        credits += -amount
        if lot["expiresAt"] <= ctx.now:
            expired.append((lot_id, remaining, -amount))
    lost = sum(n for _, _, n in expired)
    if not lost:
        return Refund(credits, 0)
    settings, business = await load_settings(ctx.db, business_id)
    if not settings.expired_credit_grace_days:
        return Refund(credits, lost)
    for lot_id, remaining, n in expired:
        await ctx.db.patch(lot_id, {"remaining": remaining - n})
        await _entry(ctx, booking, lot_id, "expire", -n, "grace_restore")
    last_day = ctx.now.astimezone(resolve_zone(business["timezone"])).date() + dt.timedelta(
        days=settings.expired_credit_grace_days)
    until = lot_expires_at(last_day, business["timezone"])
    lot_id = await ctx.db.insert("credit_lots", {
        "businessId": business_id, "memberId": booking["memberId"], "granted": lost, "remaining": lost,
        "expiresOn": last_day.isoformat(), "expiresAt": until, "note": f"restored after refund of {booking['_id']}",
    })
    await _entry(ctx, booking, lot_id, "adjust", lost, "grace_restore")
    return Refund(credits, 0, lost, lot_id, until)


async def _entry(ctx: Any, booking: dict[str, Any], lot_id: str, kind: str, amount: int, reason: str) -> None:
    await ctx.db.insert("credit_ledger", {
        "businessId": booking["businessId"], "memberId": booking["memberId"], "lotId": lot_id,
        "bookingId": booking["_id"], "kind": kind, "amount": amount, "reason": reason,
    })


async def grant(
    ctx: Any, business_id: str, member_id: str, credits: int, expires_on: str, expires_at: dt.datetime,
    note: str | None,
) -> str:
    """A new lot and its ``grant`` ledger row."""
    lot_id: str = await ctx.db.insert("credit_lots", {
        "businessId": business_id, "memberId": member_id, "granted": credits, "remaining": credits,
        "expiresOn": expires_on, "expiresAt": expires_at, "note": note,
    })
    await ctx.db.insert("credit_ledger", {
        "businessId": business_id, "memberId": member_id, "lotId": lot_id, "bookingId": None,
        "kind": "grant", "amount": credits, "reason": note,
    })
    return lot_id
