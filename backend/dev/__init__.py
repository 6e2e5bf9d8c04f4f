"""``python -m backend dev``: save a file, and connected clients see the new results.

The dev server watches the functions package, the schema module and ``migrations/``. On each settled save
it reloads the code (``Reloader``): new modules, re-validated functions, additive schema changes and pending
migrations applied, crons re-registered, the registry swapped, and every live query re-run, so clients see
results of the new code without reconnecting. A bad save prints one error block and the last good version
keeps serving; the next good save recovers. A server that cannot start (bad code or schema at launch) waits
for a fix the same way.

Hook point: append a callable to ``backend.on_reload``; it is called with the ``Backend`` (awaited when it
returns an awaitable) once the dev server has started and after every good reload. A hook that raises is
reported and does not undo the reload.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._reload import App, ModuleSwap, Reloader, describe_failure, load_app, run_hooks, watched_paths
from ._watch import Watcher

if TYPE_CHECKING:
    from ..server import Backend, BackendConfig

__all__ = ["App", "ModuleSwap", "Reloader", "Watcher", "load_app", "start_backend", "watch"]

log = logging.getLogger("backend.dev")


async def start_backend(config: BackendConfig) -> Backend:
    """Start a backend; while its code or schema is bad, report it and retry after the next save."""
    from ..server import Backend

    watcher = Watcher(watched_paths(config))
    swap = ModuleSwap((config.functions_package, config.schema_module))
    while True:
        backend: Backend | None = None
        swap.begin()  # a previous failed attempt may have left half-imported modules behind
        swap.commit()
        try:
            backend = Backend(config)
            await backend.start()
            return backend
        except Exception as error:
            if backend is not None:
                await backend.stop()
            log.error("%s", describe_failure(error, "the backend cannot start; fix the file and save again."))
        async for _ in watcher.changes():
            break


async def watch(backend: Backend) -> None:
    """Reload on every settled save until cancelled (runs the ``on_reload`` hooks once first)."""
    watcher = Watcher(watched_paths(backend.config))
    reloader = Reloader(backend)
    await run_hooks(backend)
    async for changed in watcher.changes():
        await reloader.reload(changed)


