"""Plausible arguments for any registered function, generated from its args Struct.

Every ``Id[...]`` slot (top level, optional, in lists or nested Structs) is filled by a ``pick`` callback
that receives the slot's path and table, so a test decides per slot whose row the id names. Other values
are chosen to pass validation (a generated call that fails validation never reaches the function, so the
caller is told which functions could not be called).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from typing import Any

import msgspec.inspect as mi

from backend.registry import FunctionSpec
from backend.validators import Id, Instant, LocalDate, LocalTime, TimeZone
from backend.values import Int64

__all__ = ["Pick", "generate_args", "id_slots"]

Pick = Callable[[str, str], str | None]  # (slot path, table) -> id

_FUTURE = dt.datetime(2031, 1, 15, 9, 0, tzinfo=dt.UTC)
_TEXT_BY_NAME: list[tuple[tuple[str, ...], Any]] = [
    (("timezone", "tz"), "UTC"),
    (("date", "day", "until", "from", "to", "after", "before", "on"), "2031-01-15"),
    (("time",), "09:00"),
    (("email",), "fuzz@example.test"),
    (("rrule",), "FREQ=WEEKLY;BYDAY=WE"),
    (("currency",), "USD"),
    (("cursor",), None),
]


def generate_args(spec: FunctionSpec, pick: Pick) -> dict[str, Any]:
    """Wire-ready (camelCase) arguments for ``spec``; Python values, to be passed through encode_value."""
    info = mi.type_info(spec.args.struct)
    assert isinstance(info, mi.StructType)
    return _struct(info, "$", pick)


def id_slots(spec: FunctionSpec) -> list[tuple[str, str]]:
    """Every (slot path, table) where the function takes an id."""
    slots: list[tuple[str, str]] = []

    def record(path: str, table: str) -> str | None:
        slots.append((path, table))
        return None

    generate_args(spec, record)
    return slots


def _struct(info: mi.StructType | mi.TypedDictType | mi.DataclassType, path: str, pick: Pick) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in info.fields:
        out[field.encode_name] = _value(field.type, field.name, f"{path}.{field.encode_name}", pick)
    return out


def _by_name(name: str) -> tuple[bool, Any]:
    words = name.lower().replace("-", "_").split("_")
    for hints, value in _TEXT_BY_NAME:
        if any(word in hints for word in words):
            return True, value
    return False, None


def _int(info: mi.IntType, name: str) -> int:
    value = 50 if name == "num_items" else 1
    if info.ge is not None:
        value = max(value, info.ge)
    if info.gt is not None:
        value = max(value, info.gt + 1)
    if info.le is not None:
        value = min(value, info.le)
    if info.lt is not None:
        value = min(value, info.lt - 1)
    return value


def _custom(cls: type, name: str, path: str, pick: Pick) -> Any:
    if issubclass(cls, Id):
        return pick(path, cls.table)
    if issubclass(cls, TimeZone):
        return "UTC"
    if issubclass(cls, Instant):
        return _FUTURE.isoformat().replace("+00:00", "Z")
    if issubclass(cls, LocalDate):
        return "2031-01-15"
    if issubclass(cls, LocalTime):
        return "09:00"
    if issubclass(cls, Int64):
        return Int64(1)
    if issubclass(cls, enum.Enum):
        return next(iter(cls)).value
    raise NotImplementedError(f"{path}: cannot generate a {cls.__name__}")


def _union(info: mi.UnionType, name: str, path: str, pick: Pick) -> Any:
    types = list(info.types)
    ids = [t for t in types if isinstance(t, mi.CustomType) and issubclass(t.cls, Id)]
    if ids:
        return _value(ids[0], name, path, pick)
    known, value = _by_name(name)
    if known and value is None and any(isinstance(t, mi.NoneType) for t in types):
        return None
    others = [t for t in types if not isinstance(t, mi.NoneType)]
    return _value(others[0], name, path, pick) if others else None


def _value(info: mi.Type, name: str, path: str, pick: Pick) -> Any:
    if isinstance(info, mi.CustomType):
        return _custom(info.cls, name, path, pick)
    if isinstance(info, mi.UnionType):
        return _union(info, name, path, pick)
    if isinstance(info, mi.StrType):
        known, value = _by_name(name)
        return value if known and value is not None else "fuzz"
    if isinstance(info, mi.IntType):
        return _int(info, name)
    if isinstance(info, mi.FloatType):
        return 1.0
    if isinstance(info, mi.BoolType):
        return False
    if isinstance(info, mi.NoneType):
        return None
    if isinstance(info, mi.LiteralType):
        return info.values[0]
    if isinstance(info, mi.EnumType):
        return next(iter(info.cls)).value
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return [_value(info.item_type, name, f"{path}[0]", pick)]
    if isinstance(info, mi.TupleType):
        return [_value(t, name, f"{path}[{i}]", pick) for i, t in enumerate(info.item_types)]
    if isinstance(info, mi.DictType):
        return {}
    if isinstance(info, mi.StructType | mi.TypedDictType | mi.DataclassType):
        return _struct(info, path, pick)
    if isinstance(info, mi.BytesType | mi.ByteArrayType):
        return b"fuzz"
    if isinstance(info, mi.DateTimeType):
        return _FUTURE.isoformat()
    if isinstance(info, mi.DateType):
        return "2031-01-15"
    if isinstance(info, mi.AnyType):
        return "fuzz"
    raise NotImplementedError(f"{path}: cannot generate a value of {type(info).__name__}")
