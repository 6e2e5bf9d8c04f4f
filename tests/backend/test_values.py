"""The Convex value encoding: every special form round-trips, and bad input names its path."""

from __future__ import annotations

import datetime as dt
import math

import msgspec
import pytest

from backend.values import Int64, ValueError_, decode_value, encode_value, format_instant


def roundtrip(value: object) -> object:
    return decode_value(msgspec.json.decode(msgspec.json.encode(encode_value(value))))


def test_int64_encodes_as_8_byte_little_endian() -> None:
    assert encode_value(Int64(5)) == {"$integer": "BQAAAAAAAAA="}
    assert encode_value(Int64(1)) == {"$integer": "AQAAAAAAAAA="}
    assert roundtrip(Int64(-(2**63))) == -(2**63)
    assert isinstance(roundtrip(Int64(7)), Int64)


def test_python_int_is_a_float64_number() -> None:
    assert msgspec.json.encode(encode_value(5)) == b"5.0"
    assert roundtrip(5) == 5 and isinstance(roundtrip(5), int)


def test_special_floats() -> None:
    assert encode_value(float("nan")) == {"$float": "AAAAAAAA+H8="}
    assert math.isnan(roundtrip(float("nan")))  # type: ignore[arg-type]
    negative_zero = roundtrip(-0.0)
    assert negative_zero == 0.0 and math.copysign(1.0, negative_zero) < 0  # type: ignore[arg-type]
    assert roundtrip(float("inf")) == float("inf")
    assert roundtrip(1.5) == 1.5


def test_bytes_and_nesting() -> None:
    value = {"b": b"\x00\xffhi", "list": [1, "x", None, True], "nested": {"k": Int64(3)}}
    assert roundtrip(value) == value
    assert encode_value(b"hi") == {"$bytes": "aGk="}


def test_instants_leave_as_utc_iso() -> None:
    when = dt.datetime(2025, 3, 30, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert encode_value(when) == "2025-03-30T09:00:00Z"
    with pytest.raises(ValueError_):
        format_instant(dt.datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"$set": []}, "$"),
        ({"$integer": "AQ=="}, "$"),
        ({"$float": "AAAAAAAA8D8="}, "$"),  # 1.0 is not special: must be a plain number
        ({"$bytes": "not base64!"}, "$"),
        ({"a": {"$weird": 1}}, "$.a"),
    ],
)
def test_bad_encodings_name_their_path(bad: object, path: str) -> None:
    with pytest.raises(ValueError_) as error:
        decode_value(bad)
    assert error.value.path == path


def test_keys_must_be_printable_ascii_without_dollar() -> None:
    with pytest.raises(ValueError_):
        encode_value({"$bad": 1})
    with pytest.raises(ValueError_):
        encode_value({"ключ": 1})
    with pytest.raises(ValueError_):
        encode_value({"x" * 1025: 1})


def test_structs_holding_typed_strings_encode_plainly() -> None:
    from backend import Id

    class Row(msgspec.Struct, rename="camel"):
        venue_id: str
        when: dt.datetime

    row = Row(venue_id=Id["venues"]("v1"), when=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert encode_value(row) == {"venueId": "v1", "when": "2025-01-01T00:00:00Z"}
