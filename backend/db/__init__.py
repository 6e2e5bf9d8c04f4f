"""``ctx.db``: index-range reads recorded in read sets, and writes recorded in the write log."""

from __future__ import annotations

from ._keys import Interval, ReadSet, WrittenKey, decode_keys, encode_keys, index_keys, sort_key
from ._txn import Txn, Write
from .reader import DatabaseReader, PaginationOpts, PaginationResult, Query, RangeBuilder
from .writer import DatabaseWriter

__all__ = [
    "DatabaseReader",
    "DatabaseWriter",
    "Interval",
    "PaginationOpts",
    "PaginationResult",
    "Query",
    "RangeBuilder",
    "ReadSet",
    "Txn",
    "Write",
    "WrittenKey",
    "decode_keys",
    "encode_keys",
    "index_keys",
    "sort_key",
]
