"""The price of one class: the single resolution every reader uses (schedule, ``pricing:quote``, booking).

Each of the two prices a class has, the drop-in amount and the credit cost (F11), is resolved on its own
through the same levels, first one that sets it wins (PR1):

1. ``instance``: the class's own override (``classes:update_instance`` with ``priceCents``/``creditCost``);
2. ``time_slot``: the highest-priority pricing rule matching the class's venue-local weekday and start time
   (PR2); a rule always sets an amount and sets a credit cost only when it names one;
3. ``template``: the series' price and credit cost; an unpriced template sets neither, except a credit-only
   one (a ``creditCost`` without ``priceCents``, PR6), which sets its credit cost and offers no drop-in
   (``dropin`` False) unless the class itself is given a price;
4. ``default``: the business's ``defaultPriceCents`` and ``defaultCreditCost``.

``source``/``ruleId`` say which level decided the amount, ``creditSource`` which decided the credit cost.
A stored rule that cannot be read is skipped, and rules that tie (only possible by editing rows by hand:
``pricing:set_rules`` refuses ties) are set aside, each with a warning, so a malformed rule never makes a
class unbookable and the schedule, the quote and the booking always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from functions._rules.policy import Price, evaluate_price
from functions._shared.settings import Settings

from ._model import load_rules, to_slot_rule

__all__ = ["Quote", "Source", "quote_for", "resolve"]

Doc = dict[str, Any]
Source = Literal["instance", "time_slot", "template", "default"]
Warn = Callable[[str], None]


class Quote(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What a class costs now; stored on a booking as it was when booked (PR1)."""

    amount_cents: int
    currency: str
    credit_cost: int
    source: Source
    rule_id: str | None = None
    credit_source: Source = "default"
    dropin: bool = True  # False for a credit-only class (PR6): it cannot be bought as a drop-in

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


def _slot(instance: Doc, currency: str, rules: Sequence[Doc], warn: Warn | None) -> Doc | None:
    """The stored rule (with ``_id``) deciding the class's slot, or None."""
    readable: dict[str, Doc] = {}
    slots = []
    for row in rules:
        rule = row.get("rule")
        try:
            if not isinstance(rule, dict):
                raise ValueError("not an object")
            if rule.get("venueId") not in (None, instance["venueId"]):
                continue
            slots.append(to_slot_rule(row["_id"], rule))
            readable[row["_id"]] = {**rule, "_id": row["_id"]}
        except (KeyError, TypeError, ValueError) as error:
            if warn is not None:
                warn(f"pricing rule {row.get('_id')} ignored: {error}")
    if not slots:
        return None
    try:
        decided = evaluate_price(starts_at=instance["startsAt"], tz=instance["timezone"], currency=currency,
                                 default=Price(0, 0), member=True, slot_rules=slots)
    except ValueError as error:
        if warn is not None:
            warn(f"pricing rules ignored for {instance['_id']}: {error}")
        return None
    return readable[decided.rule_id] if decided.source == "time_slot" and decided.rule_id else None


def _first(levels: list[tuple[Source, str | None, int | None]]) -> tuple[Source, str | None, int]:
    for source, rule_id, value in levels:
        if value is not None:
            return source, rule_id, value
    raise AssertionError("the default level always sets a value")


def resolve(instance: Doc, currency: str, settings: Settings, rules: Sequence[Doc], warn: Warn | None = None) -> Quote:
    """The amount and credit cost of ``instance`` under ``rules`` (``pricing_rules`` rows) and the defaults."""
    slot = _slot(instance, currency, rules, warn) or {}
    credit_only = bool(instance.get("creditOnly"))
    template: Doc = {"priceCents": instance["priceCents"], "creditCost": instance.get("creditCost")} \
        if instance.get("priceCents") is not None or credit_only else {}
    amount = _first([
        ("instance", instance["_id"], instance.get("priceOverrideCents")),
        ("time_slot", slot.get("_id"), slot.get("priceCents")),
        ("template", instance.get("templateId"), template.get("priceCents")),
        ("default", None, settings.default_price_cents),
    ])
    credits = _first([
        ("instance", instance["_id"], instance.get("creditCostOverride")),
        ("time_slot", slot.get("_id"), slot.get("creditCost")),
        ("template", instance.get("templateId"), template.get("creditCost")),
        ("default", None, settings.default_credit_cost),
    ])
    return Quote(amount_cents=int(amount[2]), currency=currency, credit_cost=max(1, int(credits[2])),
                 source=amount[0], rule_id=amount[1], credit_source=credits[0],
                 dropin=not credit_only or instance.get("priceOverrideCents") is not None)


async def quote_for(ctx: Any, instance: Doc, business: Doc, settings: Settings) -> Quote:
    """``resolve`` with the business's rules read in this transaction (so the read is tracked)."""
    rules = await load_rules(ctx.db, instance["businessId"])
    return resolve(instance, business["currency"], settings, rules, ctx.log.warn)
