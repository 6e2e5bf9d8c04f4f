"""Booking windows, cancellation and promotion cutoffs, credit lots and pricing (B, P, W, F, PR rules).

Every instant here is an aware datetime; durations are computed on absolute time because aware arithmetic
inside one zone is wall-clock arithmetic ("12 h before" across spring-forward would be 11 real hours).
Only calendar-day concepts (day offsets, expiry dates, peak slots) are evaluated in the venue's zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, Protocol, TypeVar

from .recurrence import local_to_utc, resolve_zone, start_of_local_day

DEFAULT_PROMOTION_GRACE_MINUTES = 120
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def _aware(value: datetime, name: str) -> datetime:
    """Reject naive datetimes up front: comparing them with aware ones raises TypeError much later."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime: an offset or Z is required")
    return value


# --- B: booking window ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offset:
    """A distance before class start: ``days`` are venue-local calendar days, hours/minutes absolute (B1).

    Negative amounts lie after the start (B5: "closes 15 min after start" is ``Offset(-15)``).
    """

    amount: int
    unit: Literal["days", "hours", "minutes"] = "minutes"


@dataclass(frozen=True, slots=True)
class BookingWindow:
    """Half-open ``[opens_at, closes_at)`` (B4); ``opens_at`` None means no opening restriction."""

    opens_at: datetime | None
    closes_at: datetime


WindowStatus = Literal["not_yet_open", "open", "closed"]


def offset_before(starts_at: datetime, tz: str, offset: Offset) -> datetime:
    """The instant ``offset`` before ``starts_at`` (B1).

    Day offsets keep the wall-clock time on the local calendar (a gap time moves forward, an ambiguous one
    takes its first occurrence); hour and minute offsets subtract real elapsed time.
    """
    _aware(starts_at, "starts_at")
    if offset.unit == "days":
        local = starts_at.astimezone(resolve_zone(tz))
        shifted = local_to_utc(local.date() - timedelta(days=offset.amount), local.time(), tz, "shift")
        assert shifted is not None  # "shift" always resolves
        return shifted
    if offset.unit not in ("hours", "minutes"):
        raise ValueError(f"unknown offset unit {offset.unit!r}")
    minutes = offset.amount * (60 if offset.unit == "hours" else 1)
    return starts_at.astimezone(UTC) - timedelta(minutes=minutes)


def booking_window(
    starts_at: datetime,
    ends_at: datetime,
    tz: str,
    *,
    opens_before: Offset | None,
    closes_before: Offset,
) -> BookingWindow:
    """Compute the window for one class; a negative close offset never reaches past the class end (B5)."""
    closes_at = min(offset_before(starts_at, tz, closes_before), _aware(ends_at, "ends_at").astimezone(UTC))
    opens_at = None if opens_before is None else offset_before(starts_at, tz, opens_before)
    return BookingWindow(opens_at=opens_at, closes_at=closes_at)


def window_status(now: datetime, window: BookingWindow) -> WindowStatus:
    """Where ``now`` falls in the half-open window: exactly ``opens_at`` is open, exactly ``closes_at`` is closed."""
    _aware(now, "now")
    if window.opens_at is not None and now < window.opens_at:
        return "not_yet_open"
    return "closed" if now >= window.closes_at else "open"


def earliest_opening(openings: Sequence[datetime | None]) -> datetime | None:
    """Tiered access (B3): the earliest opening among the member's covering entitlements wins."""
    if not openings:
        raise ValueError("no entitlement covers the class")
    if any(opening is None for opening in openings):
        return None
    return min(_aware(o, "opening") for o in openings if o is not None)


# --- P and W: cancellation, no-show and promotion cutoffs -------------------------------------------------


def classify_cancellation(
    now: datetime, starts_at: datetime, late_cancel_minutes: int
) -> Literal["early", "late"]:
    """``late`` iff ``now >= starts_at - late_cancel_minutes`` in absolute time (P1).

    Cancelling after the start is still allowed and is ``late`` (P8: the seat returns to the pool).
    """
    if late_cancel_minutes < 0:
        raise ValueError("late_cancel_minutes must not be negative")
    cutoff = _aware(starts_at, "starts_at") - timedelta(minutes=late_cancel_minutes)
    return "late" if _aware(now, "now") >= cutoff else "early"


def is_no_show(
    now: datetime, starts_at: datetime, grace_minutes: int, *, checked_in: bool, cancelled: bool
) -> bool:
    """A no-show is a booking neither checked in nor cancelled once ``starts_at + grace`` has passed (P1, P6)."""
    if checked_in or cancelled:
        return False
    return _aware(now, "now") >= _aware(starts_at, "starts_at") + timedelta(minutes=grace_minutes)


