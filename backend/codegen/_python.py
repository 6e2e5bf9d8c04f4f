"""``api.py``: typed references to the functions for ``backend.client`` callers.

Arguments and results are ``TypedDict``s keyed by wire name (``{"instanceId": ...}``), ids are a
``NewType`` per table, and each function is a ``QueryRef``/``MutationRef``/``ActionRef`` whose signature is
the call the client accepts, so ``await client.mutation(api.bookings.book, {"instanceId": 3})`` is a mypy
error naming ``instanceId``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..registry import FunctionSpec, Registry
from ..schema import Schema
from ._tree import Tree, function_tree
from ._walk import Direction, ObjectField, TypeWalker

__all__ = ["api_py"]

_RESERVED = {
    "Any", "Literal", "Mapping", "NewType", "NotRequired", "TypeAlias", "TypedDict", "Int64", "NoArgs",
    "OptimisticUpdate", "QueryRef", "MutationRef", "ActionRef", "query_ref", "mutation_ref", "action_ref",
}


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("/", "_").replace(":", "_").split("_"))


class _Names:
    """Unique module-level names; one ``TypedDict`` per object class however often it is used."""

    def __init__(self) -> None:
        self.taken = set(_RESERVED)
        self.definitions: list[str] = []
        self.by_class: dict[tuple[type, Direction], str] = {}

    def unique(self, wanted: str) -> str:
        name, n = wanted, 2
        while name in self.taken:
            name, n = f"{wanted}{n}", n + 1
        self.taken.add(name)
        return name


class Python(TypeWalker):
    def __init__(self, direction: Direction, names: _Names, tables: dict[str, str]) -> None:
        super().__init__(direction)
        self.names = names
        self.tables = tables  # table → its id NewType
        self.preferred: dict[type, str] = {}  # names wanted for particular object types

    def any(self) -> str:
        return "Any"

    def null(self) -> str:
        return "None"

    def boolean(self) -> str:
        return "bool"

    def number(self) -> str:
        return "float"

    def integer(self) -> str:
        return "int"

    def int64(self) -> str:
        return "Int64"

    def string(self) -> str:
        return "str"

    def bytes(self) -> str:
        return "bytes"

    def id(self, table: str) -> str:
        return self.tables.get(table, "str")

    def literal(self, values: Sequence[Any]) -> str:
        plain = [json.dumps(v) if isinstance(v, str) else repr(v) for v in values if v is not None]
        text = f"Literal[{', '.join(plain)}]" if plain else ""
        if None in values:
            text = f"{text} | None" if text else "None"
        return text

    def array(self, item: str) -> str:
        return f"list[{item}]"

    def tuple(self, items: list[str]) -> str:
        if self.direction == "args":
            return f"tuple[{', '.join(items)}]" if items else "tuple[()]"
        return f"list[{self.union(items) if items else 'Any'}]"  # tuples come back as lists

    def record(self, key: str, value: str) -> str:
        return f"Mapping[str, {value}]" if self.direction == "args" else f"dict[str, {value}]"

    def object(self, cls: type, fields: list[ObjectField]) -> str:
        key = (cls, self.direction)
        known = self.names.by_class.get(key)
        if known is not None:
            return known
        if cls in self.preferred:
            name = self.names.unique(self.preferred[cls])
        else:
            base = cls.__name__.rsplit(".", 1)[-1]
            name = self.names.unique(base if self.direction == "result" else f"{base}Args")
        self.names.by_class[key] = name
        if not fields:
            self.names.definitions.append(f"{name} = NoArgs")
            return name
        items = ", ".join(
            f"{json.dumps(f.name)}: {f'NotRequired[{f.type}]' if f.optional else f.type}" for f in fields
        )
        self.names.definitions.append(f"{name} = TypedDict({json.dumps(name)}, {{{items}}})")
        return name

    def union(self, members: list[str]) -> str:
        unique = list(dict.fromkeys(members))
        if "Any" in unique:
            return "Any"
        return " | ".join(unique)


_KIND_DECORATOR = {"query": "query_ref", "mutation": "mutation_ref", "action": "action_ref"}


def _stub(spec: FunctionSpec, names: _Names, tables: dict[str, str]) -> list[str]:
    stem = _pascal(spec.path)
    walker = Python("args", names, tables)
    walker.preferred[spec.args.struct] = f"{stem}Args"
    args = walker.spell(spec.args.struct)
    if spec.returns.kind in (None, type(None)):
        result = "None"
    else:
        result = Python("result", names, tables).spell(spec.returns.kind)
    alias = names.unique(f"{stem}Result")
    names.definitions.append(f"{alias}: TypeAlias = {result}")
    params = f"args: {args} | None = None, /" if not spec.args.python_names else f"args: {args}, /"
    if spec.kind == "mutation":
        params += ", *, optimistic_update: OptimisticUpdate | None = None"
    doc = (spec.fn.__doc__ or "").strip().split("\n\n")[0]
    doc = " ".join(doc.split()).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    body = [f'    """{doc}"""'] if doc else []
    return [
        f"@{_KIND_DECORATOR[spec.kind]}({json.dumps(spec.path)})",
        f"def {spec.path.partition(':')[2]}({params}) -> {alias}:",
        *body,
        "    raise NotImplementedError",
    ]


def _classes(tree: Tree, prefix: str, names: _Names, tables: dict[str, str], out: list[str]) -> str:
    """Writes one class per folder/module (innermost first) and returns the class name for ``tree``."""
    body: list[str] = []
    for name, node in tree.items():
        if isinstance(node, dict):
            inner = _classes(node, f"{prefix}{_pascal(name)}", names, tables, out)
            body.append(f"{name} = {inner}")
        else:
            body += ["", *_stub(node, names, tables)]
    class_name = names.unique(f"_{prefix}") if prefix else "api"
    out += [f"class {class_name}:", *(f"    {line}" if line else "" for line in body or ["pass"]), "", ""]
    return class_name


def api_py(registry: Registry, schema: Schema) -> str:
    names = _Names()
    names.taken.add("api")  # the root class
    tables = {table: names.unique(f"{_pascal(table)}Id") for table in sorted(schema.tables)}
    classes: list[str] = []
    _classes(function_tree(registry, internal=False), "", names, tables, classes)
    ids = [f"{name} = NewType({json.dumps(name)}, str)" for name in tables.values()]
    return "\n".join([
        '"""Typed references to the public functions, generated by ``python -m backend codegen``.',
        "",
        "Do not edit: the next run (and the dev server, after every good reload) rewrites it. Use it with",
        "``backend.client``: ``await client.mutation(api.bookings.book, {\"instanceId\": instance_id})``.",
        '"""',
        "# ruff: noqa",
        "",
        "from collections.abc import Mapping",
        "from typing import Any, Literal, NewType, NotRequired, TypeAlias, TypedDict",
        "",
        "from backend.client import NoArgs, OptimisticUpdate, action_ref, mutation_ref, query_ref",
        "from backend.values import Int64",
        "",
        *ids,
        "",
        *names.definitions,
        "",
        "",
        *classes,
    ]).rstrip() + "\n"
