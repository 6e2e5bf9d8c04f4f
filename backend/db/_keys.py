"""Index keys, intervals and read sets: the vocabulary of precise invalidation.

A read is recorded as an ``Interval`` over one index: the equality prefix (which is also the bucket key of
the invalidation index) plus optional lower and upper bounds, each a prefix of the full index key. A write
touches an index at its old and new key; a subscription is invalidated when one of those keys falls inside
one of its intervals. Keys compare like PostgreSQL with ``COLLATE "C"``: NULL sorts last.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..schema import IndexSpec, TableSpec

__all__ = [
    "Interval",
    "ReadSet",
    "WrittenKey",
    "decode_keys",
    "encode_keys",
    "index_keys",
    "sort_key",
]

Key = tuple[Any, ...]


def sort_key(values: Iterable[Any]) -> Key:
    """A tuple that Python orders exactly as PostgreSQL orders the index (NULLs last)."""
    return tuple((1,) if v is None else (0, v) for v in values)


@dataclass(frozen=True, slots=True)
class Interval:
    """An index range a function read. Bounds are sort keys compared as prefixes of a full key."""

    table: str
    index: str
    prefix: Key
    lo: Key | None = None
    lo_inclusive: bool = True
    hi: Key | None = None
    hi_inclusive: bool = True

    def contains(self, key: Key) -> bool:
        """``key`` is a full index key (raw values); the prefix has been matched by the caller."""
        return self.contains_sorted(sort_key(key))

    def contains_sorted(self, probe: Key) -> bool:
        """Like ``contains`` for a key already turned into its sort form (done once per written key)."""
        if self.lo is not None:
            part = probe[: len(self.lo)]
            if part < self.lo or (part == self.lo and not self.lo_inclusive):
                return False
        if self.hi is not None:
            part = probe[: len(self.hi)]
            if part > self.hi or (part == self.hi and not self.hi_inclusive):
                return False
        return True


@dataclass(slots=True)
class ReadSet:
    """Everything one function run read, as intervals."""

    intervals: list[Interval] = field(default_factory=list)

    def add(self, interval: Interval) -> None:
        self.intervals.append(interval)

    def __len__(self) -> int:
        return len(self.intervals)


@dataclass(frozen=True, slots=True)
class WrittenKey:
    table: str
    index: str
    key: Key


def index_keys(table: TableSpec, document: dict[str, Any]) -> Iterable[tuple[IndexSpec, Key]]:
    for index in table.indexes.values():
        yield index, tuple(document.get(k) for k in index.keys)


# -- the commit summary: written keys, encoded so another node can decode them with their types ----------


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _enc(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": (value - _EPOCH) // _MICROSECOND}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode("ascii")}
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return _EPOCH + value["t"] * _MICROSECOND
        if "d" in value:
            return dt.date.fromisoformat(value["d"])
        if "b" in value:
            return base64.b64decode(value["b"])
    return value


def encode_keys(keys: Iterable[WrittenKey]) -> bytes:
    return msgspec.json.encode([[k.table, k.index, [_enc(v) for v in k.key]] for k in keys])


def decode_keys(raw: bytes) -> list[WrittenKey]:
    return [WrittenKey(t, i, tuple(_dec(v) for v in key)) for t, i, key in msgspec.json.decode(raw)]
