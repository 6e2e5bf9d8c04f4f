"""Registered functions arranged the way ``api.<folder>.<module>.<name>`` reaches them."""

from __future__ import annotations

from typing import Union

from ..registry import FunctionSpec, Registry

__all__ = ["Tree", "function_tree"]

Tree = dict[str, Union["Tree", FunctionSpec]]


def function_tree(registry: Registry, *, internal: bool) -> Tree:
    """``classes/templates:create`` → ``{"classes": {"templates": {"create": spec}}}``; sorted by name.

    A package's ``__init__`` answers for its folder, so ``functions/classes/__init__.py`` is ``api.classes``.
    """
    root: Tree = {}
    for spec in sorted(registry, key=lambda s: s.path):
        if spec.internal != internal:
            continue
        module, _, name = spec.path.partition(":")
        node = root
        for part in module.split("/"):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TypeError(f"{spec.path}: the folder {part!r} has the name of a function beside it")
            node = child
        if name in node:
            raise TypeError(f"{spec.path}: the function {name!r} has the name of a module beside it")
        node[name] = spec
    return root
