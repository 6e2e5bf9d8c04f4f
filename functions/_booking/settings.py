"""A business's booking settings, read from ``businesses.settings`` with a default for every missing key.

Settings are evaluated at request time (B7), except the cancellation policy, which is snapshotted onto each
booking when it is made (P2) so a later change never re-judges an existing booking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BookingPolicy", "BusinessSettings", "load_settings", "parse_settings"]


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    """The part of the settings frozen onto a booking (P2)."""

    late_cancel_minutes: int
    no_show_grace_minutes: int
    late_cancel_fee_cents: int
    no_show_fee_cents: int

    def to_json(self) -> dict[str, Any]:
        return {
            "lateCancelMinutes": self.late_cancel_minutes,
            "noShowGraceMinutes": self.no_show_grace_minutes,
            "lateCancelFeeCents": self.late_cancel_fee_cents,
            "noShowFeeCents": self.no_show_fee_cents,
        }

    @classmethod
    def from_json(cls, raw: Any, fallback: BookingPolicy) -> BookingPolicy:
        """A snapshot read back; a missing key takes the current setting (rows written before the key existed)."""
        data = raw if isinstance(raw, dict) else {}
        return cls(
            late_cancel_minutes=_int(data, "lateCancelMinutes", fallback.late_cancel_minutes, 0),
            no_show_grace_minutes=_int(data, "noShowGraceMinutes", fallback.no_show_grace_minutes, 0),
            late_cancel_fee_cents=_int(data, "lateCancelFeeCents", fallback.late_cancel_fee_cents, 0),
            no_show_fee_cents=_int(data, "noShowFeeCents", fallback.no_show_fee_cents, 0),
        )


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    """Every setting the booking rules read; ``None`` switches a limit off."""

    booking_opens_days_before: int | None = 14
    booking_closes_minutes_before: int = 0
    late_cancel_minutes: int = 12 * 60
    auto_promote_cutoff_minutes: int | None = None
    promotion_grace_minutes: int = 120
    waitlist_limit: int | None = 20
    no_show_grace_minutes: int = 15
    prevent_overlaps: bool = True
    late_cancel_fee_cents: int = 0
    no_show_fee_cents: int = 0
    check_in_opens_minutes_before: int = 60
    attendance_edit_hours: int = 48
    strike_limit: int | None = None
    strike_window_days: int = 30
    suspension_days: int = 7

    def policy(self) -> BookingPolicy:
        return BookingPolicy(
            late_cancel_minutes=self.late_cancel_minutes,
            no_show_grace_minutes=self.no_show_grace_minutes,
            late_cancel_fee_cents=self.late_cancel_fee_cents,
            no_show_fee_cents=self.no_show_fee_cents,
        )


_DEFAULTS = BusinessSettings()


def _int(data: dict[str, Any], key: str, default: int, low: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < low:
        return default
    return int(value)


def _optional_int(data: dict[str, Any], key: str, default: int | None, low: int) -> int | None:
    if key in data and data[key] is None:
        return None
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < low:
        return default
    return int(value)


def parse_settings(raw: Any) -> BusinessSettings:
    """Settings from the stored JSON; a missing or malformed value takes its default rather than failing."""
    data = raw if isinstance(raw, dict) else {}
    d = _DEFAULTS
    closes = data.get("bookingClosesMinutesBefore")
    return BusinessSettings(
        booking_opens_days_before=_optional_int(data, "bookingOpensDaysBefore", d.booking_opens_days_before, 0),
        # negative: bookable after the start (B5)
        booking_closes_minutes_before=int(closes)
        if isinstance(closes, int | float) and not isinstance(closes, bool) and closes == int(closes)
        else d.booking_closes_minutes_before,
        late_cancel_minutes=_int(data, "lateCancelMinutes", d.late_cancel_minutes, 0),
        auto_promote_cutoff_minutes=_optional_int(data, "autoPromoteCutoffMinutes", d.auto_promote_cutoff_minutes, 0),
        promotion_grace_minutes=_int(data, "promotionGraceMinutes", d.promotion_grace_minutes, 0),
        waitlist_limit=_optional_int(data, "waitlistLimit", d.waitlist_limit, 0),
        no_show_grace_minutes=_int(data, "noShowGraceMinutes", d.no_show_grace_minutes, 0),
        prevent_overlaps=data.get("preventOverlaps", d.prevent_overlaps) is not False,
        late_cancel_fee_cents=_int(data, "lateCancelFeeCents", d.late_cancel_fee_cents, 0),
        no_show_fee_cents=_int(data, "noShowFeeCents", d.no_show_fee_cents, 0),
        check_in_opens_minutes_before=_int(data, "checkInOpensMinutesBefore", d.check_in_opens_minutes_before, 0),
        attendance_edit_hours=_int(data, "attendanceEditHours", d.attendance_edit_hours, 0),
        strike_limit=_optional_int(data, "strikeLimit", d.strike_limit, 1),
        strike_window_days=_int(data, "strikeWindowDays", d.strike_window_days, 1),
        suspension_days=_int(data, "suspensionDays", d.suspension_days, 0),
    )


async def load_settings(db: Any, business_id: str) -> tuple[BusinessSettings, dict[str, Any]]:
    """The business row and its parsed settings (``db`` is ``ctx.db``)."""
    business = await db.get(business_id)
    if business is None:
        raise LookupError(f"business {business_id} not found")
    return parse_settings(business.get("settings")), business
