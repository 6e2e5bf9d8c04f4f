"""Booking window (B), cancellation (P), promotion (W), credit lot (F) and pricing (PR) rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest

from functions._rules.policy import (
    BookingWindow,
    Offset,
    Price,
    Quote,
    SlotRestriction,
    TimeSlotRule,
    apply_discount,
    booking_window,
    can_auto_promote,
    classify_cancellation,
    consumption_order,
    earliest_opening,
    evaluate_price,
    is_no_show,
    lot_covers_class,
    lot_expires_at,
    offset_before,
    plan_consumption,
    promotion_cutoff,
    validate_slot_rules,
    window_status,
)
from functions._rules.recurrence import parse_instant

LONDON = "Europe/London"
NY = "America/New_York"
SYDNEY = "Australia/Sydney"
MS = timedelta(milliseconds=1)
MINUTE = timedelta(minutes=1)


def z(value: str) -> datetime:
    return parse_instant(value)


# --- B: booking windows ------------------------------------------------------------------------------------

CLASS_START = z("2025-03-30T08:00:00Z")  # 09:00 BST, the morning after the clocks went forward
CLASS_END = CLASS_START + timedelta(hours=1)


def test_day_offsets_use_the_local_calendar_and_hour_offsets_absolute_time() -> None:
    assert offset_before(CLASS_START, LONDON, Offset(7, "days")) == z("2025-03-23T09:00:00Z")
    assert offset_before(CLASS_START, LONDON, Offset(12, "hours")) == z("2025-03-29T20:00:00Z")
    assert offset_before(CLASS_START, LONDON, Offset(720)) == z("2025-03-29T20:00:00Z")
    window = booking_window(
        CLASS_START, CLASS_END, LONDON, opens_before=Offset(7, "days"), closes_before=Offset(12, "hours")
    )
    assert window == BookingWindow(opens_at=z("2025-03-23T09:00:00Z"), closes_at=z("2025-03-29T20:00:00Z"))


def test_day_offset_landing_in_a_gap_moves_forward() -> None:
    # 01:30 on 31 Mar (00:30Z); one local day earlier, 01:30 does not exist -> 02:30 BST = 01:30Z.
    assert offset_before(z("2025-03-31T00:30:00Z"), LONDON, Offset(1, "days")) == z("2025-03-30T01:30:00Z")


def test_sydney_day_offset_across_october_dst_start() -> None:
    start = z("2025-10-10T22:00:00Z")  # Sat 11 Oct 09:00 AEDT
    assert offset_before(start, SYDNEY, Offset(7, "days")) == z(
        "2025-10-03T23:00:00Z"
    )  # Sat 4 Oct 09:00 AEST


def test_window_is_half_open() -> None:
    window = booking_window(
        CLASS_START, CLASS_END, LONDON, opens_before=Offset(7, "days"), closes_before=Offset(12, "hours")
    )
    assert window.opens_at is not None
    assert window_status(window.opens_at - MS, window) == "not_yet_open"
    assert window_status(window.opens_at, window) == "open"
    assert window_status(window.closes_at - MS, window) == "open"
    assert window_status(window.closes_at, window) == "closed"


def test_negative_close_offset_is_capped_at_class_end() -> None:
    start, end = z("2025-06-02T17:00:00Z"), z("2025-06-02T18:00:00Z")
    window = booking_window(start, end, LONDON, opens_before=None, closes_before=Offset(-15))
    assert window.closes_at == z("2025-06-02T17:15:00Z")
    assert window_status(start + 10 * MINUTE, window) == "open"
    assert window_status(start + 70 * MINUTE, window) == "closed"
    assert window_status(z("2020-01-01T00:00:00Z"), window) == "open"  # no opening restriction
    capped = booking_window(start, end, LONDON, opens_before=None, closes_before=Offset(-2, "hours"))
    assert capped.closes_at == end


def test_tiered_access_uses_the_earliest_opening() -> None:
    start, end = z("2025-06-20T17:00:00Z"), z("2025-06-20T18:00:00Z")
    close = Offset(0)
    vip = booking_window(start, end, LONDON, opens_before=Offset(14, "days"), closes_before=close)
    standard = booking_window(start, end, LONDON, opens_before=Offset(7, "days"), closes_before=close)
    now = start - timedelta(days=10)
    opens_at = earliest_opening([vip.opens_at, standard.opens_at])
    assert opens_at == z("2025-06-06T17:00:00Z")
    assert window_status(now, BookingWindow(opens_at, standard.closes_at)) == "open"
    assert window_status(now, standard) == "not_yet_open"
    assert standard.opens_at == z("2025-06-13T17:00:00Z")
    assert earliest_opening([standard.opens_at, None]) is None
    with pytest.raises(ValueError, match="no entitlement"):
        earliest_opening([])


# --- P: cancellation and no-show ---------------------------------------------------------------------------


def test_late_cancel_window_is_absolute_across_spring_forward() -> None:
    # Wall-clock arithmetic would put the cutoff at 21:00Z, one real hour late.
    assert classify_cancellation(z("2025-03-29T19:59:59Z"), CLASS_START, 720) == "early"
    assert classify_cancellation(z("2025-03-29T20:00:00Z"), CLASS_START, 720) == "late"
    assert classify_cancellation(z("2025-03-29T20:30:00Z"), CLASS_START, 720) == "late"
    assert classify_cancellation(CLASS_START + 5 * MINUTE, CLASS_START, 720) == "late"
    assert classify_cancellation(CLASS_START - MS, CLASS_START, 0) == "early"
    with pytest.raises(ValueError, match="naive"):
        classify_cancellation(datetime(2025, 3, 29, 20), CLASS_START, 720)
    with pytest.raises(ValueError, match="negative"):
        classify_cancellation(CLASS_START, CLASS_START, -1)


def test_no_show_after_grace_unless_checked_in_or_cancelled() -> None:
    assert not is_no_show(CLASS_START + 14 * MINUTE, CLASS_START, 15, checked_in=False, cancelled=False)
    assert is_no_show(CLASS_START + 15 * MINUTE, CLASS_START, 15, checked_in=False, cancelled=False)
    assert not is_no_show(CLASS_START + 60 * MINUTE, CLASS_START, 15, checked_in=True, cancelled=False)
    assert not is_no_show(CLASS_START + 60 * MINUTE, CLASS_START, 15, checked_in=False, cancelled=True)


# --- W: auto-promotion cutoff ------------------------------------------------------------------------------


def test_default_promotion_cutoff_is_late_window_plus_two_hours() -> None:
    start = z("2025-11-03T14:00:00Z")
    cutoff = promotion_cutoff(start, 720)
    assert cutoff == z("2025-11-03T00:00:00Z")  # 14 h before
    assert can_auto_promote(cutoff - MINUTE, start, 720)
    assert not can_auto_promote(cutoff, start, 720)
    assert not can_auto_promote(cutoff + MINUTE, start, 720)
    freed = start - timedelta(hours=15)
    assert can_auto_promote(freed, start, 720)
    # The promoted member still cancels free for at least 2 h (until 12 h before).
    assert classify_cancellation(freed + timedelta(hours=2, minutes=59), start, 720) == "early"
    assert not can_auto_promote(start - timedelta(hours=13), start, 720)


def test_promotion_cutoff_is_absolute_across_fall_back() -> None:
    start = z("2025-11-02T14:00:00Z")  # 09:00 EST, the morning the clocks went back in New York
    assert promotion_cutoff(start, 720) == z("2025-11-02T00:00:00Z")


def test_explicit_cutoff_is_honoured_but_never_inside_the_penalty_window() -> None:
    start = z("2025-11-03T14:00:00Z")
    assert promotion_cutoff(start, 720, auto_promote_cutoff_minutes=1000) == start - timedelta(minutes=1000)
    assert promotion_cutoff(start, 720, auto_promote_cutoff_minutes=60) == start - timedelta(hours=12)
    assert promotion_cutoff(start, 720, grace_minutes=30) == start - timedelta(hours=12, minutes=30)
    with pytest.raises(ValueError):
        promotion_cutoff(start, -5)


# --- F: credit lots ----------------------------------------------------------------------------------------


def test_lot_expiry_date_means_end_of_local_day() -> None:
    expires = lot_expires_at(date(2025, 6, 30), LONDON)
    assert expires == z("2025-06-30T23:00:00Z")
    assert lot_covers_class(expires, z("2025-06-30T18:00:00Z"))  # 30 Jun 19:00 BST
    assert lot_covers_class(expires, z("2025-06-30T22:59:00Z"))  # 23:59 BST
    assert not lot_covers_class(expires, z("2025-06-30T23:00:00Z"))  # 1 Jul 00:00 BST
    assert not lot_covers_class(expires, z("2025-07-01T08:00:00Z"))  # 1 Jul 09:00 BST
    assert lot_covers_class(None, z("2099-01-01T00:00:00Z"))


def test_lot_expiry_in_other_zones() -> None:
    assert lot_expires_at(date(2025, 10, 4), SYDNEY) == z("2025-10-04T14:00:00Z")
    assert lot_expires_at(date(2025, 10, 5), SYDNEY) == z("2025-10-05T13:00:00Z")  # now AEDT
    assert lot_expires_at(date(2025, 9, 6), "America/Santiago") == z("2025-09-07T04:00:00Z")  # midnight gap
    assert lot_expires_at(date(2025, 12, 31), NY) == z("2026-01-01T05:00:00Z")


@dataclass(frozen=True)
class Lot:
    id: str
    remaining: int
    expires_at: datetime | None
    granted_at: datetime


JAN = z("2025-01-01T00:00:00Z")
FEB = z("2025-02-01T00:00:00Z")


def test_consumption_order_soonest_expiry_then_oldest_grant() -> None:
    lots = [
        Lot("a", 1, z("2025-07-01T00:00:00Z"), JAN),
        Lot("never", 1, None, z("2024-12-01T00:00:00Z")),
        Lot("b", 1, z("2025-06-15T00:00:00Z"), FEB),
        Lot("d", 1, z("2025-06-15T00:00:00Z"), JAN),
    ]
    assert [lot.id for lot in consumption_order(lots)] == ["d", "b", "a", "never"]


def test_plan_consumption_skips_lots_expiring_before_class_and_is_all_or_nothing() -> None:
    class_start = z("2025-07-01T08:00:00Z")
    expired_by_class = Lot("june", 5, lot_expires_at(date(2025, 6, 30), LONDON), JAN)
    small = Lot("small", 1, lot_expires_at(date(2025, 7, 31), LONDON), JAN)
    big = Lot("big", 3, None, FEB)
    assert plan_consumption([expired_by_class, small], class_start, 2) is None
    plan = plan_consumption([big, expired_by_class, small], class_start, 2)
    assert plan is not None
    assert [(lot.id, n) for lot, n in plan] == [("small", 1), ("big", 1)]
    one = plan_consumption([big, small, Lot("empty", 0, None, JAN)], class_start, 1)
    assert one is not None
    assert [(lot.id, n) for lot, n in one] == [("small", 1)]
    with pytest.raises(ValueError, match="at least 1"):
        plan_consumption([big], class_start, 0)


# --- PR: pricing -------------------------------------------------------------------------------------------

DEFAULT = Price(member_cents=1500, non_member_cents=2000, rule_id="default")
CLASS_TYPE = Price(member_cents=1800, non_member_cents=2400, rule_id="ct-spin")
PEAK = TimeSlotRule(
    id="mon-peak",
    weekdays=frozenset({0}),
    start=time(18),
    end=time(20),
    price=Price(member_cents=2200, non_member_cents=2800, credits=2),
    tags=frozenset({"peak"}),
)


def quote(
    starts_at: str,
    *,
    tz: str = LONDON,
    currency: str = "GBP",
    member: bool = True,
    slot_rules: Sequence[TimeSlotRule] = (),
    class_type_price: Price | None = None,
    instance_override: Price | None = None,
    restriction: SlotRestriction | None = None,
) -> Quote:
    return evaluate_price(
        starts_at=z(starts_at),
        tz=tz,
        currency=currency,
        default=DEFAULT,
        member=member,
        slot_rules=slot_rules,
        class_type_price=class_type_price,
        instance_override=instance_override,
        restriction=restriction,
    )


def quote_at(starts_at: str, **kwargs: Any) -> tuple[str, str | None, int, int]:
    q = quote(starts_at, **kwargs)
    return q.source, q.rule_id, q.amount_cents, q.credits


def test_peak_rule_matches_local_monday_evening_in_winter_and_summer() -> None:
    assert quote_at("2025-01-13T18:30:00Z", slot_rules=[PEAK]) == ("time_slot", "mon-peak", 2200, 2)
    assert quote_at("2025-07-14T17:30:00Z", slot_rules=[PEAK]) == ("time_slot", "mon-peak", 2200, 2)
    # 17:30Z on a January Monday is 17:30 local: not peak.
    assert quote_at("2025-01-13T17:30:00Z", slot_rules=[PEAK]) == ("default", "default", 1500, 1)
    assert quote_at("2025-01-13T20:00:00Z", slot_rules=[PEAK])[0] == "default"  # end is exclusive
    assert quote_at("2025-01-14T18:30:00Z", slot_rules=[PEAK])[0] == "default"  # Tuesday


def test_resolution_order_override_then_slot_then_class_type_then_default() -> None:
    override = Price(member_cents=500, non_member_cents=900, rule_id="inst-42")
    at = "2025-01-13T18:30:00Z"
    assert quote_at(at, slot_rules=[PEAK], class_type_price=CLASS_TYPE, instance_override=override) == (
        "instance_override",
        "inst-42",
        500,
        1,
    )
    assert quote_at(at, slot_rules=[PEAK], class_type_price=CLASS_TYPE)[:2] == ("time_slot", "mon-peak")
    assert quote_at("2025-01-13T09:00:00Z", slot_rules=[PEAK], class_type_price=CLASS_TYPE) == (
        "class_type",
        "ct-spin",
        1800,
        1,
    )
    assert quote_at(at, member=False) == ("default", "default", 2000, 1)


def test_slot_priority_and_ambiguous_ties() -> None:
    evening = TimeSlotRule("evening", frozenset(range(7)), time(17), time(0), Price(1000, 1000), priority=1)
    assert quote_at("2025-01-13T18:30:00Z", slot_rules=[PEAK, evening])[:2] == ("time_slot", "evening")
    assert quote_at("2025-01-13T23:59:00Z", slot_rules=[PEAK, evening])[:2] == ("time_slot", "evening")
    tied = TimeSlotRule("tied", frozenset({0}), time(18), time(19), Price(1, 1))
    with pytest.raises(ValueError, match="ambiguous pricing"):
        quote_at("2025-01-13T18:30:00Z", slot_rules=[PEAK, tied])
    with pytest.raises(ValueError, match="overlap with equal priority"):
        validate_slot_rules([PEAK, tied])
    adjacent = TimeSlotRule("late", frozenset({0}), time(20), time(22), Price(1, 1))
    validate_slot_rules([PEAK, adjacent, evening])
    with pytest.raises(ValueError, match="duplicate"):
        validate_slot_rules([PEAK, PEAK])


def test_slot_restrictions_block_or_surcharge() -> None:
    three_per_week = SlotRestriction(blocked_tags=frozenset({"peak"}))
    unlimited = SlotRestriction(surcharge_tags=frozenset({"peak"}), surcharge_cents=300)
    blocked = quote("2025-01-13T18:30:00Z", slot_rules=[PEAK], restriction=three_per_week)
    assert (blocked.blocked_reason, blocked.slot_tags) == ("not_valid_for_time_slot", frozenset({"peak"}))
    # An override decides the price, but the class is still at peak time.
    still_peak = quote(
        "2025-01-13T18:30:00Z", slot_rules=[PEAK], instance_override=Price(100, 100), restriction=unlimited
    )
    assert (still_peak.source, still_peak.amount_cents, still_peak.surcharge_cents) == (
        "instance_override",
        100,
        300,
    )
    assert still_peak.blocked_reason is None
    off_peak = quote("2025-01-13T10:00:00Z", slot_rules=[PEAK], restriction=three_per_week)
    assert (off_peak.blocked_reason, off_peak.surcharge_cents, off_peak.slot_tags) == (None, 0, frozenset())


def test_stored_quote_is_not_repriced_by_later_rule_changes() -> None:
    before = quote("2025-01-13T18:30:00Z", slot_rules=[PEAK])
    dearer = TimeSlotRule("mon-peak", PEAK.weekdays, PEAK.start, PEAK.end, Price(3000, 3500, credits=2))
    after = quote("2025-01-13T18:30:00Z", slot_rules=[dearer])
    assert (before.amount_cents, after.amount_cents) == (2200, 3000)


def test_sydney_peak_uses_local_weekday() -> None:
    # Monday 18:30 in Sydney (AEDT) is Monday 07:30Z; read in UTC it would be a 07:30 class.
    q = quote("2025-01-13T07:30:00Z", tz=SYDNEY, currency="AUD", slot_rules=[PEAK])
    assert (q.source, q.amount_cents, q.currency) == ("time_slot", 2200, "AUD")
    assert quote("2025-01-13T07:30:00Z", tz="UTC", slot_rules=[PEAK]).source == "default"


def test_pricing_input_validation() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        quote("2025-01-13T18:30:00Z", currency="gbp")
    with pytest.raises(ValueError, match="non-negative integer"):
        Price(member_cents=-1, non_member_cents=0)
    with pytest.raises(ValueError, match="non-negative integer"):
        Price(member_cents=9.99, non_member_cents=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        Price(member_cents=0, non_member_cents=0, credits=0)
    with pytest.raises(ValueError, match="end must be after start"):
        TimeSlotRule("x", frozenset({0}), time(22), time(2), Price(1, 1))
    with pytest.raises(ValueError, match="weekdays"):
        TimeSlotRule("x", frozenset({7}), time(8), time(9), Price(1, 1))


def test_discount_respects_floor_and_never_raises_price() -> None:
    assert apply_discount(2000, 2500, 1000) == 1500
    assert apply_discount(2000, 5000, 1200) == 1200
    assert apply_discount(999, 3333, 0) == 667  # discount rounds down: 332.97 -> 332
    assert apply_discount(800, 5000, 1000) == 800
    with pytest.raises(ValueError):
        apply_discount(2000, 10_001, 0)
