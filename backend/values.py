"""The Convex value model and its JSON encoding ("convex_encoded_json").

Python ``int`` is a Convex *number* (float64, sent as ``5.0`` because the Python HTTP client rejects JSON
integers); ``Int64`` is a Convex *int64* (``{"$integer": …}``). ``bytes`` travel as ``{"$bytes": …}`` and the
floats JSON cannot carry (NaN, ±Infinity, -0.0) as ``{"$float": …}``. Instants (``datetime``) leave as ISO 8601
strings in UTC; there is no way back, which is why functions take instants as validated strings.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import struct
from typing import Any

import msgspec

from . import knobs

__all__ = [
    "Int64",
    "ValueError_",
    "check_depth",
    "decode_value",
    "encode_error_data",
    "encode_value",
    "format_instant",
    "value_size",
]

_MAX_KEY_LENGTH = 1024


class Int64(int):
    """A 64-bit integer that travels as a Convex int64 (a JS ``bigint``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Int64({int(self)})"

    @classmethod
    def _validate(cls, value: object) -> Int64:
        """An argument annotated ``Int64``: an integer (``$integer`` on the wire) within 64 bits."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected a 64-bit integer")
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError("out of the 64-bit integer range")
        return cls(value)


class ValueError_(ValueError):
    """A value that cannot be represented in the Convex value model; ``path`` says where."""

    def __init__(self, path: str, rule: str) -> None:
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule


def format_instant(value: dt.datetime) -> str:
    """``2025-03-23T09:00:00Z``: UTC, second precision unless there are fractions."""
    if value.tzinfo is None:
        raise ValueError_("$", "naive datetime: an offset or Z is required")
    utc = value.astimezone(dt.UTC)
    text = utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _check_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise ValueError_(path, f"object keys must be strings, got {type(key).__name__}")
    if key.startswith("$"):
        raise ValueError_(path, f"object key {key!r} must not start with '$'")
    if len(key) > _MAX_KEY_LENGTH:
        raise ValueError_(path, "object keys are at most 1024 characters")
    if not key.isascii() or not key.isprintable():
        raise ValueError_(path, f"object key {key!r} must be printable ASCII")
    return key


def _encode_float(value: float) -> Any:
    if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0):
        return value
    return {"$float": base64.b64encode(struct.pack("<d", value)).decode("ascii")}


def check_depth(value: Any, limit: int | None = None, path: str = "$") -> None:
    """Refuse a value nested more than ``limit`` (default ``knobs.MAX_VALUE_DEPTH``) arrays/objects deep.

    The one nesting rule for every boundary (HTTP bodies, socket messages, stored values): recursive code
    further in (decoding, validation, hashing) may then recurse freely. The error names where the limit was
    crossed. Recursion here is bounded by ``limit`` itself.
    """
    limit = knobs.MAX_VALUE_DEPTH if limit is None else limit
    trail = _too_deep(value, limit)
    if trail is not None:
        raise ValueError_(path + "".join(reversed(trail)), _depth_rule(limit))


def _depth_rule(limit: int) -> str:
    return f"values may nest at most {limit} levels deep (arrays and objects)"


def _too_deep(value: Any, room: int) -> list[str] | None:
    """The path (innermost step first) to the first container beyond ``room`` more levels, or None."""
    if isinstance(value, dict):
        steps: Any = ((f".{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        steps = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    if room <= 0:
        return []
    for step, item in steps:
        if isinstance(item, dict | list | tuple):
            trail = _too_deep(item, room - 1)
            if trail is not None:
                trail.append(step)
                return trail
    return None


def encode_value(value: Any, path: str = "$") -> Any:
    """Turn a Python value into its convex_encoded_json form (ready for ``msgspec.json.encode``)."""
    return _encode(value, path, knobs.MAX_VALUE_DEPTH)


def _encode(value: Any, path: str, room: int) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, Int64):
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError_(path, "int64 out of range")
        return {"$integer": base64.b64encode(struct.pack("<q", value)).decode("ascii")}
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _encode_float(float(value))
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, dict):
        if room <= 0:
            raise ValueError_(path, _depth_rule(knobs.MAX_VALUE_DEPTH))
        return {_check_key(k, path): _encode(v, f"{path}.{k}", room - 1) for k, v in value.items() if v is not _UNSET}
    if isinstance(value, list | tuple):
        if room <= 0:
            raise ValueError_(path, _depth_rule(knobs.MAX_VALUE_DEPTH))
        return [_encode(v, f"{path}[{i}]", room - 1) for i, v in enumerate(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        return format_instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _encode(value.value, path, room)
    if isinstance(value, msgspec.Struct):
        plain = msgspec.to_builtins(value, builtin_types=(bytes, dt.datetime, dt.date), enc_hook=_plain)
        return _encode(plain, path, room)
    raise ValueError_(path, f"{type(value).__name__} is not a Convex value")


_UNSET = msgspec.UNSET


def _plain(value: Any) -> Any:
    """Subclasses of builtins (``Id``, ``TimeZone``…) inside Structs leave as their plain base value."""
    for base in (str, int, float):
        if isinstance(value, base):
            return base(value)
    raise NotImplementedError(f"{type(value).__name__} is not a Convex value")


def _b64(text: object, path: str) -> bytes:
    if not isinstance(text, str) or len(text) % 4:
        raise ValueError_(path, "expected padded base64 text")
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        raise ValueError_(path, "expected padded base64 text") from None


def decode_value(value: Any, path: str = "$") -> Any:
    """Turn convex_encoded_json into Python values.

    Integral float64 numbers become ``int`` so ``int`` parameters accept ``5.0`` from clients that only have
    float64; ``$integer`` becomes ``Int64``. Values nested deeper than ``knobs.MAX_VALUE_DEPTH`` are refused.
    """
    return _decode(value, path, knobs.MAX_VALUE_DEPTH)


def _decode(value: Any, path: str, room: int) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError_(path, "strings may not contain NUL (U+0000): the database cannot store it")
        return value
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= 2**53 and not (value == 0 and math.copysign(1, value) < 0):
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        if room <= 0:
            raise ValueError_(path, _depth_rule(knobs.MAX_VALUE_DEPTH))
        return [_decode(v, f"{path}[{i}]", room - 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$integer":
                raw = _b64(inner, path)
                if len(raw) != 8:
                    raise ValueError_(path, "$integer must hold exactly 8 bytes")
                return Int64(struct.unpack("<q", raw)[0])
            if key == "$float":
                raw = _b64(inner, path)
                if len(raw) != 8:
                    raise ValueError_(path, "$float must hold exactly 8 bytes")
                number = struct.unpack("<d", raw)[0]
                if math.isfinite(number) and not (number == 0 and math.copysign(1, number) < 0):
                    raise ValueError_(path, "$float is only for NaN, ±Infinity and -0")
                return number
            if key == "$bytes":
                return _b64(inner, path)
            if key in ("$set", "$map"):
                raise ValueError_(path, f"{key} values are not supported")
        if room <= 0:
            raise ValueError_(path, _depth_rule(knobs.MAX_VALUE_DEPTH))
        return {_check_key(k, path): _decode(v, f"{path}.{k}", room - 1) for k, v in value.items()}
    raise ValueError_(path, f"{type(value).__name__} is not a JSON value")


def value_size(encoded: Any) -> int:
    """Bytes of the encoded JSON text; the unit of the size limits."""
    return len(msgspec.json.encode(encoded))


def encode_error_data(data: Any) -> Any:
    """An ``AppError``'s data for the wire; data that is not a Convex value still reaches the client as text
    (an error while reporting an error must never take the server down)."""
    try:
        encoded = encode_value(data)
        msgspec.json.encode(encoded)
        return encoded
    except Exception:
        try:
            return str(data)
        except Exception:
            return "unprintable error data"
