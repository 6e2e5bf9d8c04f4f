"""Credits: grant lots, read the balance and the ledger (F1-F3).

A lot granted "until 2025-06-30" is valid until the end of that local day in the business's zone (F2).
``balance`` reports ``available`` (credits in lots still valid now) and every lot; the sum of all lots'
``remaining`` always equals the member's ledger sum, because every change writes both in one transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from backend import (
    AppError,
    Forbidden,
    LocalDate,
    MutationCtx,
    NotFound,
    PaginationOpts,
    QueryCtx,
    mutation,
    query,
)
from functions._booking import ledger as book
from functions._booking.model import STAFF_ROLES
from functions._booking.outbox import notify
from functions._rules.policy import lot_expires_at
from functions._rules.recurrence import parse_local_date
from schema import BusinessId, MemberId

MAX_GRANT = 10_000


class GrantResult(msgspec.Struct, rename="camel"):
    lot_id: str
    expires_at: dt.datetime


class LotView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    lot_id: str
    granted: int
    remaining: int
    expires_on: str
    expires_at: dt.datetime
    expired: bool
    note: str | None = None


class Balance(msgspec.Struct, rename="camel", kw_only=True):
    member_id: str
    available: int
    expired: int
    total: int
    lots: list[LotView]


class LedgerEntry(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    entry_id: str
    kind: str
    amount: int
    at: dt.datetime
    lot_id: str | None = None
    booking_id: str | None = None
    reason: str | None = None
    actor: str | None = None


class LedgerPage(msgspec.Struct, rename="camel"):
    page: list[LedgerEntry]
    is_done: bool
    continue_cursor: str


async def _subject(ctx: QueryCtx | MutationCtx, member_id: str | None) -> dict[str, Any]:
    """The member whose credits are read: the caller by default; someone else only for staff."""
    caller = ctx.member
    assert caller is not None
    if member_id is None or member_id == caller["_id"]:
        return caller
    member = await ctx.db.get(member_id)
    if member is not None and member.get("ownerId") == caller["_id"]:
        return member  # a dependant's credits (G1)
    if caller["role"] not in STAFF_ROLES:
        raise Forbidden("customers may only see their own credits and their dependants'")
    if member is None:
        raise NotFound("$.args.memberId: not found")
    return member


@mutation(tenant="business_id", roles=STAFF_ROLES)
async def grant(
    ctx: MutationCtx, business_id: BusinessId, member_id: MemberId, credits: int, expires_on: LocalDate,
    note: str | None = None,
) -> GrantResult:
    """Give a member ``credits`` valid until the end of ``expiresOn`` in the business's zone (F2)."""
    if not 1 <= credits <= MAX_GRANT:
        raise AppError({"code": "invalid_argument", "field": "credits", "min": 1, "max": MAX_GRANT},
                       f"credits must be between 1 and {MAX_GRANT}")
    member = await ctx.db.get(member_id)
    if member is None:
        raise NotFound("$.args.memberId: not found")
    business = await ctx.db.get(business_id)
    assert business is not None
    expires_at = lot_expires_at(parse_local_date(expires_on), business["timezone"])
    if expires_at <= ctx.now:
        raise AppError({"code": "invalid_argument", "field": "expiresOn", "expiresAt": expires_at.isoformat()},
                       "expiresOn is already in the past")
    business_id, member_id = business["_id"], member["_id"]  # plain str: they go into JSON audit rows
    lot_id = await book.grant(ctx, business_id, member_id, credits, str(expires_on), expires_at, note)
    await notify(ctx, business_id, "credits_granted", member_id, lotId=lot_id, credits=credits, expiresAt=expires_at)
    return GrantResult(lot_id=lot_id, expires_at=expires_at)


@query(tenant="business_id")
async def balance(ctx: QueryCtx, business_id: BusinessId, member_id: MemberId | None = None) -> Balance:
    """Credits usable now and every lot (soonest expiry first); ``memberId`` defaults to the caller."""
    member = await _subject(ctx, member_id)
    lots = await book.member_lots(ctx.db, member["businessId"], member["_id"])
    views = [
        LotView(lot_id=r["_id"], granted=r["granted"], remaining=r["remaining"], expires_on=r["expiresOn"],
                expires_at=r["expiresAt"], expired=r["expiresAt"] <= ctx.now, note=r.get("note"))
        for r in lots
    ]
    available = sum(v.remaining for v in views if not v.expired)
    total = sum(v.remaining for v in views)
    return Balance(member_id=member["_id"], available=available, expired=total - available, total=total, lots=views)


@query(tenant="business_id")
async def ledger(
    ctx: QueryCtx, business_id: BusinessId, pagination_opts: PaginationOpts, member_id: MemberId | None = None
) -> LedgerPage:
    """The member's ledger, newest first, one page at a time."""
    member = await _subject(ctx, member_id)
    result = await ctx.db.query("credit_ledger").with_index(
        "by_member", lambda q: q.eq("memberId", member["_id"])
    ).order("desc").paginate(pagination_opts)
    page = [
        LedgerEntry(entry_id=r["_id"], kind=r["kind"], amount=r["amount"], at=r["createdAt"], lot_id=r.get("lotId"),
                    booking_id=r.get("bookingId"), reason=r.get("reason"), actor=r.get("createdBy"))
        for r in result.page
    ]
    return LedgerPage(page=page, is_done=result.is_done, continue_cursor=result.continue_cursor)
