"""The state of one function run against the database: connection, scope, read set and write log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import knobs
from ..errors import LimitExceeded
from ..postgres import Connection
from ..schema import Schema
from ._keys import Interval, ReadSet, WrittenKey, index_keys
from ._literals import literal


@dataclass(slots=True)
class Write:
    table: str
    document_id: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@dataclass(slots=True)
class HeldWrite:
    """A write held back until the transaction next talks to the database: a read, a write that must go at
    once, or the ``COMMIT`` message, which then carries it (``parts`` are the statement's text around its
    parameters, ``types`` their column types, so it can be written with literals there)."""

    parts: tuple[str, ...]
    params: tuple[Any, ...]
    types: tuple[str, ...]

    @property
    def sql(self) -> str:
        """The statement with ``$1``, ``$2``… for its parameters."""
        return self._fill(f"${number}" for number in range(1, len(self.params) + 1))

    def literal_sql(self) -> str:
        """The statement with each parameter written as a literal (``_literals.Unrenderable`` if one has none)."""
        return self._fill(literal(sql_type, value) for sql_type, value in zip(self.types, self.params, strict=True))

    def _fill(self, values: Iterable[str]) -> str:
        head, *rest = self.parts
        return head + "".join(value + part for value, part in zip(values, rest, strict=True))


@dataclass
class Txn:
    """One transaction's bookkeeping. ``tenant`` is the business the function runs for (None: unscoped)."""

    conn: Connection
    schema: Schema
    now: dt.datetime
    read_only: bool
    tenant: str | None = None
    cross_tenant: bool = False
    actor: str | None = None
    function_path: str = ""
    request_id: str | None = None
    read_set: ReadSet = field(default_factory=ReadSet)
    writes: list[Write] = field(default_factory=list)
    rows_scanned: int = 0
    audit_rows: list[tuple[Any, ...]] = field(default_factory=list)
    # Ids this transaction has seen inside its tenant scope; a write may reference them without a lookup.
    in_scope_ids: set[str] = field(default_factory=set)
    #: The latest version of every document this mutation read or wrote (copies), so a patch after a read
    #: needs no second round trip. Unused in read-only transactions.
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Writes not yet sent, in order (see ``DatabaseWriter``); ``flush`` sends them.
    held: list[HeldWrite] = field(default_factory=list)
    held_bytes: int = 0
    #: A held write that failed when it was sent. The function may have caught the error of the call that
    #: sent it (not the write's own call), so the transaction must not commit: the runner rolls it back.
    write_failed: BaseException | None = None
    #: Documents this transaction hard-deleted (a held write must not reference them).
    deleted_ids: set[str] = field(default_factory=set)

    async def flush(self) -> None:
        """Send the held writes, in order, before a statement that may depend on them. Each leaves ``held``
        only once sent; a failure (or a cancellation) marks the transaction as not committable."""
        held = self.held
        try:
            while held:
                write = held[0]
                await self.conn.execute(write.sql, *write.params)
                del held[0]
            self.held_bytes = 0
        except BaseException as error:
            self.write_failed = error
            raise

    def remember(self, doc: dict[str, Any]) -> None:
        if not self.read_only:
            self.docs[doc["_id"]] = dict(doc)

    def saw_in_scope(self, document_id: str) -> None:
        if self.tenant is not None and not self.cross_tenant:
            self.in_scope_ids.add(document_id)

    def record_read(self, interval: Interval) -> None:
        if len(self.read_set) >= knobs.MAX_READ_RANGES:
            raise LimitExceeded(
                f"{self.function_path}: read more than {knobs.MAX_READ_RANGES} index ranges in one transaction"
            )
        self.read_set.add(interval)

    def count_scanned(self, rows: int) -> None:
        self.rows_scanned += rows
        if self.rows_scanned > knobs.MAX_ROWS_SCANNED:
            raise LimitExceeded(
                f"{self.function_path}: scanned more than {knobs.MAX_ROWS_SCANNED} documents in one "
                "transaction; read through a narrower index range"
            )

    def record_write(self, write: Write) -> None:
        if len(self.writes) >= knobs.MAX_ROWS_WRITTEN:
            raise LimitExceeded(
                f"{self.function_path}: wrote more than {knobs.MAX_ROWS_WRITTEN} documents in one transaction"
            )
        self.writes.append(write)

    def written_keys(self) -> list[WrittenKey]:
        """Old and new index keys of every written document, deduplicated."""
        seen: set[WrittenKey] = set()
        out: list[WrittenKey] = []
        for write in self.writes:
            table = self.schema.table(write.table)
            for document in (write.old, write.new):
                if document is None:
                    continue
                for index, key in index_keys(table, document):
                    item = WrittenKey(table.name, index.name, key)
                    if item not in seen:
                        seen.add(item)
                        out.append(item)
        return out
