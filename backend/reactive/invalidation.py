"""Which subscriptions does a write touch? Intervals bucketed by (table, index, equality prefix).

A write's key is looked up only in the buckets whose prefix it shares, so a write in business A never looks
at the subscriptions of business B: matching costs grow with the subscriptions that could match, not with
all subscriptions. Inside a bucket the remaining bounds are checked one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any

from ..db import Interval, WrittenKey, sort_key

__all__ = ["InvalidationIndex"]

Bucket = dict[Hashable, list[Interval]]


class InvalidationIndex:
    def __init__(self) -> None:
        # (table, index) -> prefix length -> prefix values -> subscriber key -> its intervals there
        self._tree: dict[tuple[str, str], dict[int, dict[tuple[Any, ...], Bucket]]] = defaultdict(dict)
        self._owned: dict[Hashable, list[tuple[tuple[str, str], int, tuple[Any, ...]]]] = {}
        self.checks = 0

    def __len__(self) -> int:
        return len(self._owned)

    def replace(self, owner: Hashable, intervals: Iterable[Interval]) -> None:
        """Replace ``owner``'s read set."""
        self.remove(owner)
        places: list[tuple[tuple[str, str], int, tuple[Any, ...]]] = []
        for interval in intervals:
            where = (interval.table, interval.index)
            length = len(interval.prefix)
            try:
                hash(interval.prefix)
            except TypeError:  # an unhashable prefix value (arrays): fall back to an unbounded bucket
                interval = Interval(interval.table, interval.index, ())
                length = 0
            bucket = self._tree[where].setdefault(length, {}).setdefault(interval.prefix, {})
            bucket.setdefault(owner, []).append(interval)
            places.append((where, length, interval.prefix))
        self._owned[owner] = places

    def remove(self, owner: Hashable) -> None:
        for where, length, prefix in self._owned.pop(owner, ()):
            by_length = self._tree.get(where)
            if by_length is None:
                continue
            buckets = by_length.get(length)
            if buckets is None:
                continue
            bucket = buckets.get(prefix)
            if bucket is None:
                continue
            bucket.pop(owner, None)
            if not bucket:
                del buckets[prefix]
                if not buckets:
                    del by_length[length]
                    if not by_length:
                        del self._tree[where]

    def match(self, written: Iterable[WrittenKey]) -> set[Hashable]:
        hit: set[Hashable] = set()
        for item in written:
            by_length = self._tree.get((item.table, item.index))
            if not by_length:
                continue
            probe = sort_key(item.key)
            for length, buckets in by_length.items():
                try:
                    bucket = buckets.get(item.key[:length])
                except TypeError:
                    continue
                if not bucket:
                    continue
                for owner, intervals in bucket.items():
                    if owner in hit:
                        continue
                    for interval in intervals:
                        self.checks += 1
                        try:
                            inside = interval.contains_sorted(probe)
                        except TypeError:  # values of different types in one field: re-run rather than guess
                            inside = True
                        if inside:
                            hit.add(owner)
                            break
        return hit
