"""Document ids: opaque strings that encode their table, so ``db.get(id)`` needs no table name.

An id is lowercase base32 of 14 random bytes, the table number (2 bytes) and a 1-byte check. The table number
is derived from the table name, so every node agrees without a catalog.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

__all__ = ["decode_table_number", "new_id", "table_number"]

_RANDOM_BYTES = 14
_ID_LENGTH = 28


def table_number(table: str) -> int:
    return int.from_bytes(hashlib.blake2b(table.encode(), digest_size=2).digest(), "big")


def _check(payload: bytes) -> int:
    return zlib.crc32(payload) & 0xFF


def new_id(number: int) -> str:
    payload = os.urandom(_RANDOM_BYTES) + number.to_bytes(2, "big")
    raw = payload + bytes([_check(payload)])
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_table_number(document_id: str) -> int | None:
    """The table number in ``document_id``, or None if it is not a well-formed id."""
    if not isinstance(document_id, str) or len(document_id) != _ID_LENGTH:
        return None
    try:
        raw = base64.b32decode(document_id.upper() + "====")
    except ValueError:
        return None
    payload, check = raw[:-1], raw[-1]
    if _check(payload) != check:
        return None
    return int.from_bytes(payload[-2:], "big")
