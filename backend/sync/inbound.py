"""Checks on what a client sends, made at the socket edge before anything shared (the hub) sees it.

Argument values are walked without recursion, so a value nested thousands of levels deep is refused with
an error naming the limit instead of raising ``RecursionError`` somewhere deeper in the engine.
"""

from __future__ import annotations

from typing import Any

from .. import knobs
from ..errors import InvalidArgs

__all__ = ["check_depth", "too_deep"]


def too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests arrays and objects more than ``limit`` levels deep (a scalar is depth 0)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def check_depth(value: Any, where: str = "$.args") -> None:
    """Raise ``InvalidArgs`` naming the limit when ``value`` is nested deeper than ``MAX_VALUE_DEPTH``."""
    limit = knobs.MAX_VALUE_DEPTH
    if too_deep(value, limit):
        raise InvalidArgs(f"{where}: nested deeper than {limit} levels (BACKEND_MAX_VALUE_DEPTH)")
