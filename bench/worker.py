"""Entry point of a load-generator process: ``python -m bench.worker ROLE CONFIG_JSON``.

A worker talks to the orchestrator in JSON lines: it prints events (``ready``, ``result``, ``error``) and
reads commands from stdin. It dies by ``SIGALRM`` at its deadline whatever happens, so no run can leave a
load generator behind.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from .harness import raise_nofile


class Channel:
    """Events out on stdout, commands in on stdin."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        protocol = asyncio.StreamReaderProtocol(self._reader)
        await loop.connect_read_pipe(lambda: protocol, sys.stdin)

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    async def command(self) -> dict[str, Any]:
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            return {"command": "exit"}
        message: dict[str, Any] = json.loads(line)
        return message

    async def expect(self, name: str) -> dict[str, Any]:
        """The next command, which must be ``name`` (``exit`` ends the worker quietly)."""
        message = await self.command()
        if message["command"] == "exit":
            raise SystemExit(0)
        if message["command"] != name:
            raise RuntimeError(f"expected command {name!r}, got {message['command']!r}")
        return message


Role = Callable[[Channel, dict[str, Any]], Awaitable[None]]


def _roles() -> dict[str, Role]:
    from . import loads, watchers

    return {
        "mutator": loads.mutator,
        "rawtxn": loads.rawtxn,
        "subscriber": watchers.subscriber,
        "writer": watchers.writer,
        "pushserver": watchers.pushserver,
    }


async def _main(role: str, config: dict[str, Any]) -> None:
    channel = Channel()
    await channel.start()
    try:
        await _roles()[role](channel, config)
    except SystemExit:
        raise
    except BaseException as error:
        channel.emit("error", error=f"{type(error).__name__}: {error}", trace=traceback.format_exc()[-2000:])
        raise SystemExit(1) from None


def main() -> None:
    role, config = sys.argv[1], json.loads(sys.argv[2])
    raise_nofile()
    signal.alarm(max(1, int(config.get("deadline", 300))))
    asyncio.run(_main(role, config))


if __name__ == "__main__":
    main()
