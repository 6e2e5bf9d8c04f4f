"""The invalidation index and ``Interval.contains``: which written keys wake which read ranges.

Plain unit tests of the data structure, plus read sets recorded by real queries (the ``tb`` backend), so
the ranges that ``take``/``first`` record are checked the way the hub uses them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from backend.db import Interval, WrittenKey, decode_keys, encode_keys
from backend.db._keys import sort_key
from backend.reactive.invalidation import InvalidationIndex
from backend.testing import TestBackend


def span(*prefix: Any, lo: tuple[Any, ...] | None = None, lo_inclusive: bool = True,
         hi: tuple[Any, ...] | None = None, hi_inclusive: bool = True, table: str = "t", index: str = "i") -> Interval:
    """An interval as the reader records it: bounds are sort keys of (prefix + bound values)."""
    low = sort_key((*prefix, *lo)) if lo is not None else (sort_key(prefix) if prefix else None)
    high = sort_key((*prefix, *hi)) if hi is not None else (sort_key(prefix) if prefix else None)
    return Interval(table, index, tuple(prefix), low, lo_inclusive, high, hi_inclusive)


def key(*values: Any, table: str = "t", index: str = "i") -> WrittenKey:
    return WrittenKey(table, index, tuple(values))


# -- Interval.contains ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo_inclusive", "hi_inclusive", "expected"),
    [(True, True, [False, True, True, True, False]), (False, True, [False, False, True, True, False]),
     (True, False, [False, True, True, False, False]), (False, False, [False, False, True, False, False])],
)
def test_bounds_inclusive_and_exclusive(lo_inclusive: bool, hi_inclusive: bool, expected: list[bool]) -> None:
    interval = span("A", lo=(10,), lo_inclusive=lo_inclusive, hi=(20,), hi_inclusive=hi_inclusive)
    probes = [("A", 9, 1.0, "x"), ("A", 10, 1.0, "x"), ("A", 15, 1.0, "x"), ("A", 20, 1.0, "x"), ("A", 21, 0.0, "a")]
    assert [interval.contains(p) for p in probes] == expected


def test_a_bound_compares_as_a_prefix_of_the_full_key() -> None:
    """An inclusive bound on a field includes every key with that field value, whatever follows it."""
    interval = span("A", lo=(10,), hi=(10,))
    assert interval.contains(("A", 10, -1e300, ""))
    assert interval.contains(("A", 10, 1e300, "zzz"))
    assert not interval.contains(("A", 10.5, 0.0, ""))
    exclusive = span("A", lo=(10,), lo_inclusive=False)
    assert not exclusive.contains(("A", 10, 1e300, "zzz"))
    assert exclusive.contains(("A", 10.000001, 0.0, ""))


def test_null_sorts_after_every_value() -> None:
    assert sort_key((None,)) > sort_key(("zzz",)) > sort_key(("",))
    assert sort_key((None,)) > sort_key((10**18,))
    at_least = span(lo=(5,))
    assert at_least.contains((None, 1.0, "id")) and at_least.contains((5, 1.0, "id"))
    below = span(hi=(5,), hi_inclusive=False)
    assert not below.contains((None, 1.0, "id")) and below.contains((-3, 1.0, "id"))
    up_to_null = span(hi=(None,))
    assert up_to_null.contains((None, 1.0, "id")) and up_to_null.contains((7, 1.0, "id"))
    only_null = span(None)
    assert only_null.contains((None, 1.0, "id")) and not only_null.contains(("x", 1.0, "id"))


def test_unbounded_interval_contains_everything() -> None:
    whole = Interval("t", "i", ())
    assert whole.contains(("anything", 1.0, "id")) and whole.contains((None,))


# -- InvalidationIndex --------------------------------------------------------------------------------------


def test_a_write_only_looks_at_buckets_with_its_prefix() -> None:
    index = InvalidationIndex()
    index.replace("sub-a", [span("A")])
    for n in range(100):
        index.replace(f"sub-b{n}", [span("B", lo=(n,), hi=(n,))])
    index.checks = 0
    assert index.match([key("A", 1, 1.0, "id")]) == {"sub-a"}
    assert index.checks == 1, "a write in A examined intervals of B"
    index.checks = 0
    assert index.match([key("B", 42, 1.0, "id")]) == {"sub-b42"}
    assert index.checks == 100
    assert index.match([key("C", 1, 1.0, "id")]) == set()
    assert index.match([key("A", 1, 1.0, "id", table="other")]) == set()
    assert index.match([key("A", 1, 1.0, "id", index="by_other")]) == set()


def test_prefixes_of_different_lengths_on_one_index() -> None:
    index = InvalidationIndex()
    index.replace("whole", [Interval("t", "i", ())])
    index.replace("biz", [span("A")])
    index.replace("biz-room", [span("A", "room1")])
    index.replace("biz-room-window", [span("A", "room1", lo=(100,), hi=(200,), hi_inclusive=False)])
    assert index.match([key("A", "room1", 150)]) == {"whole", "biz", "biz-room", "biz-room-window"}
    assert index.match([key("A", "room1", 200)]) == {"whole", "biz", "biz-room"}
    assert index.match([key("A", "room2", 150)]) == {"whole", "biz"}
    assert index.match([key("B", "room1", 150)]) == {"whole"}


def test_match_returns_each_owner_once_for_many_keys() -> None:
    index = InvalidationIndex()
    index.replace("s", [span("A"), span("B")])
    index.replace("t", [span("C")])
    assert index.match([key("A", 1), key("B", 2), key("A", 3)]) == {"s"}
    assert index.match([key("B", 1), key("C", 1)]) == {"s", "t"}


def test_replace_and_remove_leave_no_stale_intervals() -> None:
    index = InvalidationIndex()
    index.replace("s", [span("A"), span("A", lo=(1,), hi=(2,))])
    index.replace("s", [span("B")])
    assert index.match([key("A", 1)]) == set()
    assert index.match([key("B", 1)]) == {"s"}
    assert len(index) == 1
    index.remove("s")
    index.remove("s")  # twice is harmless
    index.remove("never-added")
    assert len(index) == 0 and not index._tree
    assert index.match([key("B", 1)]) == set()


def test_unhashable_prefix_values_fall_back_to_the_whole_index() -> None:
    index = InvalidationIndex()
    index.replace("s", [Interval("t", "i", (["a", "list"],))])
    assert index.match([key("anything", 1)]) == {"s"}
    index.remove("s")
    assert not index._tree


def test_keys_of_incomparable_types_wake_rather_than_fail() -> None:
    """A JSON field may hold a number in one row and a string in another: when in doubt, re-run."""
    index = InvalidationIndex()
    index.replace("s", [span("A", lo=(10,), hi=(20,))])
    assert index.match([key("A", "fifteen", 1.0, "id")]) == {"s"}


def test_timestamps_survive_the_commit_summary() -> None:
    at = dt.datetime(2025, 3, 30, 1, 30, 0, 123456, tzinfo=dt.UTC)
    written = [key("A", at, 1.5, "id"), key("A", dt.date(2025, 3, 30), None, b"\x00\xff")]
    decoded = decode_keys(encode_keys(written))
    assert decoded == written
    window = span("A", lo=(at,), hi=(at + dt.timedelta(hours=1),), hi_inclusive=False)
    assert window.contains(decoded[0].key)
    assert not window.contains(("A", at - dt.timedelta(microseconds=1), 0.0, "id"))


# -- read sets recorded by real queries ------------------------------------------------------------------


async def read_set(tb: TestBackend, path: str, args: dict[str, Any]) -> list[Interval]:
    outcome = await tb.runner.query(path, args, None)
    assert outcome.error is None and outcome.read_set is not None
    return [i for i in outcome.read_set.intervals if i.table == "counters"]


async def by_name_key(tb: TestBackend, name: str) -> tuple[Any, ...]:
    rows = await tb.sql("SELECT _creation_time, _id FROM counters WHERE name = $1", name)
    return (name, rows[0][0], rows[0][1])


async def test_take_and_first_record_only_the_rows_they_reached(tb: TestBackend) -> None:
    p = f"ranges-{uuid.uuid4().hex[:10]}/"
    for suffix in ("b", "d", "f"):
        await tb.mutation("counters:increment", {"name": p + suffix})
    keys = {s: await by_name_key(tb, p + s) for s in ("b", "d", "f")}
    between = (p + "c", 0.0, "id")  # a new row between b and d
    cases: list[tuple[str, dict[str, Any], list[tuple[Any, ...]], list[tuple[Any, ...]]]] = [
        # (path, args, keys that must wake it, keys that must not)
        ("counters:first_in", {"lo": p, "hi": p + "~"}, [keys["b"], (p + "a", 9e99, "z"), (p, 0.0, "")],
         [between, keys["d"], keys["f"], (p + "~", 0.0, "")]),
        ("counters:range", {"lo": p, "hi": p + "~", "limit": 2}, [keys["b"], between, keys["d"]],
         [(p + "e", 0.0, "id"), keys["f"], (p[:-1], 0.0, "id")]),
        ("counters:range", {"lo": p, "hi": p + "~", "limit": 1, "descending": True},
         [keys["f"], (p + "g", 0.0, "id"), (p + "}", 0.0, "id")], [between, keys["b"], keys["d"], (p + "~", 0.0, "")]),
        ("counters:range", {"lo": p, "hi": p + "~", "limit": 10},  # not truncated: the whole [lo, hi)
         [between, keys["f"], (p + "}", 0.0, "id"), (p, 0.0, "")], [(p + "~", 0.0, ""), (p[:-1], 0.0, "id")]),
        ("counters:get", {"name": p + "d"}, [keys["d"], (p + "d", 9e99, "zzz")], [keys["b"], (p + "dd", 0.0, "")]),
        ("counters:get", {"name": p + "absent"}, [(p + "absent", 1.0, "new")], [keys["b"]]),
    ]
    for path, args, wake, sleep in cases:
        index = InvalidationIndex()
        index.replace("q", await read_set(tb, path, args))
        for probe in wake:
            assert index.match([WrittenKey("counters", "by_name", probe)]) == {"q"}, (path, args, probe)
        for probe in sleep:
            assert index.match([WrittenKey("counters", "by_name", probe)]) == set(), (path, args, probe)
