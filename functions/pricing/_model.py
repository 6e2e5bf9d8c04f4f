"""Time-slot pricing rules as rows: their wire shape, validation as a set (PR1, PR2) and loading.

How a class's price is resolved from these rules and the other levels is ``_quote.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time
from typing import Any

import msgspec

from backend import LocalTime
from functions._rules.policy import Price, TimeSlotRule, validate_slot_rules
from functions._shared.errors import invalid
from schema import VenueId

__all__ = ["MAX_RULES", "WEEKDAYS", "SlotRuleIn", "load_rules", "to_slot_rule", "validate"]

Doc = dict[str, Any]
MAX_RULES = 200
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


class SlotRuleIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """One time-slot rule: local weekdays (``MO``..``SU``) and ``[start, end)`` (end ``00:00`` = midnight).

    ``creditCost`` is optional: a rule that only sets a price leaves the credit cost to the next level.
    """

    weekdays: list[str]
    start: LocalTime
    end: LocalTime
    price_cents: int
    credit_cost: int | None = None
    priority: int = 0
    venue_id: VenueId | None = None
    name: str | None = None
    tags: list[str] = []


def _stored(rule: SlotRuleIn) -> Doc:
    return {
        "weekdays": list(rule.weekdays),
        "start": str(rule.start),
        "end": str(rule.end),
        "priceCents": rule.price_cents,
        "creditCost": rule.credit_cost,
        "priority": rule.priority,
        "venueId": rule.venue_id,
        "name": rule.name,
        "tags": list(rule.tags),
    }


def to_slot_rule(rule_id: str, stored: Doc) -> TimeSlotRule:
    """The pure rule for matching; its ``price.credits`` is a placeholder (the stored credit cost may be unset)."""
    cents = int(stored["priceCents"])
    price = Price(cents, cents, 1, rule_id)
    return TimeSlotRule(
        id=rule_id,
        weekdays=frozenset(WEEKDAYS.index(d) for d in stored["weekdays"]),
        start=time.fromisoformat(stored["start"]),
        end=time.fromisoformat(stored["end"]),
        price=price,
        priority=stored.get("priority", 0),
        tags=frozenset(stored.get("tags") or ()),
    )


def validate(rules: Sequence[SlotRuleIn]) -> list[Doc]:
    """Check each rule and that no two rules that can apply to one venue tie (PR1); returns stored forms."""
    if len(rules) > MAX_RULES:
        raise invalid("rules", f"at most {MAX_RULES} rules", max=MAX_RULES)
    stored: list[Doc] = []
    parsed: list[tuple[str | None, TimeSlotRule]] = []
    for i, rule in enumerate(rules):
        field = f"rules[{i}]"
        bad = [d for d in rule.weekdays if d not in WEEKDAYS]
        if bad or len(set(rule.weekdays)) != len(rule.weekdays):
            raise invalid(f"{field}.weekdays", "must be distinct days among MO TU WE TH FR SA SU", allowed=list(WEEKDAYS))
        if not 0 <= rule.price_cents <= 100_000_000:
            raise invalid(f"{field}.priceCents", "must be between 0 and 100000000")
        if rule.credit_cost is not None and not 1 <= rule.credit_cost <= 100:
            raise invalid(f"{field}.creditCost", "must be between 1 and 100")
        doc = _stored(rule)
        try:
            parsed.append((rule.venue_id, to_slot_rule(f"#{i}", doc)))
        except ValueError as error:
            raise invalid(field, str(error)) from None
        stored.append(doc)
    venues = {venue for venue, _ in parsed if venue is not None}
    for venue in [None, *sorted(venues)]:
        applicable = [r for v, r in parsed if v is None or v == venue]
        try:
            validate_slot_rules(applicable)
        except ValueError as error:
            raise invalid("rules", str(error)) from None
    return stored


async def load_rules(db: Any, business_id: str) -> list[Doc]:
    """The business's live rules in their configured order (the business named, so jobs can call it too)."""
    rows: list[Doc] = await db.query("pricing_rules").with_index(
        "by_position", lambda q: q.eq("businessId", business_id)
    ).collect()
    return rows
