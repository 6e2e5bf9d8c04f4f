"""Every public function, called by members of business B with ids of business A, neither reveals nor changes A.

Both businesses get one row in every tenant table (public functions where they exist, then the internal
``testing_tenancy:seed`` fixture, which derives rows from the schema). Each registered public function is then
called by B's owner and by a B customer with arguments generated from its args Struct; every ``Id[...]`` slot
gets an id of A's row of that table: all slots at once, all at once with A's soft-deleted rows, and each slot
alone with B's ids elsewhere (so the tenant check passes and the function itself meets A's id). After each call:

- nothing the caller sees (value, log lines, error message and data) holds A's marker or an id of A's rows
  other than those the caller passed in;
- A's rows in every table, audit log included, are unchanged (a ``members_only=False`` function may only
  add the caller's own membership, e.g. ``members:join``);
- no row of B refers to a row of A.

Finally, no job scheduled during the run targets a cross-tenant function with an id of A. The functions are
read from the registry, so a new function is covered without touching this file.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from backend import ids
from backend.errors import AppError, BackendError
from backend.registry import FunctionSpec, load_functions
from backend.testing import TestBackend
from backend.validators import camel
from backend.values import encode_value
from tests.support.fuzz_args import Pick, generate_args, id_slots

PUBLIC = sorted(spec.path for spec in load_functions(include_testing=True) if not spec.internal)

Snapshot = dict[tuple[str, str], str]


@dataclass
class Tenant:
    business: str
    marker: str
    owner: str
    customer: str
    rows: dict[str, list[str]]

    def id_of(self, table: str, *, deleted: bool = False) -> str:
        if table == "businesses":
            return self.business
        rows = self.rows.get(table)
        if not rows:
            return ids.new_id(ids.table_number(table))  # a table without tenant rows: an id of nothing
        return rows[-1] if deleted else rows[0]


@dataclass
class World:
    tb: TestBackend
    a: Tenant
    b: Tenant
    a_rows: Snapshot
    jobs_seen: set[str]
    fresh: int = 0


async def internal(tb: TestBackend, path: str, args: dict[str, Any]) -> Any:
    outcome = await tb.runner.mutation(path, encode_value(args), None, allow_internal=True)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


async def join(tb: TestBackend, business: str, subject: str) -> None:
    if "members:join" in tb.backend.registry.functions:
        await tb.mutation("members:join", {"businessId": business}, as_user=subject)
    else:
        await internal(tb, "testing_tenancy:add_member", {"businessId": business, "subject": subject})


async def make_tenant(tb: TestBackend, label: str) -> Tenant:
    marker = f"{label}{secrets.token_hex(6)}"
    owner = f"{marker}-owner"
    business = await tb.mutation("businesses:create", {"name": f"{marker} studio", "timezone": "UTC"},
                                 as_user=owner)
    rows = await internal(tb, "testing_tenancy:seed", {"businessId": business, "marker": marker})
    customer = f"{marker}-customer"
    await join(tb, business, customer)
    return Tenant(business, marker, owner, customer, rows)


def _tenant_selects(tb: TestBackend) -> list[str]:
    parts = []
    for table in tb.backend.schema.tables.values():
        if table.tenant_root:
            where = "_id = $1"
        elif table.tenant_key:
            where = f'"{table.column_of(table.tenant_key)}" = $1'
        else:
            continue
        parts.append(f"""SELECT '{table.name}' AS t, _id, row_to_json(x)::text AS j, x.xmin::text::bigint AS xm
                          FROM "{table.name}" x WHERE {where}""")
    return parts


async def snapshot(tb: TestBackend, business: str) -> Snapshot:
    rows = await tb.sql(" UNION ALL ".join(_tenant_selects(tb)), business)
    return {(r["t"], r["_id"]): r["j"] for r in rows}


async def next_xid(tb: TestBackend) -> int:
    """Rows written from now on carry a transaction id (``xmin``, 32 bits) at least this large."""
    rows = await tb.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296 AS x")
    return int(rows[0]["x"])


async def rows_mentioning(tb: TestBackend, business: str, needles: list[str], since: int) -> list[tuple[str, str]]:
    """Rows of ``business`` written since ``since`` whose JSON contains any needle."""
    patterns = [f"%{n}%" for n in needles]
    query = " UNION ALL ".join(f"SELECT * FROM ({s}) q" for s in _tenant_selects(tb))
    rows = await tb.sql(f"SELECT t, _id FROM ({query}) r WHERE xm >= $3 AND j LIKE ANY($2::text[])",
                        business, patterns, since)
    return [(r["t"], r["_id"]) for r in rows]


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    # No scheduler: crons would change A on their own. Jobs the calls schedule are checked instead.
    async with TestBackend(run_scheduler=False) as tb:
        a = await make_tenant(tb, "a")
        b = await make_tenant(tb, "b")
        # B's owner holds an invitation to A that was never accepted: it must grant nothing.
        await internal(tb, "testing_tenancy:add_member",
                       {"businessId": a.business, "subject": b.owner, "role": "owner", "status": "invited"})
        jobs = await tb.sql("SELECT id FROM _scheduled_jobs")
        yield World(tb, a, b, await snapshot(tb, a.business), {r["id"] for r in jobs})


def variants(spec: FunctionSpec, world: World) -> list[tuple[str, Pick]]:
    slots = id_slots(spec)

    def picker(a_paths: set[str], *, deleted: bool = False) -> Pick:
        def pick(path: str, table: str) -> str:
            tenant = world.a if path in a_paths else world.b
            return tenant.id_of(table, deleted=deleted)
        return pick

    every = {path for path, _ in slots}
    found = [("A ids everywhere", picker(every))]
    if slots:
        found.append(("A's deleted rows everywhere", picker(every, deleted=True)))
    if len(slots) > 1:
        found += [(f"A id only at {path}", picker({path})) for path, _ in slots]
    return found


def visible(outcome: Any) -> dict[str, Any]:
    """What a client would see of a call's outcome."""
    seen: dict[str, Any] = {"value": outcome.value, "logLines": outcome.log_lines}
    error = outcome.error
    if isinstance(error, AppError):
        seen["error"] = {"message": error.message, "data": error.data}
    elif isinstance(error, BackendError):
        seen["error"] = error.to_wire()
    elif error is not None:
        seen["error"] = "Server Error"
    return seen


