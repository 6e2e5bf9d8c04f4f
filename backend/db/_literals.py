"""SQL literals for the values a document column holds, so held-back writes can travel in the ``COMMIT`` message.

That message is one simple-protocol query (see ``_commit``), which has no parameters. Every value is written
so that nothing in it can end the literal: text, JSON and bytes as hex (``decode('…', 'hex')``), numbers and
booleans from Python's own formatting of checked ``int``/``float``/``bool``, instants and dates from
``isoformat()`` (digits, ``-``, ``:``, ``.``, ``+`` and ``T`` only). A value of any other shape is not rendered
(``Unrenderable``) and its write goes to the database as a prepared statement instead.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import msgspec

from ..postgres import json_default

__all__ = ["Unrenderable", "bytea_literal", "literal", "text_literal"]


_FIRST_INSTANT = dt.datetime.min.replace(tzinfo=dt.UTC)
_LAST_INSTANT = dt.datetime.max.replace(tzinfo=dt.UTC)


class Unrenderable(Exception):
    """The value has no literal form here; send it as a parameter."""


def bytea_literal(value: bytes) -> str:
    return f"decode('{value.hex()}', 'hex')"


def text_literal(value: str) -> str:
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: leave it to the driver's own error
        raise Unrenderable(value[:20]) from None
    return f"convert_from({bytea_literal(encoded)}, 'UTF8')"


def _float(value: float) -> str:
    if math.isnan(value):
        return "'NaN'::float8"
    if math.isinf(value):
        return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
    return f"{value!r}::float8"  # repr is the shortest text that reads back as exactly this double


def literal(sql_type: str, value: Any) -> str:
    """``value`` as a literal of the column type ``sql_type`` (a ``FieldSpec.sql_type``)."""
    if value is None:
        return "NULL"
    base = sql_type.replace(' COLLATE "C"', "")
    if base.endswith("[]"):
        if not isinstance(value, list | tuple):
            raise Unrenderable(base)
        items = [literal(base[:-2], item) for item in value]
        return f"ARRAY[{', '.join(items)}]::{base}" if items else f"'{{}}'::{base}"
    kind = type(value)
    if base == "text" and isinstance(value, str):
        return text_literal(value)
    if base == "bigint" and kind is int:
        return str(value)
    if base == "double precision" and kind in (float, int):
        return _float(float(value))
    if base == "boolean" and kind is bool:
        return "true" if value else "false"
    # The calendar's first and last instant and day are sent by asyncpg as -infinity and infinity: leave them
    # to it, so a value is stored the same whichever way its write travels.
    if (base == "timestamptz" and kind is dt.datetime and value.tzinfo is not None
            and _FIRST_INSTANT < value < _LAST_INSTANT):
        return f"'{value.isoformat()}'::timestamptz"
    if base == "date" and kind is dt.date and dt.date.min < value < dt.date.max:
        return f"'{value.isoformat()}'::date"
    if base == "jsonb":
        try:
            encoded = msgspec.json.encode(value, enc_hook=json_default)
        except (TypeError, msgspec.EncodeError):
            raise Unrenderable(base) from None
        return f"convert_from({bytea_literal(encoded)}, 'UTF8')::jsonb"
    if base == "bytea" and kind is bytes:
        return bytea_literal(value)
    raise Unrenderable(f"{base}: {kind.__name__}")
