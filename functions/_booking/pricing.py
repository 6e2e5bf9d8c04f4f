"""What one class costs a member: drop-in price and credit cost (PR1, PR2, PR5, F11).

Resolution order, the same as ``pricing:quote``: instance override > time-slot rule (venue-local weekday and
start) > the class's own price > the business default. Rules are read from ``pricing_rules`` in their stored
form (weekdays ``MO``..``SU``). A rule this module cannot read is skipped with a log line, and a tie the
evaluator rejects falls back to the class's own price: a booking never fails because a rule elsewhere is
malformed, and the quote records which level decided it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Any

from functions._rules.policy import Price, TimeSlotRule, evaluate_price

from .model import collect

__all__ = ["Quote", "quote"]

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_SOURCES = {"instance_override": "instance", "time_slot": "time_slot", "class_type": "template", "default": "default"}


@dataclass(frozen=True, slots=True)
class Quote:
    amount_cents: int
    currency: str
    credit_cost: int
    source: str
    rule_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"amountCents": self.amount_cents, "currency": self.currency, "creditCost": self.credit_cost,
                "source": self.source, "ruleId": self.rule_id}


def _weekday(value: Any) -> int:
    if isinstance(value, str) and value.upper() in _WEEKDAYS:
        return _WEEKDAYS.index(value.upper())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    raise ValueError(f"bad weekday {value!r}")


def _slot(row: dict[str, Any], venue_id: str) -> TimeSlotRule | None:
    rule = row.get("rule")
    if not isinstance(rule, dict):
        raise ValueError("rule is not an object")
    if rule.get("venueId") not in (None, venue_id):
        return None
    cents = int(rule["priceCents"])
    return TimeSlotRule(
        id=row["_id"],
        weekdays=frozenset(_weekday(d) for d in rule["weekdays"]),
        start=time.fromisoformat(rule["start"]),
        end=time.fromisoformat(rule["end"]),
        price=Price(cents, cents, credits=int(rule.get("creditCost") or 1), rule_id=row["_id"]),
        priority=int(rule.get("priority") or 0),
        tags=frozenset(rule.get("tags") or ()),
    )


def _setting(business: dict[str, Any], key: str, default: int, low: int) -> int:
    value = (business.get("settings") or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= low else default


async def quote(ctx: Any, instance: dict[str, Any], business: dict[str, Any]) -> Quote:
    """The member price and credit cost of one class, with the level (and rule) that decided them."""
    currency = business.get("currency") or "USD"
    rows = await collect(ctx.db.query("pricing_rules").with_index(
        "by_position", lambda q: q.eq("businessId", instance["businessId"])
    ))
    slots: list[TimeSlotRule] = []
    for row in rows:
        try:
            slot = _slot(row, instance["venueId"])
        except (KeyError, TypeError, ValueError) as error:
            ctx.log.warn(f"pricing rule {row['_id']} ignored: {error}")
            continue
        if slot is not None:
            slots.append(slot)
    own = instance.get("priceCents")
    fallback_cents = _setting(business, "defaultPriceCents", 0, 0)
    cents = fallback_cents if own is None else int(own)
    # The class's own credit cost applies even when its price falls back to the business default.
    class_price = Price(cents, cents, credits=max(1, int(instance["creditCost"])))
    try:
        result = evaluate_price(
            starts_at=instance["startsAt"], tz=instance["timezone"], currency=currency, default=class_price,
            member=True, slot_rules=slots, class_type_price=class_price if own is not None else None,
        )
        base = Quote(result.amount_cents, currency, result.credits, _SOURCES[result.source], result.rule_id)
    except ValueError as error:
        ctx.log.warn(f"pricing rules ignored for {instance['_id']}: {error}")
        base = Quote(cents, currency, class_price.credits, "default" if own is None else "template", None)
    amount, credits = instance.get("priceOverrideCents"), instance.get("creditCostOverride")
    if amount is None and credits is None:
        return base
    return Quote(
        base.amount_cents if amount is None else int(amount), currency,
        base.credit_cost if credits is None else max(1, int(credits)), "instance", instance["_id"],
    )
