"""Members: who belongs to a business and in which role (owner, admin, instructor, customer)."""

from __future__ import annotations

import builtins
import secrets
from typing import Any, Literal

import msgspec

from backend import (
    LocalDate,
    MutationCtx,
    PaginationOpts,
    PaginationResult,
    QueryCtx,
    Unauthenticated,
    mutation,
    query,
)
from functions._shared.errors import conflict, invalid, not_found
from functions._shared.roles import STAFF, STAFF_AND_INSTRUCTORS
from schema import BusinessId, MemberId

Role = Literal["owner", "admin", "instructor", "customer"]
_PRIVILEGED = ("owner", "admin")
#: How many dependants one member may add (G1).
MAX_DEPENDENTS = 20
MAX_NAME = 200


async def _by_subject(ctx: QueryCtx | MutationCtx, subject: str) -> dict[str, Any] | None:
    return await ctx.db.query("members").with_index("by_subject", lambda q: q.eq("subject", subject)).first()


def _require_owner_for(ctx: MutationCtx, role: str) -> None:
    """Only owners hand out staff powers; admins manage instructors and customers."""
    caller = ctx.member or {}
    if role in _PRIVILEGED and caller.get("role") != "owner":
        raise conflict("owner_required", f"only an owner can give the role {role!r}", role=role)


@mutation(tenant="business_id", roles=STAFF)
async def add(
    ctx: MutationCtx,
    business_id: BusinessId,
    subject: str,
    role: Role,
    name: str | None = None,
    email: str | None = None,
) -> MemberId:
    """Add a person (by auth subject) in a role. Adding someone already in that role returns their id."""
    if not subject.strip():
        raise invalid("subject", "must not be empty")
    _require_owner_for(ctx, role)
    existing = await _by_subject(ctx, subject)
    if existing is not None:
        if existing["role"] != role:
            raise conflict(
                "already_member", "this person is already a member; change the role with members:set_role",
                memberId=existing["_id"], role=existing["role"],
            )
        return MemberId(existing["_id"])
    member_id = await ctx.db.insert(
        "members", {"subject": subject, "role": role, "status": "active", "name": name, "email": email}
    )
    return MemberId(member_id)


@mutation(tenant="business_id", members_only=False)
async def join(ctx: MutationCtx, business_id: BusinessId) -> MemberId:
    """The caller joins as a customer; joining again returns the same membership."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise Unauthenticated("members:join: sign in to join a business")
    existing = await _by_subject(ctx, identity.subject)
    if existing is not None:
        return MemberId(existing["_id"])
    member_id = await ctx.db.insert(
        "members",
        {"subject": identity.subject, "role": "customer", "status": "active", "name": identity.name,
         "email": identity.email},
    )
    return MemberId(member_id)


class Dependent(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    member_id: str
    name: str
    birth_date: str | None = None


@mutation(tenant="business_id")
async def add_dependent(ctx: MutationCtx, business_id: BusinessId, name: str, birth_date: LocalDate | None = None) -> MemberId:
    """Add someone the caller books for, such as a child: a member without a login, owned by the caller (G1).

    The owner books, cancels and reads for them with ``memberId``; the dependant's own credits and
    memberships pay, and the owner answers for their penalties.
    """
    caller = ctx.member
    assert caller is not None
    if caller.get("ownerId") is not None:
        raise conflict("dependent_cannot_own", "a dependant cannot have dependants")
    if not name.strip() or len(name) > MAX_NAME:
        raise invalid("name", f"must not be empty and at most {MAX_NAME} characters", max=MAX_NAME)
    if birth_date is not None and ctx.now.date().isoformat() < str(birth_date):
        raise invalid("birthDate", "must not be in the future")
    owned = await ctx.db.query("members").with_index("by_owner", lambda q: q.eq("ownerId", caller["_id"])).take(MAX_DEPENDENTS)
    if len(owned) >= MAX_DEPENDENTS:
        raise conflict("too_many_dependents", f"a member may add at most {MAX_DEPENDENTS} dependants", max=MAX_DEPENDENTS)
    # Nobody signs in as a dependant: the subject is random and never handed out.
    member_id = await ctx.db.insert("members", {
        "subject": f"dependent:{secrets.token_hex(16)}", "role": "dependent", "status": "active",
        "name": name.strip(), "email": None, "ownerId": caller["_id"],
        "birthDate": None if birth_date is None else str(birth_date),
    })
    return MemberId(member_id)


@query(tenant="business_id")
async def dependents(ctx: QueryCtx, business_id: BusinessId) -> builtins.list[Dependent]:
    """The caller's dependants, oldest first."""
    caller = ctx.member
    assert caller is not None
    rows = await ctx.db.query("members").with_index("by_owner", lambda q: q.eq("ownerId", caller["_id"])).take(MAX_DEPENDENTS)
    return [Dependent(member_id=r["_id"], name=r["name"], birth_date=r.get("birthDate")) for r in rows]


@query(tenant="business_id", roles=STAFF_AND_INSTRUCTORS)
async def list(ctx: QueryCtx, business_id: BusinessId, pagination_opts: PaginationOpts) -> PaginationResult:
    """Members in the order they joined (staff and instructors only: member lists are personal data)."""
    return await ctx.db.query("members").paginate(pagination_opts)


async def _owners(ctx: MutationCtx) -> int:
    return len(await ctx.db.query("members").with_index("by_role", lambda q: q.eq("role", "owner")).take(2))


@mutation(tenant="member_id", roles=STAFF)
async def set_role(ctx: MutationCtx, member_id: MemberId, role: Role) -> None:
    """Change a member's role; a business always keeps at least one owner."""
    member = await ctx.db.get(member_id)
    if member is None:
        raise not_found("memberId")
    if member.get("ownerId") is not None:
        raise conflict("dependent_has_no_login", "a dependant cannot sign in, so it cannot be given a role")
    _require_owner_for(ctx, role)
    _require_owner_for(ctx, member["role"])
    if member["role"] == "owner" and role != "owner" and await _owners(ctx) < 2:
        raise conflict("last_owner", "a business needs at least one owner")
    if member["role"] != role:
        await ctx.db.patch(member_id, {"role": role})


@mutation(tenant="member_id", roles=STAFF)
async def remove(ctx: MutationCtx, member_id: MemberId) -> None:
    """Soft-delete a membership: bookings and ledger history stay (M3); the person can be re-added."""
    member = await ctx.db.get(member_id)
    if member is None:
        raise not_found("memberId")
    _require_owner_for(ctx, member["role"])
    if member["role"] == "owner" and await _owners(ctx) < 2:
        raise conflict("last_owner", "a business needs at least one owner")
    await ctx.db.delete(member_id)
