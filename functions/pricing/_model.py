"""Time-slot pricing rules as rows, and the price of one instance (PR1, PR2, PR5).

Resolution order: instance override > time-slot rule (venue-local weekday and start time) > the template's
price (the domain's "class type") > the business default. The three lower levels are resolved by
``policy.evaluate_price``; an instance override then replaces the amount and/or the credit cost it sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time
from typing import Any, Literal

import msgspec

from backend import LocalTime
from functions._rules.policy import Price, TimeSlotRule, evaluate_price, validate_slot_rules
from functions._shared.errors import invalid
from functions._shared.settings import Settings
from schema import VenueId

__all__ = ["MAX_RULES", "QuoteView", "SlotRuleIn", "load_rules", "quote", "to_slot_rule", "validate"]

Doc = dict[str, Any]
Source = Literal["instance", "time_slot", "template", "default"]
MAX_RULES = 200
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_SOURCES: dict[str, Source] = {
    "instance_override": "instance",
    "time_slot": "time_slot",
    "class_type": "template",
    "default": "default",
}


class SlotRuleIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """One time-slot rule: local weekdays (``MO``..``SU``) and ``[start, end)`` (end ``00:00`` = midnight)."""

    weekdays: list[str]
    start: LocalTime
    end: LocalTime
    price_cents: int
    credit_cost: int = 1
    priority: int = 0
    venue_id: VenueId | None = None
    name: str | None = None
    tags: list[str] = []


class QuoteView(msgspec.Struct, rename="camel"):
    amount_cents: int
    currency: str
    credit_cost: int
    source: Source
    rule_id: str | None = None


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
    price = Price(stored["priceCents"], stored["priceCents"], stored.get("creditCost", 1), rule_id)
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
        if not 1 <= rule.credit_cost <= 100:
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


async def load_rules(db: Any) -> list[Doc]:
    """The business's live rules in their configured order."""
    rows: list[Doc] = await db.query("pricing_rules").with_index("by_position").collect()
    return rows


def quote(instance: Doc, currency: str, settings: Settings, rules: Sequence[Doc]) -> QuoteView:
    """The price of one instance for a member, with the level (and rule) that decided it."""
    slot_rules = [to_slot_rule(r["_id"], r["rule"]) for r in rules if r["rule"].get("venueId") in (None, instance["venueId"])]
    template_price = None
    if instance.get("priceCents") is not None:
        template_price = Price(instance["priceCents"], instance["priceCents"], instance["creditCost"], instance.get("templateId"))
    default = Price(settings.default_price_cents, settings.default_price_cents, settings.default_credit_cost)
    resolved = evaluate_price(
        starts_at=instance["startsAt"],
        tz=instance["timezone"],
        currency=currency,
        default=default,
        member=True,
        slot_rules=slot_rules,
        class_type_price=template_price,
    )
    view = QuoteView(
        amount_cents=resolved.amount_cents,
        currency=currency,
        credit_cost=resolved.credits,
        source=_SOURCES[resolved.source],
        rule_id=resolved.rule_id,
    )
    amount, credits = instance.get("priceOverrideCents"), instance.get("creditCostOverride")
    if amount is not None or credits is not None:
        view = QuoteView(
            amount_cents=view.amount_cents if amount is None else amount,
            currency=currency,
            credit_cost=view.credit_cost if credits is None else credits,
            source="instance",
            rule_id=instance["_id"],
        )
    return view
