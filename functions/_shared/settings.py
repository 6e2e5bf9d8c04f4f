"""A business's policies: the one list of settings, their defaults and bounds, and how they are read.

Settings live in ``businesses.settings`` as a sparse JSON object: only what the owner changed is stored, and
every reader goes through :func:`effective` (or :func:`load_settings`), so a new default applies to every
business that never set it (B7: policies are resolved when used, not copied). The schedule, pricing and
booking rules all read this module; nothing else knows a default.

The part of the settings that judges a booking's cancellation is frozen onto the booking when it is made
(:class:`BookingPolicy`, P2), so a later change never re-judges an existing booking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import invalid

__all__ = [
    "BOOLEANS",
    "CHOICES",
    "DEFAULTS",
    "RANGES",
    "SNAKE_NAMES",
    "BookingPolicy",
    "Settings",
    "effective",
    "load_settings",
    "merge",
]

GapPolicy = Literal["skip", "shift"]

#: Defaults for every business. ``autoPromoteCutoffMinutes`` None means "late-cancel window + grace" (W4);
#: ``strikeLimit`` 0 switches strikes off (P5); ``waitlistLimit`` 0 means no waitlist.
DEFAULTS: dict[str, Any] = {
    # schedule (T3, T11)
    "horizonDays": 56,
    "gapPolicy": "skip",
    # booking window (B1, B4, B5)
    "bookingOpensDaysBefore": 14,
    "bookingClosesMinutesBefore": 0,
    # prices (PR1)
    "defaultPriceCents": 0,
    "defaultCreditCost": 1,
    # waitlist (W3, W4, W11)
    "waitlistLimit": 20,
    "autoPromoteCutoffMinutes": None,
    "promotionGraceMinutes": 120,
    # after the cutoff (W3, W5): minutes an offer holds a freed seat for the head of the waitlist; 0 = open
    # booking (every waiting member is told, the first to book takes the seat)
    "offerMinutes": 30,
    # cancellations and attendance (P1-P6, C5)
    "lateCancelMinutes": 720,
    "noShowGraceMinutes": 15,
    "lateCancelFeeCents": 0,
    "noShowFeeCents": 0,
    "refillWaivesLateCancel": True,
    "preventOverlaps": True,
    "checkInOpensMinutesBefore": 60,
    "attendanceEditHours": 48,
    # strikes (P5)
    "strikeLimit": 0,
    "strikeWindowDays": 30,
    "suspensionDays": 7,
    # credits (F3): days a credit refunded to an expired lot stays usable; 0 = no restore
    "expiredCreditGraceDays": 0,
}

#: Inclusive bounds of the integer settings. A negative close offset lets members book after the start (B5).
RANGES: dict[str, tuple[int, int]] = {
    "horizonDays": (7, 730),
    "bookingOpensDaysBefore": (0, 365),
    "bookingClosesMinutesBefore": (-1440, 10_080),
    "defaultPriceCents": (0, 100_000_000),
    "defaultCreditCost": (1, 100),
    "waitlistLimit": (0, 1000),
    "autoPromoteCutoffMinutes": (0, 20_160),
    "promotionGraceMinutes": (0, 1440),
    "offerMinutes": (0, 1440),
    "lateCancelMinutes": (0, 10_080),
    "noShowGraceMinutes": (0, 1440),
    "lateCancelFeeCents": (0, 100_000_000),
    "noShowFeeCents": (0, 100_000_000),
    "checkInOpensMinutesBefore": (0, 1440),
    "attendanceEditHours": (0, 720),
    "strikeLimit": (0, 100),
    "strikeWindowDays": (1, 365),
    "suspensionDays": (0, 365),
    "expiredCreditGraceDays": (0, 365),
}
BOOLEANS = frozenset({"preventOverlaps", "refillWaivesLateCancel"})
CHOICES: dict[str, tuple[str, ...]] = {"gapPolicy": ("skip", "shift")}

#: ``late_cancel_minutes`` → ``lateCancelMinutes``: the argument names of ``businesses:update_settings``.
SNAKE_NAMES: dict[str, str] = {"".join("_" + c.lower() if c.isupper() else c for c in k): k for k in DEFAULTS}

#: The materialised horizon must cover the widest booking window plus a week (T11).
HORIZON_MARGIN_DAYS = 7

assert set(DEFAULTS) == set(RANGES) | BOOLEANS | set(CHOICES), "every setting has exactly one kind"


def _problem(key: str, value: Any) -> tuple[str, dict[str, Any]] | None:
    """Why ``value`` is not a valid ``key`` (message and error details), or None when it is."""
    if key in BOOLEANS:
        return None if isinstance(value, bool) else ("must be true or false", {})
    if key in CHOICES:
        allowed = CHOICES[key]
        return None if value in allowed else (f"must be one of {', '.join(allowed)}", {"allowed": list(allowed)})
    low, high = RANGES[key]
    if value is None and DEFAULTS[key] is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be an integer between {low} and {high}", {"min": low, "max": high}
    return None


def effective(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Every setting with defaults filled in; unknown keys and values out of bounds are ignored."""
    values = dict(DEFAULTS)
    for key, value in (stored or {}).items():
        if key in DEFAULTS and _problem(key, value) is None:
            values[key] = value
    return values


#: A day offset is counted on the local calendar, so across a daylight-saving change "1 day before" can be
#: this many minutes shorter than 1440 (B1); the window must still be open for at least a minute then.
DST_SHIFT_MINUTES = 60