def allowed_self_join(spec: FunctionSpec, caller: str, before: Snapshot, after: Snapshot) -> bool:
    """A members_only=False function may add the caller's own membership row (and its audit row), nothing else."""
    if spec.members_only or any(key not in after or after[key] != row for key, row in before.items()):
        return False
    added = {key: json.loads(row) for key, row in after.items() if key not in before}
    own = {key[1] for key, row in added.items() if key[0] == "members" and row.get("subject") == caller}
    return all(
        (key[0] == "members" and key[1] in own)
        or (key[0] == "audit_log" and row.get("document_id") in own and row.get("actor") == caller)
        for key, row in added.items()
    )


async def call(world: World, spec: FunctionSpec, pick: Pick, caller: str) -> tuple[dict[str, Any], set[str]]:
    passed: set[str] = set()

    def recording(path: str, table: str) -> str | None:
        chosen = pick(path, table)
        if chosen is not None:
            passed.add(chosen)
        return chosen

    args = encode_value(generate_args(spec, recording))
    world.tb.runner.validate_args(spec, args)  # a generated call must reach the function, or it proves nothing
    run = {"query": world.tb.runner.query, "mutation": world.tb.runner.mutation, "action": world.tb.runner.action}
    body, entered = spec.fn, []

    async def counted(*args: Any, **kwargs: Any) -> Any:
        entered.append(True)
        return await body(*args, **kwargs)

    spec.fn = counted  # to tell calls the engine refused from calls that reached the function
    try:
        outcome = await run[spec.kind](spec.path, args, world.tb.identity(caller))
    except BackendError as refused:
        return {"refused": refused.to_wire(), "entered": bool(entered)}, passed
    finally:
        spec.fn = body
    return {**visible(outcome), "entered": bool(entered)}, passed


