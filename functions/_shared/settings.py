"""A business's policies: defaults, allowed ranges and the cross-field rules between them.

Settings live in ``businesses.settings`` as a sparse JSON object: only what the owner changed is stored, and
every reader goes through :func:`effective`, so a new default applies to every business that never set it
(B7: policies are resolved when used, not copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import invalid

__all__ = ["DEFAULTS", "RANGES", "Settings", "effective", "merge"]

GapPolicy = Literal["skip", "shift"]

#: Defaults for every business. ``autoPromoteCutoffMinutes`` None means "late-cancel window + 2 h grace" (W4).
DEFAULTS: dict[str, Any] = {
    "bookingOpensDaysBefore": 14,
    "bookingClosesMinutesBefore": 0,
    "lateCancelMinutes": 720,
    "autoPromoteCutoffMinutes": None,
    "waitlistLimit": 20,
    "noShowGraceMinutes": 15,
    "horizonDays": 56,
    "gapPolicy": "skip",
    "defaultPriceCents": 0,
    "defaultCreditCost": 1,
}

#: Inclusive bounds of the integer settings. A negative close offset lets members book after the start (B5).
RANGES: dict[str, tuple[int, int]] = {
    "bookingOpensDaysBefore": (0, 365),
    "bookingClosesMinutesBefore": (-1440, 10_080),
    "lateCancelMinutes": (0, 10_080),
    "autoPromoteCutoffMinutes": (0, 20_160),
    "waitlistLimit": (0, 1000),
    "noShowGraceMinutes": (0, 1440),
    "horizonDays": (7, 730),
    "defaultPriceCents": (0, 100_000_000),
    "defaultCreditCost": (1, 100),
}

#: The materialised horizon must cover the widest booking window plus a week (T11).
HORIZON_MARGIN_DAYS = 7


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed view of the effective settings, for the rules that use them."""

    booking_opens_days_before: int
    booking_closes_minutes_before: int
    late_cancel_minutes: int
    auto_promote_cutoff_minutes: int | None
    waitlist_limit: int
    no_show_grace_minutes: int
    horizon_days: int
    gap_policy: GapPolicy
    default_price_cents: int
    default_credit_cost: int

    @classmethod
    def of(cls, business: dict[str, Any]) -> Settings:
        values = effective(business.get("settings"))
        return cls(
            booking_opens_days_before=values["bookingOpensDaysBefore"],
            booking_closes_minutes_before=values["bookingClosesMinutesBefore"],
            late_cancel_minutes=values["lateCancelMinutes"],
            auto_promote_cutoff_minutes=values["autoPromoteCutoffMinutes"],
            waitlist_limit=values["waitlistLimit"],
            no_show_grace_minutes=values["noShowGraceMinutes"],
            horizon_days=values["horizonDays"],
            gap_policy=values["gapPolicy"],
            default_price_cents=values["defaultPriceCents"],
            default_credit_cost=values["defaultCreditCost"],
        )


def effective(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Every setting with defaults filled in; unknown stored keys are dropped."""
    values = dict(DEFAULTS)
    for key, value in (stored or {}).items():
        if key in DEFAULTS:
            values[key] = value
    return values


def merge(stored: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    """The stored settings with ``changes`` applied (None values mean "leave as is"), validated as a whole.

    Raises ``invalid_argument`` naming the first field out of range, or ``horizonDays`` when the horizon would
    no longer cover the booking window plus a week.
    """
    updated = dict(stored or {})
    for key, value in changes.items():
        if value is None:
            continue
        if key == "gapPolicy":
            if value not in ("skip", "shift"):
                raise invalid(key, "must be 'skip' or 'shift'", allowed=["skip", "shift"])
        else:
            low, high = RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise invalid(key, f"must be an integer between {low} and {high}", min=low, max=high)
        updated[key] = value
    values = effective(updated)
    needed = values["bookingOpensDaysBefore"] + HORIZON_MARGIN_DAYS
    if values["horizonDays"] < needed:
        raise invalid(
            "horizonDays",
            f"must be at least bookingOpensDaysBefore + {HORIZON_MARGIN_DAYS} = {needed} so every bookable class exists",
            min=needed,
        )
    return updated
