"""Argument and return validation from type annotations, with msgspec doing the work.

A function's parameters after ``ctx`` become a msgspec Struct (wire names in camelCase, unknown fields
forbidden); its return annotation becomes the return validator. Types that need a rule beyond their Python
type (``Id["venues"]``, ``TimeZone``, ``Instant``, ``LocalDate``, ``LocalTime``) implement ``_validate`` and are
checked through msgspec's ``dec_hook``, so every error carries the path of the field that broke the rule.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import typing
import zoneinfo
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, ClassVar

import msgspec
import msgspec.inspect

from . import ids

__all__ = [
    "ArgsValidator",
    "Id",
    "Instant",
    "LocalDate",
    "LocalTime",
    "ReturnValidator",
    "TimeZone",
    "ValidationFailure",
    "camel",
]


def camel(name: str) -> str:
    """``business_id`` → ``businessId``; names already in camelCase are unchanged."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class ValidationFailure(Exception):
    """A value broke a rule; ``path`` is a JSONPath such as ``$.args.timezone``."""

    def __init__(self, path: str, rule: str) -> None:
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule


class Id(str):
    """The id of a document in one table: ``Id["venues"]`` rejects ids of any other table."""

    table: ClassVar[str] = ""
    _by_table: ClassVar[dict[str, type[Id]]] = {}

    def __class_getitem__(cls, table: str) -> type[Id]:
        known = cls._by_table.get(table)
        if known is None:
            known = type(f"Id[{table!r}]", (Id,), {"table": table})
            cls._by_table[table] = known
        return known

    @classmethod
    def _validate(cls, value: object) -> Id:
        if not isinstance(value, str):
            raise ValueError(f"expected an id of table {cls.table!r}, got {type(value).__name__}")
        number = ids.decode_table_number(value)
        if number is None:
            raise ValueError(f"not a valid id: {value[:40]!r}")
        if cls.table and number != ids.table_number(cls.table):
            raise ValueError(f"not an id of table {cls.table!r}")
        return cls(value)


_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9][A-Za-z0-9_+\-]*){0,3}")
_MAX_ZONE_NAME = 64  # the longest IANA name is about 30 characters


class TimeZone(str):
    """An IANA time zone name such as ``Europe/London``.

    The name is checked for shape and length before the zone database is asked: it becomes a file path
    there, and a long or odd one fails with an operating-system error instead of "not found".
    """

    @classmethod
    def _validate(cls, value: object) -> TimeZone:
        if not isinstance(value, str) or len(value) > _MAX_ZONE_NAME or not _ZONE_NAME.fullmatch(value):
            raise ValueError(f"not an IANA time zone (a name such as 'Europe/London', at most {_MAX_ZONE_NAME} "
                             "characters)")
        if not _known_zone(value):
            raise ValueError("not an IANA time zone")
        return cls(value)


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


#: Years a LocalDate or Instant may fall in: far enough from the calendar's ends (years 1 and 9999) that
#: date arithmetic in functions (a day, a horizon, a recurrence) cannot overflow on a value a client sent.
FIRST_YEAR, LAST_YEAR = 1000, 8999
_YEARS_RULE = f"must fall in the years {FIRST_YEAR} to {LAST_YEAR}"


class Instant(str):
    """An ISO 8601 instant with an offset or ``Z``; naive times are rejected."""

    @classmethod
    def _validate(cls, value: object) -> Instant:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError("expected an ISO 8601 instant string")
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 instant") from None
        if parsed.tzinfo is None:
            raise ValueError("naive datetime: an offset or Z is required")
        if not FIRST_YEAR < parsed.year < LAST_YEAR:  # strict: the offset may move the UTC year by one
            raise ValueError(f"instant {_YEARS_RULE}")
        return cls(value)

    def to_datetime(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.replace("Z", "+00:00").replace("z", "+00:00"))


_LOCAL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LOCAL_TIME = re.compile(r"[0-9]{2}:[0-9]{2}")


class LocalDate(str):
    """A calendar date ``YYYY-MM-DD`` with no zone."""

    @classmethod
    def _validate(cls, value: object) -> LocalDate:
        if not isinstance(value, str) or not _LOCAL_DATE.fullmatch(value):
            raise ValueError("expected a local date YYYY-MM-DD")
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("not a valid calendar date") from None
        if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
            raise ValueError(f"date {_YEARS_RULE}")
        return cls(value)


class LocalTime(str):
    """A wall-clock time ``HH:MM`` with no zone."""

    @classmethod
    def _validate(cls, value: object) -> LocalTime:
        if not isinstance(value, str) or not _LOCAL_TIME.fullmatch(value):
            raise ValueError("expected a local time HH:MM")
        hour, minute = int(value[:2]), int(value[3:])
        if hour > 23 or minute > 59:
            raise ValueError("not a valid time of day")
        return cls(value)


def _dec_hook(kind: type, value: Any) -> Any:
    validate = getattr(kind, "_validate", None)
    if validate is not None:
        try:
            return validate(value)
        except (OSError, ArithmeticError) as error:
            # A value so odd that checking it hit the system's or the calendar's edge is still the caller's
            # bad value (a 400 naming the field), not a server fault or, worse, a "database unavailable".
            raise ValueError(f"not a valid {kind.__name__} ({type(error).__name__})") from None
    raise NotImplementedError(f"no validator for {kind!r}")


def _enc_hook(value: Any) -> Any:
    raise NotImplementedError(f"{type(value).__name__} is not a Convex value")


