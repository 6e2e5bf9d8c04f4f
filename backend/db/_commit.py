"""A mutation's transaction whose last statements travel with its ``COMMIT``: one round trip, not several.

asyncpg sends ``COMMIT`` on its own, after the bookkeeping rows (commit log, stored result) and whatever
writes the function left held back (``writer``). Here they are all written as literals into one
simple-protocol message ending in ``COMMIT`` (values of document columns through ``_literals``). Every literal is hex
(``decode('…', 'hex')``) or a Python ``int``, so no value can change the statement. The transaction is
started by hand (``BEGIN``), so ``Connection.transaction()`` inside it fails loudly in asyncpg rather than
nesting. The same message may also begin the next mutation's transaction (see ``_pool.PoolGate``), which
then needs no ``BEGIN`` round trip of its own.

The bookkeeping rows carry ``statement_timestamp()``, not the column default ``now()``: in a transaction
begun ahead of time, ``now()`` is when it was begun.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from ..postgres import Connection
from ._literals import bytea_literal, text_literal
from ._txn import HeldWrite

__all__ = ["FinalWrites", "serializable"]


class FinalWrites:
    """Rows to write just before ``COMMIT``, in the same message."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def held_writes(self, writes: Sequence[HeldWrite], lock_wait_seconds: float) -> None:
        """The function's writes not yet sent, with literals for parameters; all or none (``Unrenderable``).

        They run after the function's own time limit stopped counting, so a row lock they wait for is bounded
        here: past ``lock_wait_seconds`` PostgreSQL fails the message (``lock_not_available``) before
        ``COMMIT``, and nothing is committed."""
        statements = [f"SET LOCAL lock_timeout = {max(1, int(lock_wait_seconds * 1000))}"]
        statements += [write.literal_sql() for write in writes]
        # The bookkeeping rows wait as before: a racing replay of the same request waits on the stored
        # result's key and then finds it, instead of timing out on a request that did commit.
        statements.append("SET LOCAL lock_timeout = 0")
        self.statements.extend(statements)

    def commit_log(self, summary: bytes) -> None:
        self.statements.append("INSERT INTO _commit_log (xid, summary, committed_at) "
                               f"VALUES (pg_current_xact_id(), {bytea_literal(summary)}, statement_timestamp())")

    def session_result(self, session_id: str, request_id: int, result: bytes, log_lines: bytes,
                       identity: str | None, function_path: str) -> None:
        """The stored result of a request, bound to who asked (token identifier, or NULL for anonymous) and
        what it ran (the function path, plus any argument binding)."""
        caller = "NULL" if identity is None else text_literal(identity)
        self.statements.append(
            "INSERT INTO _session_requests (session_id, request_id, result, log_lines, identity, function_path, "
            f"created_at) VALUES ({text_literal(session_id)}, {int(request_id)}, {bytea_literal(result)}, {bytea_literal(log_lines)}, "
            f"{caller}, {text_literal(function_path)}, statement_timestamp())")


BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"


@asynccontextmanager
async def serializable(conn: Connection, *, begin_next: Callable[[], bool] | None = None) -> AsyncIterator[FinalWrites]:
    """``BEGIN ISOLATION LEVEL SERIALIZABLE`` unless ``conn`` is already in a begun one; on success the final
    writes and ``COMMIT`` in one message, else ``ROLLBACK``. A failure in the final message (a unique or
    serialization error) leaves no transaction open. When ``begin_next()`` says so at commit, the message
    also begins the next transaction and ``conn`` stays in it."""
    if not conn.is_in_transaction():
        await conn.execute(BEGIN)
    final = FinalWrites()
    try:
        yield final
        after = [BEGIN] if begin_next is not None and begin_next() else []
        await conn.execute(";\n".join([*final.statements, "COMMIT", *after]))
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            try:
                await conn.execute("ROLLBACK")
            except Exception:  # a broken connection: drop it, and report the error that mattered
                conn.terminate()
        raise
