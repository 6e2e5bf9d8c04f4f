"""Notices saved files by polling their size and modification time (no native watcher to install).

A burst of saves (an editor writing a file twice, a formatter running after save, ``git checkout``) is one
change: the watcher waits until nothing has changed for ``knobs.DEV_DEBOUNCE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from .. import knobs

__all__ = ["Watcher"]

Snapshot = dict[str, tuple[int, int]]
#: Folders never watched: caches, and generated code a save handler may write itself.
_SKIPPED = {"__pycache__", "_generated", "node_modules"}


class Watcher:
    """Watches ``*.py`` files under ``roots`` (folders or single files)."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self._seen = self.snapshot()

    def snapshot(self) -> Snapshot:
        found: Snapshot = {}
        for root in self.roots:
            if root.is_file():
                _stat_into(found, str(root))
            elif root.is_dir():
                for folder, dirs, files in os.walk(root):
                    dirs[:] = [d for d in dirs if d not in _SKIPPED and not d.startswith(".")]
                    for name in files:
                        if name.endswith(".py"):
                            _stat_into(found, os.path.join(folder, name))
        return found

    def poll(self) -> set[str]:
        """Paths added, removed or changed since the previous poll."""
        now = self.snapshot()
        changed = {p for p in now.keys() | self._seen.keys() if now.get(p) != self._seen.get(p)}
        self._seen = now
        return changed

    async def changes(self) -> AsyncIterator[set[str]]:
        """Yield each settled batch of changed paths."""
        while True:
            await asyncio.sleep(knobs.DEV_POLL_SECONDS)
            batch = self.poll()
            if not batch:
                continue
            while True:  # settle: a save is often several writes
                await asyncio.sleep(knobs.DEV_DEBOUNCE_SECONDS)
                more = self.poll()
                if not more:
                    break
                batch |= more
            yield batch


def _stat_into(found: Snapshot, path: str) -> None:
    try:
        info = os.stat(path)
    except OSError:  # removed between listing and stat
        return
    found[path] = (info.st_mtime_ns, info.st_size)