_PATH = re.compile(r"^(?P<rule>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def _translate(error: msgspec.ValidationError, root: str) -> ValidationFailure:
    match = _PATH.match(str(error))
    assert match is not None
    rule, path = match.group("rule"), match.group("path") or "$"
    path = root + path[1:]
    if missing := _MISSING.match(rule):
        return ValidationFailure(f"{path}.{missing.group('field')}", "missing required field")
    if unknown := _UNKNOWN.match(rule):
        return ValidationFailure(f"{path}.{unknown.group('field')}", "unknown field")
    return ValidationFailure(path, rule[:1].lower() + rule[1:])


class ArgsValidator:
    """Validates a decoded args object into keyword arguments for the Python function."""

    def __init__(self, struct: type[msgspec.Struct], python_names: tuple[str, ...]) -> None:
        self.struct = struct
        self.python_names = python_names

    @classmethod
    def from_signature(cls, fn: Callable[..., Any], qualname: str) -> ArgsValidator:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())[1:]
        hints = _hints(fn, qualname)
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"{qualname}: *args/**kwargs are not allowed; declare each argument")
            if param.name not in hints:
                raise TypeError(f"{qualname}: argument {param.name!r} has no type annotation")
            _check_supported(hints[param.name], f"{qualname}: argument {param.name!r}")
            if param.default is not inspect.Parameter.empty:
                _check_default(hints[param.name], param.default, f"{qualname}: argument {param.name!r}")
            if param.default is inspect.Parameter.empty:
                fields.append((param.name, hints[param.name]))
            else:
                fields.append((param.name, hints[param.name], param.default))
        struct = msgspec.defstruct(
            f"{qualname}.Args", fields, kw_only=True, forbid_unknown_fields=True, rename="camel", frozen=True
        )
        return cls(struct, tuple(p.name for p in params))

    def validate(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise ValidationFailure("$.args", f"expected an object, got {type(args).__name__}")
        try:
            value = msgspec.convert(args, self.struct, dec_hook=_dec_hook, strict=True)
        except msgspec.ValidationError as error:
            raise _translate(error, "$.args") from None
        return {name: getattr(value, name) for name in self.python_names}

    def json_schema(self) -> dict[str, Any]:
        return _schema(self.struct)


class ReturnValidator:
    """Validates (and normalises) a function's result against its return annotation."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind
        self._passthrough = kind is Any or kind is None or kind is type(None)

    def validate(self, value: Any) -> Any:
        if self.kind is None or self.kind is type(None):
            if value is not None:
                raise ValidationFailure("$.returns", f"expected null, got {type(value).__name__}")
            return None
        if self.kind is Any:
            return value
        try:
            return msgspec.convert(
                value, self.kind, dec_hook=_dec_hook, strict=True, from_attributes=True,
                builtin_types=(dt.datetime, dt.date, bytes),
            )
        except msgspec.ValidationError as error:
            raise _translate(error, "$.returns") from None

    def json_schema(self) -> dict[str, Any]:
        if self._passthrough:
            return {}
        return _schema(self.kind)


def return_validator(fn: Callable[..., Any], qualname: str) -> ReturnValidator:
    hints = _hints(fn, qualname)
    if "return" not in hints:
        raise TypeError(f"{qualname}: missing return annotation (use '-> None' for no result)")
    _check_supported(hints["return"], f"{qualname}: return annotation")
    return ReturnValidator(hints["return"])


_SUPPORTED = (
    "str, int, float, bool, None, bytes, list[...], dict[str, ...], tuple[...], a Literal, a union, "
    "a msgspec Struct, Id['table'], TimeZone, Instant, LocalDate, LocalTime or Any"
)


def _check_supported(kind: Any, where: str) -> None:
    """Refuse at registration a type msgspec would hand to ``_dec_hook`` with no rule to apply: otherwise
    the first call fails deep inside validation instead of the import naming the function."""
    try:
        info = msgspec.inspect.type_info(kind)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: type {kind!r} cannot be validated ({error}); use {_SUPPORTED}") from None
    seen: set[int] = set()
    stack: list[Any] = [info]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.CustomType) and not hasattr(node.cls, "_validate"):
            name = getattr(node.cls, "__qualname__", repr(node.cls))
            raise TypeError(f"{where}: type {name!r} cannot be validated; use {_SUPPORTED}")
        for value in _slots(node):
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, msgspec.inspect.Type):
                    stack.append(item)
                elif isinstance(item, msgspec.inspect.Field):
                    stack.append(item.type)


def _slots(node: Any) -> list[Any]:
    return [getattr(node, name) for name in getattr(type(node), "__struct_fields__", ())]


def _check_default(kind: Any, default: Any, where: str) -> None:
    """A default must itself be a valid value of the argument's type (a lambda or an object is not)."""
    try:
        msgspec.convert(default, kind, dec_hook=_dec_hook, builtin_types=(dt.datetime, dt.date, bytes))
    except (msgspec.ValidationError, TypeError, ValueError, NotImplementedError) as error:
        raise TypeError(f"{where}: default {default!r:.60} is not a valid value of its type ({error})") from None


def _hints(fn: Callable[..., Any], qualname: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as error:
        raise TypeError(f"{qualname}: cannot resolve type annotations: {error}") from error


@cache
def _schema_cached(kind: Any) -> dict[str, Any]:
    def hook(t: type) -> dict[str, Any]:
        if isinstance(t, type) and issubclass(t, Id):
            return {"type": "string", "format": f"id:{t.table}"}
        if isinstance(t, type) and issubclass(t, str):
            return {"type": "string", "format": t.__name__}
        raise NotImplementedError

    try:
        return msgspec.json.schema(kind, schema_hook=hook)
    except (TypeError, NotImplementedError):
        return {}


def _schema(kind: Any) -> dict[str, Any]:
    try:
        return _schema_cached(kind)
    except TypeError:
        return {}
