"""``Client``: the async client for code without an event loop, run on a loop in a background thread.

Every call is handed to that loop and waited for, so the async client stays single-threaded. Subscription
callbacks run on the background thread; they must be quick and thread-safe on the caller's side.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic

from typing_extensions import TypeVar

from ._client import AsyncClient
from ._errors import ClientError
from ._refs import ActionRef, MutationRef, P, QueryRef, R
from ._subscription import Subscription

__all__ = ["Client", "SyncSubscription"]

T = TypeVar("T", default=Any)


class SyncSubscription(Generic[T]):
    """A handle on a live query whose values go to a callback; ``unsubscribe()`` stops them."""

    def __init__(self, client: Client, subscription: Subscription[T]) -> None:
        self._client = client
        self._subscription = subscription

    @property
    def value(self) -> T | None:
        return self._subscription.value

    def unsubscribe(self) -> None:
        async def run() -> None:
            self._subscription.unsubscribe()

        if not self._client.closed:
            self._client._run(run())


class Client:
    """``with Client(url) as client: client.mutation("counters:increment", {"name": "a"})``.

    Connects in the constructor (raising ``ClientError`` if the server cannot be reached in ``timeout``
    seconds); ``close()`` stops the background thread.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sync-client-loop", daemon=True)
        self._thread.start()
        self.closed = False

        async def make() -> AsyncClient:
            client = AsyncClient(url, token=token)
            await client.connect(timeout=timeout)
            return client

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self.closed:
            coroutine.close()
            raise ClientError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def query(self, fn: QueryRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """The query's current value; ``fn`` is a path or a generated reference (see ``AsyncClient``)."""
        return self._run(self._client.query(fn, *args, **kwargs))

    def mutation(self, fn: MutationRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``mutation(fn, args, optimistic_update=None)``; see ``AsyncClient.mutation``."""
        return self._run(self._client.mutation(fn, *args, **kwargs))

    def action(self, fn: ActionRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(self._client.action(fn, *args, **kwargs))

    def set_auth(self, token: str) -> None:
        self._run(self._client.set_auth(token))

    def clear_auth(self) -> None:
        self._run(self._client.clear_auth())

    def subscribe(
        self,
        fn: QueryRef[..., R] | str,
        args: Any,
        callback: Callable[[R], None],
        on_error: Callable[[ClientError], None] | None = None,
    ) -> SyncSubscription[R]:
        """Call ``callback(value)`` (on the background thread) with every new value of the query.

        With a generated reference the values are typed; the arguments are checked at run time only
        (``query`` checks them statically).
        """

        async def run() -> Subscription[R]:
            subscription: Subscription[R] = self._client.subscribe(fn, args)
            subscription.on_update(callback, on_error)
            return subscription

        return SyncSubscription(self, self._run(run()))

    def close(self) -> None:
        if self.closed:
            return
        self._run(self._client.close())
        self.closed = True
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
