"""The outgoing side of sync sockets: write at once, queue only behind a send that has to wait.

A send into a socket that takes data completes without suspending, so a frame is written by whoever produced
it: the hub writes a commit's Transitions to 10,000 sockets in its own iteration, as a raw broadcast does,
instead of waking 10,000 writer tasks. Only a send that does suspend (the socket's buffer is full) is handed
to a task, which finishes it and then writes the frames that queued behind it, in order.

Pings come from one timer per event loop rather than a timer per socket, so an idle session owns no task
and no timer.
"""

from __future__ import annotations

import asyncio
import collections
import time
import types
import weakref
from collections.abc import Coroutine, Generator
from typing import Any, Protocol

from .. import knobs

__all__ = ["NO_FRAMES", "Keepalive", "Outbox", "finish", "keepalive", "step"]


class Outbox(collections.deque[tuple[bytes, bool]]):
    """Frames waiting behind a send that could not complete at once, each with "is a Transition"."""

    __slots__ = ()

    def qsize(self) -> int:
        return len(self)


class _NoFrames(Outbox):
    """The outbox of a socket with nothing queued; shared, so it must never hold a frame."""

    __slots__ = ()

    def append(self, item: tuple[bytes, bool]) -> None:
        raise AssertionError("the shared empty outbox cannot hold frames")


#: Sockets start with this and get an ``Outbox`` of their own only while frames queue.
NO_FRAMES: Outbox = _NoFrames()


def step(send: Coroutine[Any, Any, None]) -> tuple[bool, Any]:
    """Run ``send`` until it first suspends: ``(True, None)`` when it finished, else ``(False, what it
    yielded)`` for ``finish``. Its exceptions propagate."""
    try:
        yielded = send.send(None)
    except StopIteration:
        return True, None
    return False, yielded


@types.coroutine
def finish(send: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    """Await the rest of a coroutine that ``step`` began, inside the awaiting task: what the coroutine yields
    goes to the task, and the task's answers (a future's completion, a cancellation) go back to it, exactly
    as ``await`` would have done had the task run it from the start."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            send.close()
            raise
        except BaseException as error:  # a cancellation of the task reaches the send where it waits
            try:
                yielded = send.throw(error)
            except StopIteration:
                return
        else:
            try:
                yielded = send.send(sent)
            except StopIteration:
                return


class Pingable(Protocol):
    def ping_if_idle(self, quiet_since: float) -> None:
        """Send a Ping if nothing was sent since ``quiet_since`` (a ``time.monotonic()`` value)."""


class Keepalive:
    """Every socket of one event loop. Each quarter of ``PING_INTERVAL_SECONDS`` the sockets that sent nothing
    for three quarters of it get a Ping, so none goes a whole interval without a frame. The timer runs only
    while there are sockets."""

    __slots__ = ("_timer", "sockets")

    def __init__(self) -> None:
        self.sockets: set[Pingable] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, socket: Pingable) -> None:
        self.sockets.add(socket)
        if self._timer is None:
            self._arm()

    def discard(self, socket: Pingable) -> None:
        self.sockets.discard(socket)

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(knobs.PING_INTERVAL_SECONDS / 4, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.sockets:
            return
        try:
            quiet_since = time.monotonic() - knobs.PING_INTERVAL_SECONDS * 3 / 4
            for socket in list(self.sockets):
                socket.ping_if_idle(quiet_since)
        finally:
            self._arm()


_keepalives: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Keepalive] = weakref.WeakKeyDictionary()


def keepalive() -> Keepalive:
    """The running loop's ``Keepalive``."""
    loop = asyncio.get_running_loop()
    found = _keepalives.get(loop)
    if found is None:
        found = _keepalives[loop] = Keepalive()
    return found