def promotion_cutoff(
    starts_at: datetime,
    late_cancel_minutes: int,
    auto_promote_cutoff_minutes: int | None = None,
    grace_minutes: int = DEFAULT_PROMOTION_GRACE_MINUTES,
) -> datetime:
    """The last instant (exclusive) for automatic waitlist promotion (W3, W4).

    Default: late-cancel window + grace, so a promoted member can still cancel free for ``grace`` minutes.
    An explicit cutoff is honoured but never shorter than the late-cancel window: auto-promotion must not
    drop a member straight into the penalty window.
    """
    if late_cancel_minutes < 0 or grace_minutes < 0:
        raise ValueError("late_cancel_minutes and grace_minutes must not be negative")
    if auto_promote_cutoff_minutes is None:
        minutes = late_cancel_minutes + grace_minutes
    else:
        minutes = max(auto_promote_cutoff_minutes, late_cancel_minutes)
    return _aware(starts_at, "starts_at").astimezone(UTC) - timedelta(minutes=minutes)


def can_auto_promote(
    now: datetime,
    starts_at: datetime,
    late_cancel_minutes: int,
    auto_promote_cutoff_minutes: int | None = None,
    grace_minutes: int = DEFAULT_PROMOTION_GRACE_MINUTES,
) -> bool:
    """True while ``now < cutoff``; afterwards the instance switches to offer-and-claim or open booking."""
    cutoff = promotion_cutoff(starts_at, late_cancel_minutes, auto_promote_cutoff_minutes, grace_minutes)
    return _aware(now, "now") < cutoff


# --- F: credit lots ---------------------------------------------------------------------------------------


def lot_expires_at(expiry_date: date, tz: str) -> datetime:
    """An expiry date means the end of that local day (F2): the first instant of the next local day, in UTC."""
    return start_of_local_day(expiry_date + timedelta(days=1), tz)


def lot_covers_class(expires_at: datetime | None, class_starts_at: datetime) -> bool:
    """A lot pays for a class only if it is still valid at class start, not merely at booking time (F2)."""
    return expires_at is None or _aware(class_starts_at, "class_starts_at") < _aware(expires_at, "expires_at")


class CreditLot(Protocol):
    """What the lot rules need from a lot row (structural, so ORM rows or Structs can be passed)."""

    @property
    def id(self) -> str: ...
    @property
    def remaining(self) -> int: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def granted_at(self) -> datetime: ...


LotT = TypeVar("LotT", bound=CreditLot)
_NEVER = datetime.max.replace(tzinfo=UTC)


def consumption_order(lots: Sequence[LotT]) -> list[LotT]:
    """Soonest expiry first (never-expiring last), then oldest grant, then id so ties are deterministic (F3)."""
    return sorted(lots, key=lambda lot: (lot.expires_at or _NEVER, lot.granted_at, lot.id))


def plan_consumption(
    lots: Sequence[LotT], class_starts_at: datetime, credits: int
) -> list[tuple[LotT, int]] | None:
    """Which lots pay ``credits`` for a class, in F3 order; None when they cannot pay all of it (F11).

    A multi-credit class may draw on several lots; the plan is all-or-nothing, never partial.
    """
    if credits < 1:
        raise ValueError("a class costs at least 1 credit")
    plan: list[tuple[LotT, int]] = []
    needed = credits
    for lot in consumption_order(lots):
        if needed == 0:
            break
        if lot.remaining > 0 and lot_covers_class(lot.expires_at, class_starts_at):
            take = min(lot.remaining, needed)
            plan.append((lot, take))
            needed -= take
    return plan if needed == 0 else None


