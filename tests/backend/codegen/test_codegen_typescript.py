"""The generated TypeScript against the official ``convex`` npm types, checked by ``tsc --strict``.

A frontend file using the React hooks (``useQuery``, ``useMutation``, ``usePaginatedQuery``) and
``ConvexClient`` as documented compiles; calls with a wrong argument type, a missing argument, a wrong
literal or another table's id fail with the compiler naming the property. Skipped where node is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.codegen import write_generated
from backend.registry import load_functions
from backend.server import load_schema
from tests.support.codegen_package import load_sample

JS_DIR = Path(__file__).resolve().parents[2] / "js"
TSC = JS_DIR / "node_modules" / "typescript" / "bin" / "tsc"

pytestmark = pytest.mark.node

TSCONFIG = {
    "compilerOptions": {
        "strict": True, "noEmit": True, "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler",
        "jsx": "react-jsx", "lib": ["ES2022", "DOM"], "types": [], "skipLibCheck": True,
    },
}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not TSC.is_file() or not (JS_DIR / "node_modules" / "convex").is_dir():
        pytest.skip("tests/js/node_modules is missing (run `npm install` in tests/js)")
    return node


def _project(root: Path, registry_package: str | None = None) -> Path:
    """A frontend folder: the generated ``_generated/`` and a node_modules with convex, react and tsc."""
    registry = load_functions(registry_package or "functions", include_testing=True)  # counters:* are fixtures
    write_generated(registry, load_schema(), root / "_generated")
    (root / "node_modules").symlink_to(JS_DIR / "node_modules", target_is_directory=True)
    (root / "package.json").write_text('{"type": "module"}')
    return root


def _tsc(node: str, root: Path, *files: str) -> subprocess.CompletedProcess[str]:
    (root / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "files": list(files)}))
    return subprocess.run([node, str(TSC), "-p", "tsconfig.json", "--pretty", "false"], cwd=root,
                          capture_output=True, text=True, timeout=300)


GOOD_APP = """
import { ConvexClient } from "convex/browser";
import { useMutation, usePaginatedQuery, useQuery } from "convex/react";
import type { GenericDataModel } from "convex/server";
import { api, internal } from "./_generated/api";
import type { DataModel, Doc, Id } from "./_generated/dataModel";

const modelFits: DataModel extends GenericDataModel ? true : never = true;

export function Schedule(props: { businessId: Id<"businesses">; from: string; to: string }) {
  const instances = useQuery(api.classes.list_instances, { businessId: props.businessId, from: props.from, to: props.to });
  const skipped = useQuery(api.classes.list_instances, "skip");
  const book = useMutation(api.bookings.book);
  const members = usePaginatedQuery(api.members.list, { businessId: props.businessId }, { initialNumItems: 20 });
  async function onBook(instanceId: Id<"class_instances">): Promise<"confirmed" | "waitlisted" | "offered" | "checked_in"> {
    const result = await book({ instanceId, payWith: "credits" });
    const position: number | null | undefined = result.position;
    return position === 0 ? "confirmed" : result.status;
  }
  const first = instances?.[0];
  const capacity: number | undefined = first?.capacity;
  return (
    <ul onClick={() => first && onBook(first._id as Id<"class_instances">)}>
      {capacity}{skipped?.length}{members.results.length}{String(modelFits)}
    </ul>
  );
}

export async function plain(client: ConvexClient, booking: Doc<"bookings">): Promise<string> {
  const bookingId: Id<"bookings"> = booking._id;
  const instance: Id<"class_instances"> = booking.instanceId;
  const cancelled = await client.mutation(api.bookings.cancel, { bookingId, waivePenalty: false });
  client.onUpdate(api.counters.get, { name: "visits" }, (value: number) => value + 1);
  const business: Id<"businesses"> = await client.mutation(api.businesses.create, { name: "Barre", timezone: "UTC" });
  const roster = await client.query(api.bookings.for_instance, { instanceId: instance });
  // @ts-expect-error internal functions are not part of api
  void api.bookings.mark_no_shows_due;
  const internalRef = internal.bookings.mark_no_shows_due;
  return String(cancelled) + business + roster.attendees.length + internalRef;
}
"""

BAD = {
    # file: (call, what tsc must say about it)
    "id_as_number.tsx": (
        'useQuery(api.classes.list_instances, { businessId: 42, from: "a", to: "b" });',
        "Type 'number' is not assignable to type 'Id<\"businesses\">'",
    ),
    "missing_arg.tsx": (
        'useQuery(api.classes.list_instances, { businessId: props.businessId, to: "b" });',
        "Property 'from' is missing",
    ),
    "wrong_literal.tsx": (
        'void useMutation(api.bookings.book)({ instanceId: props.instanceId, payWith: "cash" });',
        "Type '\"cash\"' is not assignable to type '\"credits\" | \"dropin\" | \"membership\" | null | undefined'",
    ),
    "other_tables_id.tsx": (
        "void useMutation(api.bookings.book)({ instanceId: props.venueId });",
        "Type 'Id<\"venues\">' is not assignable to type 'Id<\"class_instances\">'",
    ),
    "mutation_as_query.tsx": (
        "useQuery(api.bookings.book, { instanceId: props.instanceId });",
        "is not assignable to parameter of type 'FunctionReference<\"query\"",
    ),
}

BAD_TEMPLATE = """import {{ useMutation, useQuery }} from "convex/react";
import {{ api }} from "./_generated/api";
import type {{ Id }} from "./_generated/dataModel";

