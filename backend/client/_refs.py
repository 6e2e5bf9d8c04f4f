"""Typed function references: what ``functions/_generated/api.py`` hands the client instead of a path.

A reference's type parameters are the call the client accepts for that function (``P``: the arguments
dict, plus ``optimistic_update`` for mutations) and its result (``R``), so with ``api.bookings.book``
mypy checks the arguments dict key by key and knows the result type. A plain path string still works; it
is checked by nothing (``P`` and ``R`` then default to anything).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypedDict

from typing_extensions import ParamSpec, TypeVar

from ._errors import ClientError

__all__ = [
    "ActionRef",
    "FunctionRef",
    "MutationRef",
    "NoArgs",
    "QueryRef",
    "action_ref",
    "mutation_ref",
    "query_ref",
    "resolve_call",
]

P = ParamSpec("P", default=...)
R = TypeVar("R", default=Any)
_P = typing.ParamSpec("_P")  # the decorators below solve these from the stub: no defaults wanted
_R = typing.TypeVar("_R")


class NoArgs(TypedDict):
    """The arguments of a function that takes none."""


class FunctionRef(Generic[P, R]):
    """The name of one function, typed with its call signature and result."""

    kind: ClassVar[str] = ""

    def __init__(self, path: str, doc: str | None = None) -> None:
        self.path = path
        self.__doc__ = doc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class QueryRef(FunctionRef[P, R]):
    kind = "query"


class MutationRef(FunctionRef[P, R]):
    kind = "mutation"


class ActionRef(FunctionRef[P, R]):
    kind = "action"


def query_ref(path: str) -> Callable[[Callable[_P, _R]], QueryRef[_P, _R]]:
    """Turns a signature stub into a ``QueryRef`` (how generated code declares each query)."""

    def make(stub: Callable[_P, _R]) -> QueryRef[_P, _R]:
        return QueryRef(path, stub.__doc__)

    return make


def mutation_ref(path: str) -> Callable[[Callable[_P, _R]], MutationRef[_P, _R]]:

    def make(stub: Callable[_P, _R]) -> MutationRef[_P, _R]:
        return MutationRef(path, stub.__doc__)

    return make


def action_ref(path: str) -> Callable[[Callable[_P, _R]], ActionRef[_P, _R]]:

    def make(stub: Callable[_P, _R]) -> ActionRef[_P, _R]:
        return ActionRef(path, stub.__doc__)

    return make


def resolve_call(
    fn: FunctionRef[Any, Any] | str, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], *extras: str
) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """``(path, args dict, extra keyword values)`` from a client call, checked at run time too."""
    if isinstance(fn, FunctionRef):
        if fn.kind != kind:
            raise ClientError(f"{fn.path} is a {fn.kind}; call it with client.{fn.kind}()")
        path = fn.path
    elif isinstance(fn, str):
        path = fn
    else:
        raise TypeError(f"expected a function path or reference, got {type(fn).__name__}")
    if len(args) > 1 + len(extras):
        raise TypeError(f"{path}: expected the arguments dict and at most {len(extras)} more positional values")
    found = {name: kwargs.pop(name) for name in extras if name in kwargs}
    for name, value in zip(extras, args[1:], strict=False):  # ``mutation(path, args, update)`` still works
        if name in found:
            raise TypeError(f"{path}: {name} given twice")
        found[name] = value
    fn_args = args[0] if args else kwargs.pop("args", None)
    if kwargs:
        raise TypeError(f"{path}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    return path, fn_args, found
