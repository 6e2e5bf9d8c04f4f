"""What may be scheduled, checked when it is scheduled rather than when it runs.

A typo in a function path or an argument that the target would refuse is reported to the code that
scheduled it (FunctionNotFound, InvalidArgs, LimitExceeded), not discovered hours later as a failed job.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .. import knobs
from ..errors import FunctionNotFound, InvalidArgs, LimitExceeded
from ..registry import FunctionSpec, RegisteredFunction, Registry
from ..validators import ValidationFailure
from ..values import ValueError_, decode_value, encode_value, value_size

__all__ = ["encode_args", "function_path", "parse_when", "resolve_target"]


def function_path(fn: str | RegisteredFunction[Any, Any]) -> str:
    """The path of ``fn``: a path string as given, or the path a registered function was loaded at."""
    if isinstance(fn, RegisteredFunction):
        if not fn.spec.path:
            raise FunctionNotFound(
                f"{fn.__module__}.{fn.__name__} is not a registered function (is it in a private module?)"
            )
        return fn.spec.path
    if not isinstance(fn, str):
        raise FunctionNotFound(f"expected a function path or a registered function, got {type(fn).__name__}")
    return fn


def resolve_target(registry: Registry, fn: str | RegisteredFunction[Any, Any]) -> FunctionSpec:
    """The mutation or action ``fn`` names (public or internal); queries cannot be scheduled."""
    spec = registry.resolve(function_path(fn), allow_internal=True)
    if spec.kind == "query":
        raise FunctionNotFound(f"'{spec.path}' is a query; only mutations and actions can be scheduled")
    return spec


def encode_args(spec: FunctionSpec, args: dict[str, Any] | None) -> Any:
    """Encode ``args`` as stored, after checking the size limit and the target's argument validator."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidArgs(f"arguments for {spec.path} must be an object, got {type(args).__name__}")
    try:
        encoded = encode_value(args, "$.args")
    except ValueError_ as error:
        raise InvalidArgs(f"arguments for {spec.path}: {error}") from None
    size = value_size(encoded)
    if size > knobs.MAX_SCHEDULED_ARGS_BYTES:
        raise LimitExceeded(
            f"arguments for scheduled {spec.path} are {size} bytes; the limit is "
            f"{knobs.MAX_SCHEDULED_ARGS_BYTES} bytes (MAX_SCHEDULED_ARGS_BYTES)"
        )
    try:
        spec.args.validate(decode_value(encoded, "$.args"))
    except (ValidationFailure, ValueError_) as error:
        raise InvalidArgs(f"arguments for {spec.path}: {error}") from None
    return encoded


def parse_when(when: dt.datetime | str) -> dt.datetime:
    """An aware datetime or an ISO 8601 instant with an offset (``Z`` allowed), as UTC."""
    if isinstance(when, str):
        text = when
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidArgs(f"run_at: {text[:60]!r} is not an ISO 8601 instant") from None
    if not isinstance(when, dt.datetime):
        raise InvalidArgs(f"run_at: expected a datetime or an ISO 8601 string, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgs("run_at: naive datetime; give an offset or Z")
    return when.astimezone(dt.UTC)


def after(now: dt.datetime, seconds: float) -> dt.datetime:
    """``now + seconds`` for ``run_after``; the delay must be a finite number of seconds, zero or more."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgs(f"run_after: delay must be a number of seconds, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgs(f"run_after: delay must be a finite number of seconds >= 0, got {seconds!r}")
    try:
        return now + dt.timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidArgs(f"run_after: a delay of {seconds!r} seconds is too far in the future") from None
