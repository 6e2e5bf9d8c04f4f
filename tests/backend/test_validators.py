"""Validators are built from annotations; every failure names the field and the rule."""

from __future__ import annotations

import msgspec
import pytest

from backend import Id, Instant, LocalDate, LocalTime, TimeZone, mutation, query
from backend.ids import new_id, table_number
from backend.registry import canonical_path
from backend.validators import ArgsValidator, ValidationFailure
from backend.values import Int64


class Slot(msgspec.Struct, rename="camel"):
    local_date: LocalDate
    local_time: LocalTime


async def sample(ctx: object, venue_id: Id["venues"], tz: TimeZone, at: Instant, slots: list[Slot], limit: int = 10) -> None:  # noqa: F821
    return None


validator = ArgsValidator.from_signature(sample, "sample")
VENUE = new_id(table_number("venues"))
GOOD = {"venueId": VENUE, "tz": "Europe/London", "at": "2025-03-30T09:00:00Z",
        "slots": [{"localDate": "2025-03-30", "localTime": "09:00"}]}


def test_good_args_convert_to_python_names() -> None:
    kwargs = validator.validate(GOOD)
    assert kwargs["venue_id"] == VENUE
    assert kwargs["limit"] == 10
    assert kwargs["slots"][0].local_time == "09:00"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"venueId": new_id(table_number("members"))}, "$.args.venueId: not an id of table 'venues'"),
        ({"venueId": "garbage"}, "$.args.venueId: not a valid id: 'garbage'"),
        ({"tz": "Europe/Atlantis"}, "$.args.tz: not an IANA time zone"),
        ({"at": "2025-03-30T09:00:00"}, "$.args.at: naive datetime: an offset or Z is required"),
        ({"slots": [{"localDate": "2025-02-30", "localTime": "09:00"}]}, "$.args.slots[0].localDate: not a valid calendar date"),
        ({"slots": [{"localDate": "2025-03-30", "localTime": "25:00"}]}, "$.args.slots[0].localTime: not a valid time of day"),
        ({"limit": "10"}, "$.args.limit: expected `int`, got `str`"),
        ({"unknown": 1}, "$.args.unknown: unknown field"),
    ],
)
def test_each_rule_names_its_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationFailure) as error:
        validator.validate({**GOOD, **change})
    assert str(error.value) == message


def test_missing_annotations_fail_at_import_naming_the_function() -> None:
    async def no_return(ctx: object, x: int):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="no_return: missing return annotation"):
        query(no_return)

    async def no_arg_type(ctx: object, x) -> int:  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(TypeError, match="argument 'x' has no type annotation"):
        mutation(no_arg_type)


def test_decorators_keep_the_function_callable() -> None:
    async def double(ctx: object, x: int) -> int:
        return x * 2

    registered = query(double)
    assert registered.spec.kind == "query"
    assert registered.__name__ == "double"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("m", "m:default"), ("m:default", "m:default"), ("m.js:default", "m:default"), ("m.js", "m:default"),
     ("dir/file:fn", "dir/file:fn"), ("a:b:c", "a:b:c")],
)
def test_function_paths_are_canonicalised(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("async def bad(ctx, cb: object) -> None: ...", "bad: argument 'cb': type 'object' cannot be validated"),
        ("async def bad(ctx, cb: _Opaque) -> None: ...", "bad: argument 'cb': type '_Opaque' cannot be validated"),
        ("async def bad(ctx, xs: list[dict[str, _Opaque]]) -> None: ...",
         "bad: argument 'xs': type '_Opaque' cannot be validated"),
        ("async def bad(ctx, n: int = (lambda: 1)) -> None: ...", "bad: argument 'n': default <function"),
        ("async def bad(ctx) -> _Opaque: ...", "bad: return annotation: type '_Opaque' cannot be validated"),
    ],
)
def test_annotations_the_validators_cannot_handle_fail_at_registration(source: str, message: str) -> None:
    namespace: dict[str, object] = {"_Opaque": _Opaque}
    exec(source, namespace)
    with pytest.raises(TypeError) as refused:
        mutation(namespace["bad"])
    assert message in str(refused.value)


def test_supported_annotations_and_defaults_register() -> None:
    async def fine(ctx: object, slots: list[Slot], tz: TimeZone | None = None, tags: list[str] = [],  # noqa: B006
                   flag: bool = False) -> dict[str, list[Slot]]:
        return {}

    assert query(fine).spec.args.python_names == ("slots", "tz", "tags", "flag")


class Edgy(str):
    """A value type whose check fails the way ``zoneinfo`` does on a very long name."""

    @classmethod
    def _validate(cls, value: object) -> Edgy:
        raise OSError(36, "File name too long")


async def edgy(ctx: object, thing: Edgy) -> None:
    return None


def test_a_validator_that_hits_an_os_or_arithmetic_edge_reports_the_field() -> None:
    """A check that raises OSError or OverflowError is the caller's bad value, not a server or database fault."""
    with pytest.raises(ValidationFailure) as failure:
        ArgsValidator.from_signature(edgy, "t:edgy").validate({"thing": "x"})
    assert failure.value.path == "$.args.thing" and "Edgy" in failure.value.rule


def test_int64_arguments_take_64_bit_integers_only() -> None:
    async def count(ctx: object, n: Int64) -> None:
        return None

    validator = ArgsValidator.from_signature(count, "t:count")
    assert validator.validate({"n": Int64(5)}) == {"n": 5}
    for bad, rule in ((5.5, "64-bit integer"), ("5", "64-bit integer"), (True, "64-bit integer"),
                      (1 << 63, "range")):
        with pytest.raises(ValidationFailure) as failure:
            validator.validate({"n": bad})
        assert failure.value.path == "$.args.n" and rule in failure.value.rule
