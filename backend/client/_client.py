"""``AsyncClient``: queries, subscriptions, mutations and actions over one self-healing sync socket.

Every state change happens on the event loop, in the order frames arrive, so the parts need no locks:
``RemoteQuerySet`` (what the server holds), ``RequestManager`` (what is in flight), ``OptimisticLayer``
(local guesses) and the subscriptions that receive the merged view. A dropped socket is reopened with the
same sessionId; the first frames on it rebuild everything, and the server's (sessionId, requestId)
deduplication makes replayed mutations run exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from ._connection import Connection, Frame, sync_url
from ._errors import ClientError
from ._optimistic import OptimisticLayer, OptimisticUpdate
from ._refs import ActionRef, MutationRef, P, QueryRef, R, resolve_call
from ._requests import Request, RequestManager
from ._state import (
    RemoteQuerySet,
    Result,
    StartVersionMismatch,
    StateVersion,
    decode_ts,
    encode_args,
    encode_ts,
)
from ._subscription import Subscription

__all__ = ["AsyncClient"]

log = logging.getLogger("backend.client")


@dataclass
class _Waiter:
    """Resolved by the first Transition at or past ``target`` (querySet, identity) on the current socket."""

    future: asyncio.Future[None]
    target: tuple[int, int] | None  # None: not sent yet; the next socket's first frames will carry it


class AsyncClient:
    """A client for a server speaking the Convex sync protocol. Values are Python values (``backend.values``)."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url
        self.session_id = str(uuid.uuid4())
        self._token = token
        self._remote = RemoteQuerySet()
        self._requests = RequestManager()
        self._optimistic = OptimisticLayer()
        self._view: dict[str, Result] = {}
        self._shown: dict[str, Result] = {}
        self._subs: dict[str, list[Subscription[Any]]] = {}
        self._waiters: list[_Waiter] = []
        self._chunks: tuple[str, int, list[str]] | None = None
        self._ready = False
        self._failure: ClientError | None = None
        self._conn = Connection(sync_url(url), self._on_open, self._on_message, self._on_close)

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the socket is open and the server has confirmed our query set and auth."""
        return self._ready

    async def connect(self, *, timeout: float = 10.0) -> None:
        """Open the socket and wait until the server has confirmed the query set and the token, if any."""
        self._check_usable()
        if self._ready:
            return
        self._conn.start()
        waiter = self._add_waiter((1, self._remote.identity_version) if self._conn.is_open else None)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            await self.close()
            raise ClientError(f"could not connect to {self.url} within {timeout:g}s") from None
        except ClientError:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop for good: pending requests fail, subscriptions end."""
        if self._failure is None:
            self._shutdown(ClientError("the client is closed"), end_subscriptions_with=None)
        await self._conn.stop()

    # -- functions ---------------------------------------------------------------------------------------

    async def query(self, fn: QueryRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """The query's current value: subscribe, take the first value, unsubscribe.

        ``fn`` is a path (``"counters:get"``) or a generated reference (``api.counters.get``), which lets
        mypy check the arguments dict and the result type.
        """
        path, fn_args, _ = resolve_call(fn, "query", args, kwargs)
        subscription: Subscription[R] = self._subscribe(path, fn_args)
        try:
            return await subscription.first()
        finally:
            subscription.unsubscribe()

    def subscribe(self, fn: QueryRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> Subscription[R]:
        """A live query; see ``Subscription``. Must be called on the client's event loop."""
        path, fn_args, _ = resolve_call(fn, "query", args, kwargs)
        return self._subscribe(path, fn_args)

    def _subscribe(self, path: str, args: dict[str, Any] | None) -> Subscription[Any]:
        self._check_usable()
        self._conn.start()
        query, new = self._remote.add(path, args)
        subscription: Subscription[Any] = Subscription(path, args, query.token, self._release)
        self._subs.setdefault(query.token, []).append(subscription)
        if new and self._conn.is_open:
            self._conn.send(self._remote.modify([query.add_modification()]))
        current = self._shown.get(query.token)
        if current is not None:
            subscription.deliver(current)
        else:
            self._publish(recompute=False)  # an optimistic value may already exist for it
        return subscription

    async def mutation(self, fn: MutationRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a mutation: ``mutation(fn, args, optimistic_update=None)``.

        ``optimistic_update(store, args)`` edits the local view at once (see ``OptimisticStore``) and is
        replayed over every server result until the mutation's effects arrive.
        """
        path, fn_args, extras = resolve_call(fn, "mutation", args, kwargs, "optimistic_update")
        optimistic_update: OptimisticUpdate | None = extras.get("optimistic_update")
        self._check_usable()
        request = self._requests.create("Mutation", path, encode_args(fn_args))
        if optimistic_update is not None:
            try:
                self._view = self._optimistic.add(request.request_id, optimistic_update, fn_args or {}, self._view)
            except BaseException:
                self._requests.discard(request.request_id)
                raise
            self._publish(recompute=False)
        self._conn.start()
        self._send_request(request)
        result: R = await request.future
        return result

    async def action(self, fn: ActionRef[P, R] | str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        path, fn_args, _ = resolve_call(fn, "action", args, kwargs)
        self._check_usable()
        request = self._requests.create("Action", path, encode_args(fn_args))
        self._conn.start()
        self._send_request(request)
        result: R = await request.future
        return result

    # -- auth --------------------------------------------------------------------------------------------

    async def set_auth(self, token: str) -> None:
        """Act as the token's user from now on; returns once the server accepted it (ClientError if not)."""
        self._check_usable()
        self._token = token
        await self._change_auth(token)

    async def clear_auth(self) -> None:
        self._check_usable()
        self._token = None
        await self._change_auth(None)

    async def _change_auth(self, token: str | None) -> None:
        if not self._conn.started:
            return  # the first socket carries it
        target = None
        if self._conn.is_open:
            self._conn.send(self._remote.authenticate(token))
            target = (0, self._remote.identity_version)
        await self._add_waiter(target)

    # -- internals ---------------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ClientError(self._failure.message, self._failure.data)

    def _add_waiter(self, target: tuple[int, int] | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(future, target))
        return future

    def _send_request(self, request: Request) -> None:
        if self._conn.is_open:
            self._conn.send(request.message, functools.partial(self._requests.mark_sent, request.request_id))

    def _release(self, subscription: Subscription[Any]) -> None:
        subs = self._subs.get(subscription.token, [])
        if subscription in subs:
            subs.remove(subscription)
            if not subs:
                del self._subs[subscription.token]
        gone = self._remote.release(subscription.token)
        if gone is not None:
            self._shown.pop(gone.token, None)
            if self._conn.is_open:
                self._conn.send(self._remote.modify([{"type": "Remove", "queryId": gone.query_id}]))

    def _publish(self, *, recompute: bool) -> None:
        """Rebuild the view if asked, then hand every subscriber whose query's result changed the new one."""
        if recompute:
            self._view = self._optimistic.view(self._remote.server_view())
        for token, subs in list(self._subs.items()):
            result = self._view.get(token)
            if result is None or result.same_as(self._shown.get(token)):
                continue
            self._shown[token] = result
            for subscription in list(subs):
                subscription.deliver(result)

    def _shutdown(self, error: ClientError, *, end_subscriptions_with: ClientError | None) -> None:
        self._failure = error
        self._ready = False
        self._requests.fail_all(error)
        self._optimistic.clear()
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
                waiter.future.exception()
        self._waiters.clear()
        for subs in list(self._subs.values()):
            for subscription in subs:
                subscription.finish(end_subscriptions_with)
        self._subs.clear()
        self._conn.stop_soon()

    # -- connection callbacks ----------------------------------------------------------------------------

    def _on_open(self, connection_count: int, last_close_reason: str | None) -> list[Frame]:
        connect: dict[str, Any] = {"type": "Connect", "sessionId": self.session_id,
                                   "connectionCount": connection_count, "lastCloseReason": last_close_reason,
                                   "clientTs": int(time.time() * 1000)}
        if self._remote.max_observed_ts is not None:
            connect["maxObservedTimestamp"] = encode_ts(self._remote.max_observed_ts)
        frames: list[Frame] = [(connect, None)]
        frames += [(message, None) for message in self._remote.restart(self._token)]
        for request in self._requests.restart():
            frames.append((request.message, functools.partial(self._requests.mark_sent, request.request_id)))
        target = (1, self._remote.identity_version)
        for waiter in self._waiters:
            waiter.target = target
        self._chunks = None
        return frames

    def _on_close(self, reason: str) -> None:
        self._ready = False
        if self._failure is None:
            log.info("sync socket to %s closed (%s); reconnecting", self.url, reason)
        self._requests.on_disconnect()

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Transition":
            self._on_transition(message)
        elif kind == "MutationResponse" or kind == "ActionResponse":
            if kind == "MutationResponse" and message.get("success"):
                self._remote.observe_ts(decode_ts(message.get("ts")))
            finished = self._requests.on_response(message, self._remote.version.ts)
            if finished and self._optimistic.drop(finished):
                self._publish(recompute=True)
        elif kind == "TransitionChunk":
            self._on_chunk(message)
        elif kind == "AuthError":
            self._on_auth_error(message)
        elif kind == "FatalError":
            error = ClientError(f"fatal error from the server: {message.get('error')}")
            log.error("%s; the client stops", error.message)
            self._shutdown(error, end_subscriptions_with=error)
        # Ping: its arrival alone keeps the socket alive.

    def _on_transition(self, message: dict[str, Any]) -> None:
        try:
            self._remote.apply_transition(message)
        except StartVersionMismatch as mismatch:
            log.warning("%s; reconnecting", mismatch)
            self._conn.reconnect("StartVersionMismatch")
            return
        end = self._remote.version
        self._optimistic.drop(self._requests.remove_completed(end.ts))
        self._publish(recompute=True)
        if not self._ready and end.query_set >= 1 and end.identity >= self._remote.identity_version:
            self._ready = True
            self._conn.backoff.reset()
        self._resolve_waiters(end)

    def _resolve_waiters(self, end: StateVersion) -> None:
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            target = waiter.target
            if target is not None and end.query_set >= target[0] and end.identity >= target[1]:
                waiter.future.set_result(None)
            else:
                keep.append(waiter)
        self._waiters = keep

    def _on_chunk(self, message: dict[str, Any]) -> None:
        part, total, chunk_id = message.get("partNumber"), message.get("totalParts"), message.get("transitionId")
        if part == 0:
            self._chunks = (str(chunk_id), int(total or 0), [])
        chunks = self._chunks
        if chunks is None or chunks[0] != str(chunk_id) or chunks[1] != total or len(chunks[2]) != part:
            self._chunks = None
            self._conn.reconnect("ProtocolError: transition chunks out of order")
            return
        chunks[2].append(str(message.get("chunk", "")))
        if len(chunks[2]) == chunks[1]:
            self._chunks = None
            self._on_transition(msgspec.json.decode("".join(chunks[2])))

    def _on_auth_error(self, message: dict[str, Any]) -> None:
        if int(message.get("baseVersion", 0)) + 1 < self._remote.identity_version:
            return  # about a token we have since replaced
        error = ClientError(f"authentication failed: {message.get('error')}")
        log.warning("%s; continuing without auth", error.message)
        self._token = None
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
                waiter.future.exception()
        self._waiters.clear()
        self._conn.reconnect("AuthError")
