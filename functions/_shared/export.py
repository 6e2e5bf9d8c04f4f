"""A business's data, page by page, for export (M4): members, credit lots, bookings and the credit ledger.

One cursor walks the parts in that order, so a client simply asks for the next page until ``isDone``. Each
page holds rows of one part, oldest first, soft-deleted rows included (a removed member's bookings and
ledger are still the studio's history, M3). The cursor is ``<part>:<position in that part>``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .errors import invalid

__all__ = ["PARTS", "ExportPage", "export_page"]

Part = Literal["members", "credit_lots", "bookings", "credit_ledger"]
PARTS: tuple[Part, ...] = ("members", "credit_lots", "bookings", "credit_ledger")


class ExportPage(msgspec.Struct, rename="camel"):
    part: str
    page: list[dict[str, Any]]
    is_done: bool
    continue_cursor: str


def _split(cursor: str | None) -> tuple[int, str | None]:
    if not cursor:
        return 0, None
    part, _, inner = cursor.partition(":")
    if part not in PARTS:
        raise invalid("paginationOpts.cursor", "is not a cursor this export returned")
    return PARTS.index(part), inner or None


async def export_page(db: Any, num_items: int, cursor: str | None) -> ExportPage:
    """The next page of the business's export (the caller's tenant) after ``cursor``."""
    index, inner = _split(cursor)
    part = PARTS[index]
    result = await db.query(part).include_deleted().paginate({"numItems": num_items, "cursor": inner})
    if not result.is_done:
        return ExportPage(part, result.page, False, f"{part}:{result.continue_cursor}")
    if index + 1 < len(PARTS):  # this part is finished: the next page starts the next part
        return ExportPage(part, result.page, False, f"{PARTS[index + 1]}:")
    return ExportPage(part, result.page, True, f"{part}:{result.continue_cursor}")
