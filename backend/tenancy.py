"""Which business a function runs for, and whether the caller may act in it.

A function declares ``tenant="business_id"`` (any argument holding the id of a business, or of any row that
belongs to one). Before the function body runs, the engine resolves that id to its business, loads the
caller's membership and checks the role; inside, ``ctx.db`` sees and writes only that business's rows.
Another business's id is indistinguishable from a missing one: both answer ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .context import MutationCtx, QueryCtx
from .db import DatabaseReader, Txn
from .errors import Forbidden, NotFound, SchemaError, Unauthenticated
from .registry import FunctionSpec
from .schema import Schema
from .validators import camel

__all__ = ["find_membership", "require_member", "resolve_tenant"]


async def find_membership(txn: Txn, tenant: str, subject: str) -> dict[str, Any] | None:
    """The caller's live membership row in ``tenant`` (read through an index, so it joins the read set)."""
    schema = txn.schema
    tenancy = schema.tenancy
    if tenancy is None:
        raise SchemaError("the schema declares no tenancy; tenant= functions need one")
    members = schema.table(tenancy.members_table)
    index = next(
        (
            i
            for i in members.indexes.values()
            if i.keys[:2] == (tenancy.member_tenant_key, tenancy.member_subject_key)
        ),
        None,
    )
    if index is None:
        raise SchemaError(
            f"table {members.name!r} needs an index on ({tenancy.member_subject_key}) for membership checks"
        )
    saved = txn.cross_tenant
    txn.cross_tenant = True
    try:
        rows = await (
            DatabaseReader(txn)
            .query(members.name)
            .with_index(index.name, lambda q: q.eq(tenancy.member_tenant_key, tenant).eq(tenancy.member_subject_key, subject))
            .take(2)
        )
    finally:
        txn.cross_tenant = saved
    live = [r for r in rows if r.get(tenancy.member_status_key, tenancy.active_status) == tenancy.active_status]
    return live[0] if live else None


async def resolve_tenant(
    txn: Txn, spec: FunctionSpec, kwargs: dict[str, Any], identity: Any | None
) -> tuple[str | None, dict[str, Any] | None]:
    """(tenant id, membership) for a ``tenant=`` function; raises NotFound/Forbidden/Unauthenticated."""
    if spec.tenant_arg is None:
        return None, None
    schema: Schema = txn.schema
    value = kwargs[spec.tenant_arg]
    field = f"$.args.{camel(spec.tenant_arg)}"
    if not isinstance(value, str):
        raise NotFound(f"{field}: not found")
    table = schema.table_of_id(value)
    if table is None:
        raise NotFound(f"{field}: not found")
    saved = txn.cross_tenant
    txn.cross_tenant = True
    try:
        doc = await DatabaseReader(txn).get(value)
    finally:
        txn.cross_tenant = saved
    if doc is None:
        raise NotFound(f"{field}: not found")
    if table.tenant_root:
        tenant = str(doc["_id"])
    elif table.tenant_key:
        tenant = str(doc[table.tenant_key])
    else:
        raise SchemaError(f"{spec.path}: tenant={spec.tenant_arg!r} must name an id of a tenant table")
    if not spec.members_only:
        return tenant, None
    if identity is None:
        raise Unauthenticated(f"{spec.path}: sign in to call this function")
    member = await find_membership(txn, tenant, identity.subject)
    if member is None:
        raise NotFound(f"{field}: not found")
    tenancy = schema.tenancy
    assert tenancy is not None
    if spec.roles is not None and member.get(tenancy.member_role_key) not in spec.roles:
        raise Forbidden(f"{spec.path}: requires one of the roles {', '.join(spec.roles)}")
    return tenant, member


async def require_member(
    ctx: QueryCtx | MutationCtx, business_id: str, *, roles: Iterable[str] | None = None
) -> dict[str, Any]:
    """The caller's active membership row in ``business_id``, for checks ``tenant=``/``roles=`` cannot express.

    Raises ``Unauthenticated`` for anonymous callers, ``NotFound`` when the business does not exist or the
    caller is not an active member of it (the two are indistinguishable, as for ``tenant=``), and
    ``Forbidden`` when ``roles`` is given and the member's role is not among them. In a function that has no
    tenant yet, a successful check scopes ``ctx.db`` to that business (as ``tenant=`` would); an existing
    scope never changes. Both reads join the read set, so a query re-runs when the membership changes.
    """
    allowed = (roles,) if isinstance(roles, str) else None if roles is None else tuple(roles)
    txn: Txn = ctx.db._txn
    tenancy = txn.schema.tenancy
    if tenancy is None:
        raise SchemaError("the schema declares no tenancy; require_member needs one")
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise Unauthenticated(f"{txn.function_path or 'this function'}: sign in to call this function")
    table = txn.schema.table_of_id(business_id) if isinstance(business_id, str) else None
    doc: dict[str, Any] | None = None
    if table is not None and table.name == tenancy.root_table:
        saved = txn.cross_tenant
        txn.cross_tenant = True
        try:
            doc = await DatabaseReader(txn).get(business_id)
        finally:
            txn.cross_tenant = saved
    member = None if doc is None else await find_membership(txn, business_id, identity.subject)
    if member is None:
        raise NotFound(f"{txn.function_path or 'require_member'}: business not found")
    if allowed is not None and member.get(tenancy.member_role_key) not in allowed:
        raise Forbidden(f"{txn.function_path or 'this function'}: requires one of the roles {', '.join(allowed)}")
    if txn.tenant is None and not txn.cross_tenant:
        txn.tenant = business_id
        ctx.tenant, ctx.member = business_id, member
    return member
