"""One walk over a function's annotations, shared by the TypeScript and Python emitters.

msgspec already turns an annotation into a tree of type nodes (``msgspec.inspect``), the same tree its JSON
Schema generator (and so the OpenAPI document) is built from; ``TypeWalker`` walks that tree once and asks a
subclass how each kind of node is spelt. It knows the engine's own types: ``Id["t"]`` is an id of table
``t``, ``Int64`` a 64-bit integer, the validated strings (``Instant``, ``LocalDate``…) strings.

What travels differs by direction: a Struct field with a default may be left out of *arguments*, but is
always present in a *result* (unless the Struct omits defaults), so the walker is made for one direction.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec.inspect as mi

from ..validators import Id
from ..values import Int64

__all__ = ["Direction", "ObjectField", "TypeWalker"]

Direction = Literal["args", "result"]


@dataclass(frozen=True)
class ObjectField:
    """A property of an object type as it travels: wire name, spelt type, and whether it may be absent."""

    name: str
    type: str
    optional: bool


class TypeWalker:
    """Spells annotations in another language; subclasses implement the leaf and container methods."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self._open: list[type] = []  # object types being spelt: a type inside itself is recursive

    def spell(self, annotation: Any) -> str:
        return self.visit(mi.type_info(annotation))

    def visit(self, node: mi.Type) -> str:
        if isinstance(node, mi.Metadata):
            return self.visit(node.type)
        if isinstance(node, mi.AnyType):
            return self.any()
        if isinstance(node, mi.NoneType):
            return self.null()
        if isinstance(node, mi.BoolType):
            return self.boolean()
        if isinstance(node, mi.IntType):
            return self.integer()
        if isinstance(node, mi.FloatType):
            return self.number()
        if isinstance(node, mi.StrType):
            return self.string()
        if isinstance(node, mi.BytesType | mi.ByteArrayType | mi.MemoryViewType):
            return self.bytes()
        if isinstance(node, mi.DateTimeType | mi.DateType | mi.TimeType | mi.TimeDeltaType | mi.UUIDType
                      | mi.DecimalType):
            return self.string()  # these leave the server as ISO 8601 / canonical text
        if isinstance(node, mi.CustomType):
            return self._custom(node.cls)
        if isinstance(node, mi.LiteralType):
            return self.literal(node.values)
        if isinstance(node, mi.EnumType):
            return self.literal(tuple(member.value for member in node.cls))
        if isinstance(node, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            return self.array(self.visit(node.item_type))
        if isinstance(node, mi.TupleType):
            return self.tuple([self.visit(item) for item in node.item_types])
        if isinstance(node, mi.DictType | mi.FrozenDictType):
            return self.record(self.visit(node.key_type), self.visit(node.value_type))
        if isinstance(node, mi.StructType | mi.TypedDictType | mi.DataclassType | mi.NamedTupleType):
            return self._object(node)
        if isinstance(node, mi.UnionType):
            return self.union([self.visit(member) for member in node.types])
        return self.any()

    def _custom(self, cls: type) -> str:
        if issubclass(cls, Id):
            return self.id(cls.table) if cls.table else self.string()
        if issubclass(cls, Int64):
            return self.int64()
        if issubclass(cls, enum.Enum):
            return self.literal(tuple(member.value for member in cls))
        if issubclass(cls, bool):
            return self.boolean()
        if issubclass(cls, int):
            return self.integer()
        if issubclass(cls, float | decimal.Decimal):
            return self.number()
        if issubclass(cls, str | dt.date | dt.time | uuid.UUID):
            return self.string()
        if issubclass(cls, bytes):
            return self.bytes()
        return self.any()

    def _object(self, node: mi.StructType | mi.TypedDictType | mi.DataclassType | mi.NamedTupleType) -> str:
        cls = node.cls
        special = self.special(cls)
        if special is not None:
            return special
        if cls in self._open:
            return self.any()  # a recursive type: spelt loosely rather than not at all
        self._open.append(cls)
        try:
            if isinstance(node, mi.NamedTupleType) or (isinstance(node, mi.StructType) and node.array_like):
                return self.tuple([self.visit(f.type) for f in node.fields])
            fields = []
            if isinstance(node, mi.StructType) and node.tag_field is not None:
                fields.append(ObjectField(node.tag_field, self.literal((node.tag,)), False))
            fields += [ObjectField(f.encode_name, self.visit(f.type), self._optional(node, f)) for f in node.fields]
            return self.object(cls, fields)
        finally:
            self._open.pop()

    def _optional(self, node: mi.Type, field: mi.Field) -> bool:
        if isinstance(node, mi.TypedDictType):
            return not field.required
        if self.direction == "args":
            return not field.required
        if isinstance(node, mi.StructType):
            config = getattr(node.cls, "__struct_config__", None)
            return bool(config is not None and config.omit_defaults and not field.required)
        return False

    # -- how each kind is spelt (subclasses) --------------------------------------------------------------

    def special(self, cls: type) -> str | None:
        """A spelling for a whole object type the target language already names (None: spell it out)."""
        return None

    def any(self) -> str:
        raise NotImplementedError

    def null(self) -> str:
        raise NotImplementedError

    def boolean(self) -> str:
        raise NotImplementedError

    def number(self) -> str:
        raise NotImplementedError

    def integer(self) -> str:
        """A Python ``int``: a Convex float64 on the wire."""
        return self.number()

    def int64(self) -> str:
        raise NotImplementedError

    def string(self) -> str:
        raise NotImplementedError

    def bytes(self) -> str:
        raise NotImplementedError

    def id(self, table: str) -> str:
        raise NotImplementedError

    def literal(self, values: Sequence[Any]) -> str:
        raise NotImplementedError

    def array(self, item: str) -> str:
        raise NotImplementedError

    def tuple(self, items: list[str]) -> str:
        raise NotImplementedError

    def record(self, key: str, value: str) -> str:
        raise NotImplementedError

    def object(self, cls: type, fields: list[ObjectField]) -> str:
        raise NotImplementedError

    def union(self, members: list[str]) -> str:
        raise NotImplementedError