def latest_close(opens_days_before: int) -> int:
    """The largest ``bookingClosesMinutesBefore`` that still leaves every class a non-empty window (B8)."""
    shortest = opens_days_before * 1440 - DST_SHIFT_MINUTES if opens_days_before > 0 else 0
    return shortest - 1


def _check_window_opens(values: dict[str, Any], changes: dict[str, Any]) -> None:
    """Refuse a booking window that closes before it opens: every booking would be refused (B8)."""
    opens, closes = values["bookingOpensDaysBefore"], values["bookingClosesMinutesBefore"]
    limit = latest_close(opens)
    if closes <= limit:
        return
    message = (f"the booking window closes before it opens: it opens {opens} day(s) before a class, so it must "
               f"close less than that before it (bookingClosesMinutesBefore at most {limit})")
    if changes.get("bookingClosesMinutesBefore") is None and changes.get("bookingOpensDaysBefore") is not None:
        raise invalid("bookingOpensDaysBefore", message, min=-(-(closes + 1 + DST_SHIFT_MINUTES) // 1440))
    raise invalid("bookingClosesMinutesBefore", message, max=limit)


def merge(stored: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    """The stored settings with ``changes`` applied (None values mean "leave as is"), validated as a whole.

    Raises ``invalid_argument`` naming the first bad field (``$.args.<field>`` in the message), or
    ``horizonDays`` when the horizon would no longer cover the booking window plus a week.
    """
    updated = dict(stored or {})
    for key, value in changes.items():
        if value is None:
            continue
        if key not in DEFAULTS:
            raise invalid(key, "is not a setting")
        problem = _problem(key, value)
        if problem is not None:
            raise invalid(key, problem[0], **problem[1])
        updated[key] = value
    values = effective(updated)
    _check_window_opens(values, changes)
    needed = values["bookingOpensDaysBefore"] + HORIZON_MARGIN_DAYS
    if values["horizonDays"] < needed:
        raise invalid(
            "horizonDays",
            f"must be at least bookingOpensDaysBefore + {HORIZON_MARGIN_DAYS} = {needed} so every bookable class exists",
            min=needed,
        )
    return updated


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    """The part of the settings frozen onto a booking when it is made (P2).

    ``free_cancel`` is set later, when the class moves (T7): leaving it then never costs anything.
    """

    late_cancel_minutes: int
    no_show_grace_minutes: int
    late_cancel_fee_cents: int
    no_show_fee_cents: int
    refill_waives_late_cancel: bool
    free_cancel: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "lateCancelMinutes": self.late_cancel_minutes,
            "noShowGraceMinutes": self.no_show_grace_minutes,
            "lateCancelFeeCents": self.late_cancel_fee_cents,
            "noShowFeeCents": self.no_show_fee_cents,
            "refillWaivesLateCancel": self.refill_waives_late_cancel,
        }
        if self.free_cancel:
            data["freeCancel"] = True
        return data

    @classmethod
    def from_json(cls, raw: Any, fallback: BookingPolicy) -> BookingPolicy:
        """A snapshot read back; a missing or malformed key takes the current setting (older rows)."""
        data = raw if isinstance(raw, dict) else {}

        def pick(key: str, current: Any) -> Any:
            value = data.get(key)
            return current if value is None or _problem(key, value) is not None else value

        return cls(
            late_cancel_minutes=pick("lateCancelMinutes", fallback.late_cancel_minutes),
            no_show_grace_minutes=pick("noShowGraceMinutes", fallback.no_show_grace_minutes),
            late_cancel_fee_cents=pick("lateCancelFeeCents", fallback.late_cancel_fee_cents),
            no_show_fee_cents=pick("noShowFeeCents", fallback.no_show_fee_cents),
            refill_waives_late_cancel=pick("refillWaivesLateCancel", fallback.refill_waives_late_cancel),
            free_cancel=data.get("freeCancel") is True,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed view of the effective settings, for the rules that use them."""

    horizon_days: int
    gap_policy: GapPolicy
    booking_opens_days_before: int
    booking_closes_minutes_before: int
    default_price_cents: int
    default_credit_cost: int
    waitlist_limit: int
    auto_promote_cutoff_minutes: int | None
    promotion_grace_minutes: int
    offer_minutes: int
    late_cancel_minutes: int
    no_show_grace_minutes: int
    late_cancel_fee_cents: int
    no_show_fee_cents: int
    refill_waives_late_cancel: bool
    prevent_overlaps: bool
    check_in_opens_minutes_before: int
    attendance_edit_hours: int
    strike_limit: int
    strike_window_days: int
    suspension_days: int
    expired_credit_grace_days: int

    @classmethod
    def of(cls, business: dict[str, Any]) -> Settings:
        values = effective(business.get("settings"))
        return cls(**{snake: values[key] for snake, key in SNAKE_NAMES.items()})

    def policy(self) -> BookingPolicy:
        """The cancellation policy to snapshot onto a booking made now."""
        return BookingPolicy(
            late_cancel_minutes=self.late_cancel_minutes,
            no_show_grace_minutes=self.no_show_grace_minutes,
            late_cancel_fee_cents=self.late_cancel_fee_cents,
            no_show_fee_cents=self.no_show_fee_cents,
            refill_waives_late_cancel=self.refill_waives_late_cancel,
        )


async def load_settings(db: Any, business_id: str) -> tuple[Settings, dict[str, Any]]:
    """The business's effective settings and its row (``db`` is ``ctx.db``; works across tenants too)."""
    business: dict[str, Any] | None = await db.get(business_id)
    if business is None:
        raise LookupError(f"business {business_id} not found")
    return Settings.of(business), business
