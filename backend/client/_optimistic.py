"""Optimistic updates: local guesses at a mutation's effect, shown until the server's results include it.

The view a subscriber sees is the server's results with every pending update replayed on top, in
requestId order. It is rebuilt whenever the server sends new results, so a guess survives results that
do not reflect its mutation yet; an update leaves only when its mutation is finished (a Transition at or
past its commit ts, docs/protocol.md §6.1) or has failed. That way a value never flips back to the
pre-mutation state before the server's value replaces it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ._state import Result, encode_args, query_token

__all__ = ["OptimisticLayer", "OptimisticStore", "OptimisticUpdate"]

log = logging.getLogger("backend.client")


class OptimisticStore:
    """The local query results an optimistic update reads and edits.

    ``get_query`` returns None for a query with no value (not loaded yet, or failed). Values are copies, so
    editing one in place cannot corrupt the server's results.
    """

    def __init__(self, view: dict[str, Result]) -> None:
        self._view = view
        self.changes: dict[str, Result] = {}

    def get_query(self, path: str, args: Any = None) -> Any:
        token = query_token(path, encode_args(args))
        result = self.changes.get(token) or self._view.get(token)
        if result is None or result.error is not None:
            return None
        return copy.deepcopy(result.value)

    def set_query(self, path: str, args: Any, value: Any) -> None:
        token = query_token(path, encode_args(args))
        self.changes[token] = Result(value=copy.deepcopy(value))


OptimisticUpdate = Callable[[OptimisticStore, Any], None]


class OptimisticLayer:
    """Pending updates by requestId, replayed over the server's results to build the view."""

    def __init__(self) -> None:
        self._updates: list[tuple[int, OptimisticUpdate, Any]] = []

    def __len__(self) -> int:
        return len(self._updates)

    def add(self, request_id: int, update: OptimisticUpdate, args: Any, view: dict[str, Result]) -> dict[str, Result]:
        """Apply a new update to the current view and keep it; an update that raises is not kept."""
        store = OptimisticStore(view)
        update(store, copy.deepcopy(args))
        self._updates.append((request_id, update, args))
        return {**view, **store.changes}

    def drop(self, request_ids: Iterable[int]) -> bool:
        gone = set(request_ids)
        before = len(self._updates)
        self._updates = [entry for entry in self._updates if entry[0] not in gone]
        return len(self._updates) != before

    def view(self, server: dict[str, Result]) -> dict[str, Result]:
        """The server's results with every pending update replayed on top."""
        view = dict(server)
        for request_id, update, args in self._updates:
            store = OptimisticStore(view)
            try:
                update(store, copy.deepcopy(args))
            except Exception:
                log.exception("optimistic update of request %d failed on replay; skipped", request_id)
                continue
            view.update(store.changes)
        return view

    def clear(self) -> None:
        self._updates.clear()
