"""Swapping new code into a running backend, or keeping the last good version when the new code is bad.

The functions package and the schema module are imported afresh (new module objects; the old ones stay
referenced by the old registry, so calls already running finish on the code they started with). The new
schema's additive changes and pending migrations are applied in one transaction, crons are re-registered
against the new registry, then the registry and schema are swapped in one step (no ``await`` between the
assignments) and the hub re-runs every live query. A failure anywhere before the swap restores the old
modules and leaves everything serving as it was.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..registry import Registry, load_functions
from ..schema import Schema
from ..schema._migrate import apply_schema

if TYPE_CHECKING:
    from ..server import Backend, BackendConfig

__all__ = ["App", "ModuleSwap", "Reloader", "describe_failure", "watched_paths"]

log = logging.getLogger("backend.dev")


@dataclass
class App:
    """One loaded version of the application's code."""

    schema: Schema
    registry: Registry
    crons: Any  # Crons, or None when the functions package declares none


class ModuleSwap:
    """Takes the application's modules out of ``sys.modules`` so they import afresh; can put them back."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._saved: dict[str, ModuleType] = {}

    def _ours(self, name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in self.names)

    def begin(self) -> None:
        self._saved = {name: mod for name, mod in sys.modules.items() if self._ours(name)}
        for name in self._saved:
            del sys.modules[name]
        importlib.invalidate_caches()

    def rollback(self) -> None:
        for name in [n for n in sys.modules if self._ours(n)]:
            del sys.modules[name]
        sys.modules.update(self._saved)
        self._saved = {}

    def commit(self) -> None:
        self._saved = {}


def load_app(config: BackendConfig) -> App:
    """Import the schema and functions (whatever is in ``sys.modules`` for them is used as is)."""
    from ..server import load_schema

    schema = load_schema(config.schema_module)
    registry = load_functions(config.functions_package, include_testing=config.include_testing_functions or None)
    crons_module = sys.modules.get(f"{config.functions_package}.crons")
    return App(schema, registry, getattr(crons_module, "crons", None) if crons_module else None)


def functions_dirs(config: BackendConfig) -> list[Path]:
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(config.functions_package)
        if spec is not None and spec.submodule_search_locations:
            return [Path(p) for p in spec.submodule_search_locations]
    return []


def watched_paths(config: BackendConfig) -> list[Path]:
    """The functions folder, the schema module's file and the migrations folder."""
    found = functions_dirs(config)
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(config.schema_module)
        if spec is not None and spec.origin:
            found.append(Path(spec.origin))
    if config.migrations_dir is not None:
        found.append(Path(config.migrations_dir))
    return found


def describe_failure(error: BaseException, header: str) -> str:
    """One block: what failed, where in the application's files, and why (no engine frames)."""
    lines = [header]
    if isinstance(error, SyntaxError):
        where = os.path.relpath(error.filename) if error.filename else "?"
        lines.append(f"  {where}, line {error.lineno}")
        if error.text:
            text = error.text.rstrip("\n")
            lines.append(f"    {text.strip()}")
            if error.offset:
                lines.append("    " + " " * max(0, error.offset - 1 - (len(text) - len(text.lstrip()))) + "^")
        lines.append(f"  {type(error).__name__}: {error.msg}")
        return "\n".join(lines)
    root = os.getcwd() + os.sep
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(root)
              and os.sep + "backend" + os.sep not in f.filename[len(root) - 1:]]
    for frame in frames[-5:]:
        lines.append(f"  {os.path.relpath(frame.filename)}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line}")
    code = getattr(error, "code", None)
    kind = code if isinstance(code, str) else type(error).__name__
    lines.append(f"  {kind}: {getattr(error, 'message', None) or error}")
    return "\n".join(lines)


def forget_bytecode(paths: set[str]) -> None:
    """Drop cached bytecode of changed files: a save within the same second at the same size would
    otherwise look unchanged to the import system."""
    for path in paths:
        if path.endswith(".py"):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(path))


class Reloader:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        config = backend.config
        self.swap = ModuleSwap((config.functions_package, config.schema_module))
        self.reloads = 0
        self._functions_dirs = [str(p) + os.sep for p in functions_dirs(config)]
        self._in_sync = True  # the database matches the schema of the code now serving

    def _schema_untouched(self, changed: set[str] | None) -> bool:
        """Only files in the functions folder changed since the last good reload: the schema and the
        migrations are as the database already has them, so checking them again can be skipped."""
        return (self._in_sync and bool(changed)
                and all(any(p.startswith(d) for d in self._functions_dirs) for p in changed or ()))

    async def reload(self, changed: set[str] | None = None) -> bool:
        """Load the code on disk and swap it in; False (old code still serving) when it is bad."""
        started = time.perf_counter()
        backend = self.backend
        forget_bytecode(changed or set())
        self.swap.begin()
        try:
            app = load_app(backend.config)
            assert backend.pool is not None
            ran: list[str] = []
            async with backend.pool.acquire() as conn:
                if not self._schema_untouched(changed):
                    ran = await apply_schema(conn, app.schema, backend.config.migrations_dir)
                if backend.scheduler is not None and app.crons is not None:
                    from ..scheduler._crons import sync_crons

                    await sync_crons(conn, app.crons, app.registry, backend.config.clock.now(), prune=True)
        except Exception as error:
            self.swap.rollback()
            self._in_sync = False
            log.error("%s", describe_failure(error, f"reload failed{_which(changed)}; still serving the last "
                                                   "good version. Fix the file and save again."))
            return False
        self.swap.commit()
        self._in_sync = True
        backend.schema = backend.runner.schema = app.schema
        backend.registry = backend.runner.registry = app.registry
        if backend.hub is not None:
            backend.hub.reload()
        if backend.scheduler is not None:
            backend.scheduler.wake()
        self.reloads += 1
        live = len(backend.hub.instances) if backend.hub is not None else 0
        log.info("reloaded%s in %.0f ms: %d functions, %d schema changes, %d live queries re-run",
                 _which(changed), (time.perf_counter() - started) * 1000, len(app.registry.functions), len(ran), live)
        await run_hooks(backend)
        return True


async def run_hooks(backend: Backend) -> None:
    """Call every ``backend.on_reload`` callback; one that fails is reported and the others still run."""
    for hook in list(backend.on_reload):
        try:
            result = hook(backend)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            log.error("%s", describe_failure(error, f"on_reload hook {getattr(hook, '__qualname__', hook)} failed"))


def _which(changed: set[str] | None) -> str:
    if not changed:
        return ""
    names = sorted(os.path.relpath(p) for p in changed)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" ({shown})"