async def callers(world: World, spec: FunctionSpec) -> list[str]:
    if spec.members_only or spec.tenant_arg is None:
        return [world.b.owner, world.b.customer]
    # members_only=False (e.g. joining): a fresh B customer each time, so a membership it gains in A
    # cannot widen what later calls may see.
    world.fresh += 1
    subject = f"{world.b.marker}-fresh-{world.fresh}"
    await join(world.tb, world.b.business, subject)
    return [subject]


async def new_jobs_into_a(world: World, a_ids: list[str]) -> list[tuple[str, str | None]]:
    """Jobs scheduled since the last look that would run in A, or hand A's ids to a cross-tenant function."""
    jobs = await world.tb.sql("SELECT id, function_path, args::text AS args, tenant FROM _scheduled_jobs")
    registry = world.tb.backend.registry.functions
    bad = []
    for job in jobs:
        if job["id"] in world.jobs_seen:
            continue
        world.jobs_seen.add(job["id"])
        spec = registry.get(job["function_path"])
        cross = spec is not None and spec.cross_tenant and any(i in job["args"] for i in a_ids)
        if job["tenant"] == world.a.business or cross:
            bad.append((job["function_path"], job["tenant"]))
    return bad


@pytest.mark.parametrize("path", PUBLIC)
async def test_function_never_reveals_or_changes_another_tenant(world: World, path: str) -> None:
    spec = world.tb.backend.registry.functions[path]
    a = world.a
    # Fresh B rows for every function, so what an earlier function did to B's rows cannot shield this one.
    b = replace(world.b, rows=await internal(world.tb, "testing_tenancy:seed",
                                             {"businessId": world.b.business, "marker": f"{world.b.marker}.{secrets.token_hex(3)}"}))
    a_ids = sorted({key[1] for key in world.a_rows})
    problems: list[str] = []
    entered: dict[str, bool] = {}
    for label, pick in variants(spec, replace(world, b=b)):
        for caller in await callers(world, spec):
            since = await next_xid(world.tb)
            seen, passed = await call(world, spec, pick, caller)
            entered[label] = entered.get(label, False) or seen.pop("entered")
            where = f"{path} as {caller.removeprefix(b.marker + '-')} with {label}"
            text = json.dumps(seen, default=str)
            leaked = [s for s in [a.marker, *a_ids] if s in text and s not in passed]
            if leaked:
                problems.append(f"{where}: result reveals A data {leaked[:3]}: {text[:300]}")
            after = await snapshot(world.tb, a.business)
            if after != world.a_rows:
                if not allowed_self_join(spec, caller, world.a_rows, after):
                    changed = sorted({k for k in set(after) | set(world.a_rows) if after.get(k) != world.a_rows.get(k)})
                    problems.append(f"{where}: changed A's rows {changed[:5]}")
                world.a_rows = after
            mixed = await rows_mentioning(world.tb, b.business, [a.marker, *a_ids], since)
            if mixed:
                problems.append(f"{where}: rows of B now refer to A: {sorted(mixed)[:5]}")
            if jobs := await new_jobs_into_a(world, a_ids):
                problems.append(f"{where}: scheduled jobs that would act on A: {jobs}")
    assert not problems, "\n".join(problems)
    # With B's tenant argument and A's id elsewhere, the engine's tenant check passes: the function body itself
    # must meet A's id, or only the tenant check was tested.
    if spec.tenant_arg is not None:
        tenant_slot = f"$.{camel(spec.tenant_arg)}"
        for slot, _ in id_slots(spec):
            if slot != tenant_slot and not slot.startswith(tenant_slot + "["):
                assert entered[f"A id only at {slot}"], f"{path}: no call with A's id at {slot} reached the function"


async def test_the_fuzz_covers_every_tenant_table_and_public_function(world: World) -> None:
    tables = {t.name for t in world.tb.backend.schema.tables.values() if t.tenant_key and t.name != "audit_log"}
    assert tables <= set(world.a.rows), f"A has no row in {sorted(tables - set(world.a.rows))}"
    assert {key[0] for key in world.a_rows} >= tables | {"businesses", "audit_log"}
    assert {s.path for s in world.tb.backend.registry if not s.internal} == set(PUBLIC)
    assert any(len(id_slots(s)) > 1 and s.tenant_arg for s in world.tb.backend.registry if not s.internal), \
        "no public function takes a tenant and another id: the mixed calls test nothing"
