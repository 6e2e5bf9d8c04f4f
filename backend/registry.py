"""``@query``, ``@mutation``, ``@action`` and their ``internal_`` twins, and loading ``functions/``.

>>> @mutation(tenant="business_id", roles=("owner", "admin"))
... async def rename(ctx: MutationCtx, business_id: Id["businesses"], name: str) -> None:
...     await ctx.db.patch(business_id, {"name": name})

Arguments and the return value are validated from the annotations; a function missing either fails at
import with a message naming it. A function's path is its module path under ``functions/`` plus ``:`` and
its name (``classes/templates:create``); a package's ``__init__`` answers for the folder's path.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from .errors import FunctionNotFound, InvalidRequest
from .validators import ArgsValidator, ReturnValidator, return_validator

__all__ = [
    "FunctionSpec",
    "RegisteredFunction",
    "Registry",
    "action",
    "canonical_path",
    "fixtures_enabled",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "load_functions",
    "mutation",
    "query",
]

P = ParamSpec("P")
R = TypeVar("R")
Kind = Literal["query", "mutation", "action"]


@dataclass
class FunctionSpec:
    kind: Kind
    fn: Callable[..., Awaitable[Any]]
    internal: bool
    args: ArgsValidator
    returns: ReturnValidator
    tenant_arg: str | None = None
    roles: tuple[str, ...] | None = None
    members_only: bool = True
    cross_tenant: bool = False
    path: str = ""
    name: str = field(default="")


class RegisteredFunction(Generic[P, R]):
    """A registered function; calling it calls the Python function unchanged (handy in tests)."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.__doc__ = spec.fn.__doc__
        self.__name__ = spec.fn.__name__
        self.__module__ = spec.fn.__module__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        result: Awaitable[R] = self.spec.fn(*args, **kwargs)
        return result


Decorator = Callable[[Callable[P, Awaitable[R]]], RegisteredFunction[P, R]]


def _make(
    kind: Kind,
    internal: bool,
    fn: Callable[..., Awaitable[Any]],
    tenant: str | None,
    roles: tuple[str, ...] | None,
    members_only: bool,
    cross_tenant: bool,
) -> RegisteredFunction[Any, Any]:
    qualname = f"{fn.__module__}.{fn.__qualname__}"
    args = ArgsValidator.from_signature(fn, qualname)
    returns = return_validator(fn, qualname)
    if tenant is not None and tenant not in args.python_names:
        raise TypeError(f"{qualname}: tenant={tenant!r} is not one of its arguments")
    if cross_tenant and not internal:
        raise TypeError(f"{qualname}: cross_tenant=True is only allowed on internal functions")
    spec = FunctionSpec(kind, fn, internal, args, returns, tenant, roles, members_only, cross_tenant)
    return RegisteredFunction(spec)


def _decorator(kind: Kind, internal: bool) -> Any:
    @overload
    def decorate(fn: Callable[P, Awaitable[R]]) -> RegisteredFunction[P, R]: ...

    @overload
    def decorate(
        *,
        tenant: str | None = None,
        roles: tuple[str, ...] | None = None,
        members_only: bool = True,
        cross_tenant: bool = False,
    ) -> Decorator[P, R]: ...

    def decorate(
        fn: Callable[..., Awaitable[Any]] | None = None,
        *,
        tenant: str | None = None,
        roles: tuple[str, ...] | None = None,
        members_only: bool = True,
        cross_tenant: bool = False,
    ) -> Any:
        if fn is not None:
            return _make(kind, internal, fn, tenant, roles, members_only, cross_tenant)
        return lambda f: _make(kind, internal, f, tenant, roles, members_only, cross_tenant)

    return decorate


# Typed entry points: ``@query`` or ``@query(tenant="business_id", roles=("owner",))``.
query = _decorator("query", False)
mutation = _decorator("mutation", False)
action = _decorator("action", False)
internal_query = _decorator("query", True)
internal_mutation = _decorator("mutation", True)
internal_action = _decorator("action", True)


def canonical_path(path: str) -> str:
    """``m``, ``m:default``, ``m.js:default`` and ``m.js`` all name ``m:default`` (docs/protocol.md §3)."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise InvalidRequest("function path must be a non-empty string")
    module, sep, name = path.rpartition(":")
    if not sep:
        module, name = name, "default"
    module = module.strip("/")
    if module.endswith(".js"):
        module = module[:-3]
    if not module or not name.isidentifier():
        raise InvalidRequest(f"{path!r} is not a function path like 'module/path:name'")
    return f"{module}:{name}"


class Registry:
    """Every function found in the functions package, by canonical path."""

    def __init__(self) -> None:
        self.functions: dict[str, FunctionSpec] = {}

    def add(self, path: str, spec: FunctionSpec) -> None:
        if path in self.functions:
            raise TypeError(f"two functions registered at {path!r}")
        spec.path = path
        self.functions[path] = spec

    def resolve(self, path: str, *, kind: Kind | None = None, allow_internal: bool = False) -> FunctionSpec:
        canonical = canonical_path(path)
        spec = self.functions.get(canonical)
        if spec is None or (spec.internal and not allow_internal):
            raise FunctionNotFound(f"Could not find public function for '{canonical}'")
        if kind is not None and spec.kind != kind:
            raise FunctionNotFound(f"'{canonical}' is a {spec.kind}, not a {kind}")
        return spec

    def __iter__(self) -> Iterator[FunctionSpec]:
        return iter(self.functions.values())


def _module_path(module_name: str, package: str) -> str:
    return module_name[len(package) + 1 :].replace(".", "/")


#: The folder of test and benchmark fixtures: mounted at the top level only when fixtures are wanted.
FIXTURES = "_fixtures"


def _public_modules(package: str, include_testing: bool) -> list[str]:
    root = importlib.import_module(package)
    modules = [root.__name__]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        parts = info.name[len(package) + 1 :].split(".")
        if any(part.startswith("_") for part in parts):
            continue
        if not include_testing and any(part.startswith("testing_") for part in parts):
            continue
        modules.append(info.name)
    return modules


def fixtures_enabled(include_testing: bool | None = None) -> bool:
    """Whether fixtures load: ``include_testing`` when given, else ``BACKEND_TEST_FUNCTIONS=1``."""
    if include_testing is None:
        return os.environ.get("BACKEND_TEST_FUNCTIONS") == "1"
    return include_testing


def load_functions(package: str = "functions", *, include_testing: bool | None = None) -> Registry:
    """Import every public module of ``package`` and register the functions defined in it.

    Fixtures for tests and benchmarks — modules named ``testing_*`` and the ``_fixtures`` folder, whose
    modules answer at the top level (``_fixtures/counters.py`` → ``counters:get``) — are loaded only when
    ``include_testing`` is true (default: the ``BACKEND_TEST_FUNCTIONS=1`` environment variable), never in a
    production server.
    """
    include_testing = fixtures_enabled(include_testing)
    registry = Registry()
    mounts = [(name, package) for name in _public_modules(package, include_testing)]
    fixtures = f"{package}.{FIXTURES}"
    if include_testing and importlib.util.find_spec(fixtures) is not None:
        mounts += [(name, fixtures) for name in _public_modules(fixtures, True) if name != fixtures]
    for name, base in mounts:
        module = importlib.import_module(name)
        path = _module_path(name, base) if name != package else ""
        for attr, value in vars(module).items():
            if isinstance(value, RegisteredFunction) and value.spec.fn.__module__ == name:
                if not path:
                    raise TypeError(f"{name}.{attr}: functions must live in a module under {package}/")
                registry.add(f"{path}:{attr}", value.spec)
    return registry
