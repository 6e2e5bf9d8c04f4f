"""Drives the PyPI ``convex.ConvexClient`` (the Rust sync client) for tests/integration/test_official_python_sync.py.

    python official_python_driver.py <server-url>

It runs in its own process because the extension's blocking calls (``query``, ``mutation``, ...) hold the GIL
while they wait for the server: in the test process they would freeze the server that has to answer them.
Protocol: one JSON command per stdin line, one JSON event per stdout line (the same shape as tests/js/driver.mjs).
Subscriptions are read with the client's async iterator, so updates are reported while other commands wait.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import convex


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=repr) + "\n")
    sys.stdout.flush()


def describe(error: BaseException) -> dict[str, Any]:
    if isinstance(error, convex.ConvexError):
        return {"kind": "ConvexError", "message": str(error), "data": error.data}
    return {"kind": type(error).__name__, "message": str(error)}


class Driver:
    def __init__(self, url: str) -> None:
        self.client = convex.ConvexClient(url)
        self.subscriptions: dict[str, tuple[convex.QuerySubscription, asyncio.Task[None]]] = {}

    async def watch(self, name: str, subscription: convex.QuerySubscription) -> None:
        while True:
            try:
                value = await subscription.__anext__()
            except Exception as error:  # a failed query: the subscription carries on
                emit({"event": "queryError", "sub": name, **describe(error)})
            else:
                emit({"event": "update", "sub": name, "value": value})

    def run(self, command: dict[str, Any]) -> Any:
        op = command["op"]
        if op == "setAuth":
            self.client.set_auth(command["token"])
            return None
        if op in ("query", "mutation", "action"):
            return getattr(self.client, op)(command["path"], command.get("args"))
        if op == "subscribe":
            subscription = self.client.subscribe(command["path"], command.get("args"))
            task = asyncio.get_running_loop().create_task(self.watch(command["sub"], subscription))
            self.subscriptions[command["sub"]] = (subscription, task)
            return None
        if op == "unsubscribe":
            subscription, task = self.subscriptions.pop(command["sub"])
            task.cancel()
            subscription.unsubscribe()
            return None
        raise ValueError(f"unknown op {op!r}")


async def main(url: str) -> None:
    driver = Driver(url)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready"})
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "exit":
            break
        try:
            value = driver.run(command)
        except Exception as error:
            emit({"event": "result", "tag": command.get("tag"), "ok": False, **describe(error)})
        else:
            emit({"event": "result", "tag": command.get("tag"), "ok": True, "value": value})
        await asyncio.sleep(0)  # let subscription watchers report what arrived meanwhile
    for subscription, task in driver.subscriptions.values():
        task.cancel()
        subscription.unsubscribe()
    emit({"event": "bye"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