# --- PR: pricing ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """Member and non-member prices are separate integer minor-unit fields, never derived (PR5)."""

    member_cents: int
    non_member_cents: int
    credits: int = 1
    rule_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("member_cents", "non_member_cents", "credits"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.credits < 1:
            raise ValueError("credits must be at least 1 (F11)")


@dataclass(frozen=True, slots=True)
class TimeSlotRule:
    """A peak/off-peak rule on venue-local weekdays (0 = Monday) and ``[start, end)``; end 00:00 = midnight.

    Slots crossing midnight are two rules. ``tags`` (e.g. ``"peak"``) feed entitlement restrictions (PR3).
    """

    id: str
    weekdays: frozenset[int]
    start: time
    end: time
    price: Price
    priority: int = 0
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise ValueError(f"slot {self.id}: weekdays must be a non-empty subset of 0..6")
        if self.end != time(0) and self.end <= self.start:
            raise ValueError(f"slot {self.id}: end must be after start (split slots that cross midnight)")

    def _minutes(self) -> tuple[int, int]:
        end = 24 * 60 if self.end == time(0) else self.end.hour * 60 + self.end.minute
        return self.start.hour * 60 + self.start.minute, end

    def matches(self, weekday: int, at: time) -> bool:
        """Whether a class starting at local ``weekday``/``at`` falls in this slot."""
        low, high = self._minutes()
        return weekday in self.weekdays and low <= at.hour * 60 + at.minute < high


@dataclass(frozen=True, slots=True)
class SlotRestriction:
    """An entitlement's slot limits (PR3): blocked tags, and one surcharge if any surcharge tag matches."""

    blocked_tags: frozenset[str] = frozenset()
    surcharge_tags: frozenset[str] = frozenset()
    surcharge_cents: int = 0


PriceSource = Literal["instance_override", "time_slot", "class_type", "default"]


@dataclass(frozen=True, slots=True)
class Quote:
    """The price to store on the booking (PR1); ``surcharge_cents`` is what an entitlement holder adds."""

    amount_cents: int
    currency: str
    credits: int
    source: PriceSource
    rule_id: str | None
    slot_tags: frozenset[str] = frozenset()
    surcharge_cents: int = 0
    blocked_reason: Literal["not_valid_for_time_slot"] | None = None


def validate_slot_rules(rules: Sequence[TimeSlotRule]) -> None:
    """Reject configurations with ambiguous ties (PR1): same priority, a shared weekday, overlapping times."""
    ids = [rule.id for rule in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate slot rule ids {duplicates}")
    for i, rule in enumerate(rules):
        for other in rules[i + 1 :]:
            (a0, a1), (b0, b1) = rule._minutes(), other._minutes()
            if rule.priority == other.priority and rule.weekdays & other.weekdays and a0 < b1 and b0 < a1:
                raise ValueError(
                    f"slot rules {rule.id!r} and {other.id!r} overlap with equal priority {rule.priority}"
                )


def evaluate_price(
    *,
    starts_at: datetime,
    tz: str,
    currency: str,
    default: Price,
    member: bool,
    instance_override: Price | None = None,
    slot_rules: Sequence[TimeSlotRule] = (),
    class_type_price: Price | None = None,
    restriction: SlotRestriction | None = None,
) -> Quote:
    """Resolve the price: instance override > time-slot rule > class type > default (PR1).

    Slots match the class's venue-local weekday and start time (PR2); the highest priority wins and a tie at
    the top raises. Restrictions (PR3) use every matching slot's tags, whichever level decided the price.
    """
    if not _CURRENCY_RE.match(currency):
        raise ValueError(f"currency must be an ISO 4217 code such as 'GBP', got {currency!r}")
    local = _aware(starts_at, "starts_at").astimezone(resolve_zone(tz))
    matching = sorted(
        (r for r in slot_rules if r.matches(local.weekday(), local.time())), key=lambda r: -r.priority
    )
    if len(matching) > 1 and matching[0].priority == matching[1].priority:
        raise ValueError(f"ambiguous pricing: slot rules {matching[0].id!r} and {matching[1].id!r} tie")
    source: PriceSource
    if instance_override is not None:
        price, source, rule_id = instance_override, "instance_override", instance_override.rule_id
    elif matching:
        price, source, rule_id = matching[0].price, "time_slot", matching[0].id
    elif class_type_price is not None:
        price, source, rule_id = class_type_price, "class_type", class_type_price.rule_id
    else:
        price, source, rule_id = default, "default", default.rule_id
    tags = frozenset(tag for rule in matching for tag in rule.tags)
    surcharge = 0
    blocked: Literal["not_valid_for_time_slot"] | None = None
    if restriction is not None:
        if tags & restriction.blocked_tags:
            blocked = "not_valid_for_time_slot"
        elif tags & restriction.surcharge_tags:
            surcharge = restriction.surcharge_cents
    return Quote(
        amount_cents=price.member_cents if member else price.non_member_cents,
        currency=currency,
        credits=price.credits,
        source=source,
        rule_id=rule_id,
        slot_tags=tags,
        surcharge_cents=surcharge,
        blocked_reason=blocked,
    )


def apply_discount(amount_cents: int, discount_bps: int, floor_cents: int) -> int:
    """A dynamic discount in basis points that never goes below the floor nor raises a price (PR4).

    The discount rounds down, so the member never pays less than the exact discounted amount.
    """
    if not 0 <= discount_bps <= 10_000:
        raise ValueError("discount_bps must be between 0 and 10000")
    if amount_cents <= floor_cents:
        return amount_cents
    return max(amount_cents - amount_cents * discount_bps // 10_000, floor_cents)