export function Bad(props: {{ businessId: Id<"businesses">; instanceId: Id<"class_instances">; venueId: Id<"venues"> }}) {{
  {call}
  return null;
}}
"""
BAD_LINE = 6

ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error TS\d+: (?P<message>.*)$")


def test_sample_frontend_compiles_under_tsc_strict(tmp_path: Path) -> None:
    node = _node()
    root = _project(tmp_path)
    (root / "app.tsx").write_text(GOOD_APP)
    done = _tsc(node, root, "app.tsx")
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrong_arguments_fail_with_the_property_named(tmp_path: Path) -> None:
    node = _node()
    root = _project(tmp_path)
    for name, (call, _) in BAD.items():
        (root / name).write_text(BAD_TEMPLATE.format(call=call))
    done = _tsc(node, root, *BAD)
    assert done.returncode != 0
    errors: dict[str, list[tuple[int, str]]] = {}
    for line in done.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors.setdefault(match["file"], []).append((int(match["line"]), match["message"]))
        elif line.startswith(" ") and errors:  # a continuation of the last error's message
            file = next(reversed(errors))
            last_line, message = errors[file][-1]
            errors[file][-1] = (last_line, f"{message}\n{line.strip()}")
    for name, (_, expected) in BAD.items():
        found = errors.get(name)
        assert found, f"{name}: tsc accepted it\n{done.stdout}"
        assert {line for line, _ in found} == {BAD_LINE}, found
        assert any(expected in message for _, message in found), f"{name}: {found}"


TYPE_CHECKS = """
import type { FunctionArgs, FunctionReference, FunctionReturnType } from "convex/server";
import type { GenericId } from "convex/values";
import { api, internal } from "./_generated/api";
import type { Id } from "./_generated/dataModel";

type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
function same<T extends true>(): T | undefined { return undefined; }

same<Equals<FunctionArgs<typeof api.things.make>, {
  bookingId: Id<"bookings">; count: bigint; blob: ArrayBuffer; mode: "a" | "b"; color: "red" | "blue";
  where: { xPos: number; label?: string | null };
  pet: { type: "cat"; lives: number } | { type: "dog"; good: boolean };
  tags: Record<string, number>; meta: { note: string; extra?: number }; when: string;
  pair: [number, string]; note?: string | null;
}>>();
same<Equals<FunctionReturnType<typeof api.things.make>, { xPos: number; label: string | null }>>();
same<Equals<FunctionReturnType<typeof api.things.sparse>, { total: number; hint?: string | null }>>();
same<Equals<FunctionArgs<typeof api.things.sparse>, { elsewhere: GenericId<"not_a_table"> }>>();
same<Equals<FunctionArgs<typeof api.things.nothing>, Record<string, never>>>();
same<Equals<FunctionReturnType<typeof api.things.nothing>, null>>();
same<Equals<FunctionReturnType<typeof api.things.tree>, { children: Array<any> }>>();
same<Equals<typeof api.things.ping, FunctionReference<"action", "public", { times: number }, Array<number>>>>();
same<Equals<FunctionReturnType<typeof api.classes.list_all>, Array<Id<"class_instances">>>>();
same<Equals<typeof api.classes.templates.create,
  FunctionReference<"mutation", "public", { name: string }, Id<"class_templates">>>>();
same<Equals<typeof internal.things.secret, FunctionReference<"query", "internal", Record<string, never>, number>>>();
// @ts-expect-error internal functions are not in api
void api.things.secret;
// @ts-expect-error private modules are not in api
void api._private;
"""

NAMES = """
import { getFunctionName } from "convex/server";
import { api, internal } from "./_generated/api.js";
console.log(JSON.stringify([
  getFunctionName(api.things.make), getFunctionName(api.classes.list_all),
  getFunctionName(api.classes.templates.create), getFunctionName(internal.things.secret),
]));
"""


def test_every_kind_of_validator_is_spelt_as_convex_would(tmp_path: Path) -> None:
    node = _node()
    package, _ = load_sample(tmp_path / "py")
    (tmp_path / "web").mkdir()
    root = _project(tmp_path / "web", package)
    (root / "checks.ts").write_text(TYPE_CHECKS)
    done = _tsc(node, root, "checks.ts")
    assert done.returncode == 0, done.stdout + done.stderr
    # At run time api.js is convex's anyApi: property paths become the engine's function paths.
    (root / "names.mjs").write_text(NAMES)
    ran = subprocess.run([node, "names.mjs"], cwd=root, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [
        "things:make", "classes:list_all", "classes/templates:create", "things:secret",
    ]
