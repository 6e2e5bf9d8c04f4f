"""A live query as the application holds it: an async iterator of values and a list of callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic

from typing_extensions import TypeVar

from ._errors import ClientError
from ._state import Result

__all__ = ["Subscription"]

log = logging.getLogger("backend.client")

T = TypeVar("T", default=Any)
ValueCallback = Callable[[Any], None]
ErrorCallback = Callable[[ClientError], None]


class Subscription(Generic[T]):
    """``async for value in sub`` yields each new value of the query in order, raising ``ClientError`` for a
    failed result (iterate again to go on); ``on_update`` calls back on each one. A consumer that falls more
    than ``BUFFER`` values behind loses the oldest, so a stalled reader cannot grow memory without bound.
    Iteration ends after ``unsubscribe()`` or ``client.close()``; it raises if the client failed for good.
    """

    BUFFER = 1024

    def __init__(self, path: str, args: Any, token: str, release: Callable[[Subscription[Any]], None]) -> None:
        self.path = path
        self.args = args
        self.token = token
        self._release = release
        self._pending: deque[Result] = deque(maxlen=self.BUFFER)
        self._changed = asyncio.Event()
        self._callbacks: list[tuple[ValueCallback, ErrorCallback | None]] = []
        self._latest: Result | None = None
        self._active = True
        self._end_error: ClientError | None = None

    @property
    def active(self) -> bool:
        return self._active

    @property
    def value(self) -> T | None:
        """The latest value (optimistic updates included), or None before the first or after a failure."""
        latest = self._latest
        if latest is None or latest.error is not None:
            return None
        value: T = latest.value
        return value

    def on_update(self, callback: Callable[[T], None], on_error: ErrorCallback | None = None) -> Callable[[], None]:
        """Call ``callback(value)`` on every new value (at once with the current one, if any); returns a
        function that removes the callbacks. Callbacks run on the client's event loop and must not block."""
        entry = (callback, on_error)
        self._callbacks.append(entry)
        if self._latest is not None:
            self._call(entry, self._latest)

        def remove() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return remove

    def unsubscribe(self) -> None:
        if self._active:
            self._release(self)
            self._finish(None)

    async def first(self) -> T:
        """The next value (the current one if it has not been read yet)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ClientError("the subscription ended before a value arrived") from None

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._pending:
                result = self._pending.popleft()
                if result.error is not None:
                    raise result.error
                value: T = result.value
                return value
            if not self._active:
                if self._end_error is not None:
                    raise self._end_error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unsubscribe()

    # -- called by the client ----------------------------------------------------------------------------

    def deliver(self, result: Result) -> None:
        if not self._active:
            return
        self._latest = result
        self._pending.append(result)
        self._changed.set()
        for entry in list(self._callbacks):
            self._call(entry, result)

    def finish(self, error: ClientError | None) -> None:
        """End without telling the client (it is the one ending us)."""
        self._finish(error)

    def _finish(self, error: ClientError | None) -> None:
        self._active = False
        self._end_error = error
        self._pending.clear()
        self._callbacks.clear()
        self._changed.set()

    def _call(self, entry: tuple[ValueCallback, ErrorCallback | None], result: Result) -> None:
        callback, on_error = entry
        try:
            if result.error is None:
                callback(result.value)
            elif on_error is not None:
                on_error(result.error)
        except Exception:
            log.exception("subscription callback for %s failed", self.path)
