"""``ctx.db`` for reading: ``get`` and index-range queries, each recorded in the read set.

>>> venues = await ctx.db.query("venues").with_index("by_name", lambda q: q.gte("name", "A")).take(10)

Every query reads through one index range; ``filter`` narrows the rows afterwards and every row it looks at
counts against the scanned-rows limit. On tenant tables the range is bounded by the function's tenant.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from .. import knobs
from ..errors import BackendError, Forbidden, InvalidArgs, SchemaError
from ..schema import IndexSpec, TableSpec
from ..validators import camel
from ._keys import Interval, _dec, _enc, sort_key
from ._txn import Txn

__all__ = ["DatabaseReader", "PaginationOpts", "PaginationResult", "Query", "RangeBuilder"]

Document = dict[str, Any]
_BATCH = 256


class PaginationOpts(msgspec.Struct, rename="camel", frozen=True):
    """``{numItems, cursor}`` as Convex clients send it; ``cursor`` is None for the first page."""

    num_items: int
    cursor: str | None = None
    id: int | None = None


class PaginationResult(msgspec.Struct, rename="camel"):
    page: list[Document]
    is_done: bool
    continue_cursor: str


class TenantViolation(Forbidden):
    code = "TenantScopeRequired"


class RangeBuilder:
    """Builds an index range: ``eq`` on a prefix of the index fields, then bounds on the next field."""

    def __init__(self, table: TableSpec, index: IndexSpec, tenant: str | None = None) -> None:
        self._table = table
        self._index = index
        self.eqs: list[Any] = []
        self.lower: tuple[Any, bool] | None = None
        self.upper: tuple[Any, bool] | None = None
        self.empty = False
        self._implicit_tenant = tenant is not None and bool(table.tenant_key) and index.keys[0] == table.tenant_key
        if self._implicit_tenant:
            self.eqs.append(tenant)

    def _next_field(self, name: str, op: str) -> str:
        key = camel(name)
        position = len(self.eqs)
        fields = self._index.keys
        if position >= len(fields) or fields[position] != key:
            expected = fields[position] if position < len(fields) else "nothing"
            raise InvalidArgs(
                f"index {self._table.name}.{self._index.name}: {op}({key!r}) out of order; expected {expected!r} "
                f"(index fields: {', '.join(fields)})"
            )
        return key

    def _value(self, key: str, value: Any) -> Any:
        spec = self._table.fields[key]
        if value is None:
            return None
        try:
            return spec.check(value, f"{self._table.name}.{key}")
        except SchemaError as error:
            raise InvalidArgs(error.message) from None

    def eq(self, name: str, value: Any) -> RangeBuilder:
        if self.lower is not None or self.upper is not None:
            raise InvalidArgs("eq() must come before range bounds")
        if self._implicit_tenant and len(self.eqs) == 1 and camel(name) == self._table.tenant_key:
            # The tenant bound is already there; naming another tenant can only match nothing.
            self.empty = self.empty or value != self.eqs[0]
            return self
        key = self._next_field(name, "eq")
        self.eqs.append(self._value(key, value))
        return self

    def _bound(self, name: str, value: Any, op: str) -> Any:
        key = self._next_field(name, op)
        return self._value(key, value)

    def gt(self, name: str, value: Any) -> RangeBuilder:
        self.lower = (self._bound(name, value, "gt"), False)
        return self

    def gte(self, name: str, value: Any) -> RangeBuilder:
        self.lower = (self._bound(name, value, "gte"), True)
        return self

    def lt(self, name: str, value: Any) -> RangeBuilder:
        self.upper = (self._bound(name, value, "lt"), False)
        return self

    def lte(self, name: str, value: Any) -> RangeBuilder:
        self.upper = (self._bound(name, value, "lte"), True)
        return self


def _quote(name: str) -> str:
    return '"' + name + '"'


def _row_to_doc(table: TableSpec, row: Any) -> Document:
    return dict(zip(table.keys, row, strict=True))


def encode_cursor(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([_enc(v) for v in key])).decode("ascii")


_CURSOR = "$.args.paginationOpts.cursor"


def decode_cursor(cursor: str, table: TableSpec, index: IndexSpec) -> tuple[Any, ...]:
    """The index key a cursor holds, each part checked against its field's rule.

    A cursor comes back from the client, so it is untrusted input: anything but a key this index could hold
    (wrong width, wrong types, garbage) is refused as bad arguments before it reaches SQL. A well-formed key
    only moves where the page starts: the query's range and tenant bounds still apply.
    """
    try:
        values = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, msgspec.DecodeError, RecursionError):
        raise InvalidArgs(f"{_CURSOR}: not a cursor returned by this query") from None
    if not isinstance(values, list) or len(values) != len(index.keys):
        raise InvalidArgs(f"{_CURSOR}: not a cursor returned by this query (expected {len(index.keys)} key parts)")
    key: list[Any] = []
    for name, raw in zip(index.keys, values, strict=True):
        spec = table.fields[name]
        if raw is None:
            if not spec.nullable:
                raise InvalidArgs(f"{_CURSOR}: not a cursor returned by this query ({name} cannot be null)")
            key.append(None)
            continue
        try:
            key.append(spec.check(_dec(raw), f"{table.name}.{name}"))
        except (SchemaError, ValueError, TypeError, OverflowError) as error:
            rule = error.message if isinstance(error, SchemaError) else f"{name} is not a valid key part"
            raise InvalidArgs(f"{_CURSOR}: not a cursor returned by this query ({rule[:200]})") from None
    return tuple(key)


def _seek(columns: list[str], nullable: list[bool], after: tuple[Any, ...], ascending: bool, params: list[Any]) -> str:
    """Rows strictly after ``after`` in index order, where NULL sorts last (ascending) as in the index.

    A row comparison ``(a, b) > ($1, $2)`` is what the index serves best, but it is NULL — so false — as soon
    as either side holds a NULL; with nullable columns the comparison is spelt out term by term instead.
    """
    if not any(nullable) and all(v is not None for v in after):
        placeholders = []
        for value in after:
            params.append(value)
            placeholders.append(f"${len(params)}")
        op = ">" if ascending else "<"
        return f"({', '.join(map(_quote, columns))}) {op} ({', '.join(placeholders)})"

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    terms: list[str] = []
    for i, (column, value) in enumerate(zip(columns, after, strict=True)):
        col = _quote(column)
        if ascending:
            beyond = "FALSE" if value is None else (f"({col} > {bind(value)} OR {col} IS NULL)")
        else:
            beyond = f"{col} IS NOT NULL" if value is None else f"{col} < {bind(value)}"
        if beyond == "FALSE":
            continue
        same = [
            f"{_quote(c)} IS NULL" if v is None else f"{_quote(c)} = {bind(v)}"
            for c, v in zip(columns[:i], after[:i], strict=True)
        ]
        terms.append("(" + " AND ".join([*same, beyond]) + ")")
    return "(" + " OR ".join(terms) + ")" if terms else "FALSE"


class Query:
    """A lazy index-range query; nothing runs until a terminal method is awaited."""

    def __init__(self, reader: DatabaseReader, table: TableSpec) -> None:
        self._reader = reader
        self._table = table
        self._index = table.index("by_creation_time")
        self._range: RangeBuilder | None = None
        self._order: Literal["asc", "desc"] = "asc"
        self._filters: list[Callable[[Document], bool]] = []
        self._include_deleted = False

    def with_index(self, name: str, build: Callable[[RangeBuilder], RangeBuilder] | None = None) -> Query:
        self._index = self._table.index(name)
        builder = self._builder()
        if build is not None and not isinstance(build(builder), RangeBuilder):
            raise InvalidArgs("the index range function must return the range builder it was given")
        self._range = builder
        return self

    def _builder(self) -> RangeBuilder:
        txn = self._reader._txn
        scoped = txn.tenant if not txn.cross_tenant else None
        return RangeBuilder(self._table, self._index, scoped)

    def order(self, order: Literal["asc", "desc"]) -> Query:
        if order not in ("asc", "desc"):
            raise InvalidArgs(f"order must be 'asc' or 'desc', got {order!r}")
        self._order = order
        return self

    def filter(self, predicate: Callable[[Document], bool]) -> Query:
        self._filters.append(predicate)
        return self

    def include_deleted(self) -> Query:
        self._include_deleted = True
        return self

    # -- terminals ---------------------------------------------------------------------------------------

    async def collect(self) -> list[Document]:
        return await self._run(limit=None)

    async def take(self, n: int) -> list[Document]:
        if n < 0:
            raise InvalidArgs("take(n) needs n >= 0")
        # More than the scan budget can never be returned; the budget's own error reports the overrun.
        return await self._run(limit=min(n, knobs.MAX_ROWS_SCANNED + 1))

    async def first(self) -> Document | None:
        rows = await self._run(limit=1)
        return rows[0] if rows else None

    async def unique(self) -> Document | None:
        rows = await self._run(limit=2)
        if len(rows) > 1:
            raise BackendError(f"unique() found more than one document in {self._table.name}.{self._index.name}")
        return rows[0] if rows else None

    async def paginate(self, opts: PaginationOpts | dict[str, Any]) -> PaginationResult:
        if isinstance(opts, dict):
            try:
                opts = msgspec.convert(opts, PaginationOpts)
            except msgspec.ValidationError as error:
                raise InvalidArgs(f"$.args.paginationOpts: {error}") from None
        if not 0 < opts.num_items <= knobs.MAX_PAGE_ITEMS:
            raise InvalidArgs(f"$.args.paginationOpts.numItems: must be between 1 and {knobs.MAX_PAGE_ITEMS}")
        after = decode_cursor(opts.cursor, self._table, self._index) if opts.cursor else None
        rows, last_key, exhausted = await self._scan(opts.num_items, after)
        cursor = encode_cursor(last_key) if last_key is not None else (opts.cursor or "")
        return PaginationResult(page=rows, is_done=exhausted, continue_cursor=cursor)

    # -- execution ---------------------------------------------------------------------------------------

    async def _run(self, limit: int | None) -> list[Document]:
        rows, _, _ = await self._scan(limit, None)
        return rows

    def _check_scope(self) -> None:
        txn = self._reader._txn
        if txn.cross_tenant:
            return
        if (self._table.tenant_key or self._table.tenant_root) and txn.tenant is None:
            raise TenantViolation(
                f"table {self._table.name!r} belongs to a tenant; declare tenant=... on {txn.function_path or 'the function'}"
            )

    def _visible(self, doc: Document) -> bool:
        txn = self._reader._txn
        if not self._include_deleted and self._table.soft_delete and doc.get("deleted"):
            return False
        if txn.tenant is not None and not txn.cross_tenant:
            if self._table.tenant_root and doc["_id"] != txn.tenant:
                return False
            if self._table.tenant_key and doc.get(self._table.tenant_key) != txn.tenant:
                return False
        return all(predicate(doc) for predicate in self._filters)

    async def _scan(
        self, limit: int | None, after: tuple[Any, ...] | None
    ) -> tuple[list[Document], tuple[Any, ...] | None, bool]:
        """Rows in range order; returns (visible rows, last scanned key, whether the range was exhausted)."""
        self._check_scope()
        txn = self._reader._txn
        table, index = self._table, self._index
        builder = self._range or self._builder()
        eqs = list(builder.eqs)
        if builder.empty:
            return [], None, True
        columns = [table.column_of(k) for k in index.keys]
        where: list[str] = []
        params: list[Any] = []
        for column, value in zip(columns, eqs, strict=False):
            params.append(value)
            where.append(f"{_quote(column)} IS NULL" if value is None else f"{_quote(column)} = ${len(params)}")
            if value is None:
                params.pop()
        nxt = columns[len(eqs)] if len(eqs) < len(columns) else None
        if builder.lower is not None and nxt is not None:
            params.append(builder.lower[0])
            where.append(f"{_quote(nxt)} {'>=' if builder.lower[1] else '>'} ${len(params)}")
        if builder.upper is not None and nxt is not None:
            params.append(builder.upper[0])
            where.append(f"{_quote(nxt)} {'<=' if builder.upper[1] else '<'} ${len(params)}")
        if after is not None:
            nullable = [table.fields[k].nullable for k in index.keys]
            where.append(_seek(columns, nullable, after, self._order == "asc", params))
        if table.soft_delete and not self._include_deleted:
            where.append("NOT deleted")
        scope = txn.tenant if not txn.cross_tenant else None
        if scope is not None and table.tenant_root:
            params.append(scope)  # the tenant's own row only: never scan (or leak a cursor into) another's
            where.append(f"_id = ${len(params)}")
        elif scope is not None and table.tenant_key and index.keys[0] != table.tenant_key:
            params.append(scope)
            where.append(f"{_quote(table.column_of(table.tenant_key))} = ${len(params)}")
        direction = "ASC" if self._order == "asc" else "DESC"
        sql = f"SELECT {table.select_list} FROM {_quote(table.name)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY " + ", ".join(f"{_quote(c)} {direction}" for c in columns)

        results: list[Document] = []
        last_key: tuple[Any, ...] | None = None
        exhausted = True
        if limit == 0:
            exhausted = False
        elif not self._filters:
            # One round trip: without a filter every row fetched is a row returned. Fetching one past the
            # scan budget is enough to know the budget was exceeded.
            wanted = limit if limit is not None else max(knobs.MAX_ROWS_SCANNED - txn.rows_scanned, 0) + 1
            if txn.held:  # a read sees this transaction's writes before it
                await txn.flush()
            records = await txn.conn.fetch(sql + f" LIMIT {int(wanted) + 1}", *params)
            rows = records if limit is None else records[:limit]
            txn.count_scanned(len(rows))
            for record in rows:
                doc = _row_to_doc(table, record)
                last_key = tuple(doc.get(k) for k in index.keys)
                if self._visible(doc):
                    results.append(doc)
                    txn.saw_in_scope(doc["_id"])
                    txn.remember(doc)
            exhausted = limit is None or len(records) <= limit
        else:
            if txn.held:  # a read sees this transaction's writes before it
                await txn.flush()
            cursor = await txn.conn.cursor(sql, *params)
            while True:
                batch = await cursor.fetch(_BATCH)
                if not batch:
                    break
                stop = False
                for record in batch:
                    txn.count_scanned(1)
                    doc = _row_to_doc(table, record)
                    last_key = tuple(doc.get(k) for k in index.keys)
                    if self._visible(doc):
                        results.append(doc)
                        txn.saw_in_scope(doc["_id"])
                        txn.remember(doc)
                        if limit is not None and len(results) >= limit:
                            stop = True
                            break
                if stop:
                    exhausted = False
                    break
        self._record(eqs, builder, after, None if exhausted else last_key)
        return results, last_key, exhausted

    def _record(
        self, eqs: list[Any], builder: RangeBuilder, after: tuple[Any, ...] | None, stop: tuple[Any, ...] | None
    ) -> None:
        txn = self._reader._txn
        if self._table.tenant_root and txn.tenant is not None and not txn.cross_tenant:
            # A scoped read of the tenants table can only ever see the tenant's own row.
            txn.record_read(Interval(self._table.name, "by_id", (txn.tenant,), None, True, None, True))
            return
        prefix = tuple(eqs)
        lo: tuple[Any, ...] | None = sort_key(prefix) if prefix else None
        lo_inclusive = True
        hi: tuple[Any, ...] | None = lo
        hi_inclusive = True
        if builder.lower is not None:
            lo, lo_inclusive = sort_key((*prefix, builder.lower[0])), builder.lower[1]
        if builder.upper is not None:
            hi, hi_inclusive = sort_key((*prefix, builder.upper[0])), builder.upper[1]
        ascending = self._order == "asc"
        if after is not None:
            if ascending:
                lo, lo_inclusive = sort_key(after), False
            else:
                hi, hi_inclusive = sort_key(after), False
        if stop is not None:
            if ascending:
                hi, hi_inclusive = sort_key(stop), True
            else:
                lo, lo_inclusive = sort_key(stop), True
        self._reader._txn.record_read(
            Interval(self._table.name, self._index.name, prefix, lo, lo_inclusive, hi, hi_inclusive)
        )


class DatabaseReader:
    """Read access for queries (and the read half of mutations)."""

    def __init__(self, txn: Txn) -> None:
        self._txn = txn

    def query(self, table: str) -> Query:
        return Query(self, self._txn.schema.table(table))

    async def get(self, document_id: str, *, include_deleted: bool = False) -> Document | None:
        """The document with this id, or None (also for another tenant's id, or a deleted row)."""
        if not isinstance(document_id, str):
            raise InvalidArgs(f"get() needs an id string, got {type(document_id).__name__}")
        table = self._txn.schema.table_of_id(document_id)
        if table is None:
            return None
        doc = await self._fetch(table, document_id)
        if doc is None:
            return None
        if not include_deleted and table.soft_delete and doc.get("deleted"):
            return None
        if not self._in_scope(table, doc):
            return None
        self._txn.saw_in_scope(document_id)
        return doc

    def _in_scope(self, table: TableSpec, doc: Document) -> bool:
        txn = self._txn
        if txn.cross_tenant:
            return True
        if table.tenant_root or table.tenant_key:
            if txn.tenant is None:
                raise TenantViolation(
                    f"table {table.name!r} belongs to a tenant; declare tenant=... on {txn.function_path or 'the function'}"
                )
            if table.tenant_root:
                return bool(doc["_id"] == txn.tenant)
            return bool(doc.get(table.tenant_key or "") == txn.tenant)
        return True

    async def _fetch(self, table: TableSpec, document_id: str, *, for_update: bool = False) -> Document | None:
        txn = self._txn
        sql = f"SELECT {table.select_list} FROM {_quote(table.name)} WHERE _id = $1"
        if txn.held:  # a read sees this transaction's writes before it
            await txn.flush()
        record = await txn.conn.fetchrow(sql, document_id)
        txn.count_scanned(1)
        txn.record_read(Interval(table.name, "by_id", (document_id,), None, True, None, True))
        if record is None:
            return None
        doc = _row_to_doc(table, record)
        txn.remember(doc)
        return doc
