"""Webhooks: a business's endpoints receive its outbox events, signed, at least once, in order (H1-H5).

Delivery runs outside any transaction in ``deliver`` (an action, every few seconds from ``crons.py``):

1. ``dispatch`` turns each business's pending outbox rows into one delivery per subscribed endpoint, each
   with the endpoint's next sequence number, and marks the rows sent (one transaction per pass);
2. ``claim`` takes, per endpoint, the lowest-numbered delivery not yet finished when it is due, leased so
   no other run sends it meanwhile; a later delivery never goes out before an earlier one has finished;
3. the action POSTs them (``functions/_webhooks/sender.py``) and ``record`` stores each outcome: delivered,
   or the next attempt after an exponential backoff, or failed once a day has passed since the first try.

A run that dies between sending and recording leaves the lease to expire and the delivery is sent again:
at least once, never lost. ``replay`` puts failed deliveries back in the queue.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import json
import re
import time
from typing import Any, Literal

import msgspec

from backend import ActionCtx, MutationCtx, QueryCtx, internal_action, internal_mutation, mutation, query
from functions._booking.model import collect, plain
from functions._shared.errors import invalid, not_found
from functions._shared.roles import STAFF
from functions._webhooks import config, schedule, signing
from functions._webhooks.sender import post
from functions._webhooks.urls import UrlProblem, check_shape
from schema import BusinessId, DeliveryId, WebhookId

Doc = dict[str, Any]
MAX_EVENTS = 50
MAX_WEBHOOKS = 20
MAX_SECRET = 200
MIN_SECRET = 16
_EVENT = re.compile(r"^(\*|[a-z][a-z0-9_]{0,63})$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Created(msgspec.Struct, rename="camel"):
    """The new endpoint and its signing secret, shown only now."""

    webhook_id: str
    secret: str


class WebhookView(msgspec.Struct, rename="camel", kw_only=True):
    webhook_id: str
    url: str
    events: builtins.list[str]
    secret_hint: str  # the secret's last four characters, to tell secrets apart


class DeliveryView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    delivery_id: str
    event_id: str
    kind: str
    seq: int
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    first_attempt_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None


def _events(events: builtins.list[str]) -> builtins.list[str]:
    if not 1 <= len(events) <= MAX_EVENTS:
        raise invalid("events", f"must list between 1 and {MAX_EVENTS} event kinds (or \"*\" for all)",
                      min=1, max=MAX_EVENTS)
    for i, kind in enumerate(events):
        if not _EVENT.match(kind):
            raise invalid(f"events[{i}]", "must be an event kind such as booking_confirmed, or \"*\"")
    return sorted(set(events))


@mutation(tenant="business_id", roles=STAFF)
async def create(
    ctx: MutationCtx, business_id: BusinessId, url: str, events: builtins.list[str], secret: str | None = None
) -> Created:
    """Send the business's events of the given kinds (``["*"]``: all) to ``url`` (http or https; addresses
    inside the server's network are refused, H1). Without ``secret`` one is generated; it signs every
    delivery (H3) and is returned only here."""
    try:
        check_shape(url)
    except UrlProblem as problem:
        raise invalid("url", str(problem)) from None
    kinds = _events(events)
    if secret is None:
        secret = signing.new_secret()
    elif not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise invalid("secret", f"must be between {MIN_SECRET} and {MAX_SECRET} characters", min=MIN_SECRET,
                      max=MAX_SECRET)
    existing = await ctx.db.query("webhooks").take(MAX_WEBHOOKS)
    if len(existing) >= MAX_WEBHOOKS:
        raise invalid("url", f"a business has at most {MAX_WEBHOOKS} webhooks", max=MAX_WEBHOOKS)
    webhook_id = await ctx.db.insert("webhooks", {"url": url, "events": kinds, "secret": secret, "nextSeq": 1})
    return Created(webhook_id, secret)


@query(tenant="business_id", roles=STAFF)
async def list(ctx: QueryCtx, business_id: BusinessId) -> builtins.list[WebhookView]:
    """The business's endpoints, oldest first (secrets are never shown again)."""
    rows = await ctx.db.query("webhooks").take(MAX_WEBHOOKS)
    return [WebhookView(webhook_id=r["_id"], url=r["url"], events=builtins.list(r["events"]),
                        secret_hint="…" + str(r["secret"])[-4:]) for r in rows]


@mutation(tenant="webhook_id", roles=STAFF)
async def remove(ctx: MutationCtx, webhook_id: WebhookId) -> None:
    """Stop sending to an endpoint; its delivery history stays readable."""
    if await ctx.db.get(webhook_id) is None:
        raise not_found("webhookId")
    await ctx.db.delete(webhook_id)


@query(tenant="webhook_id", roles=STAFF)
async def deliveries(
    ctx: QueryCtx,
    webhook_id: WebhookId,
    status: Literal["pending", "delivering", "delivered", "failed"] | None = None,
    limit: int = 50,
) -> builtins.list[DeliveryView]:
    """The endpoint's deliveries, newest first (at most ``limit``, up to 200), optionally of one status."""
    if not 1 <= limit <= 200:
        raise invalid("limit", "must be between 1 and 200", min=1, max=200)
    if await ctx.db.get(webhook_id, include_deleted=True) is None:
        raise not_found("webhookId")
    if status is None:
        query_ = ctx.db.query("webhook_deliveries").with_index("by_webhook_seq", lambda q: q.eq("webhookId", webhook_id))
    else:
        query_ = ctx.db.query("webhook_deliveries").with_index(
            "by_webhook_status", lambda q: q.eq("webhookId", webhook_id).eq("status", status))
    rows = await query_.order("desc").take(limit)
    return [_view(r) for r in rows]


def _view(row: Doc) -> DeliveryView:
    return DeliveryView(
        delivery_id=row["_id"], event_id=row["eventId"], kind=row["kind"], seq=row["seq"], status=row["status"],
        attempts=row["attempts"], next_attempt_at=row["nextAttemptAt"], first_attempt_at=row.get("firstAttemptAt"),
        delivered_at=row.get("deliveredAt"), last_status_code=row.get("lastStatusCode"),
        last_error=row.get("lastError"),
    )


@mutation(tenant="webhook_id", roles=STAFF)
async def replay(ctx: MutationCtx, webhook_id: WebhookId, delivery_ids: builtins.list[DeliveryId] | None = None) -> int:
    """Queue failed deliveries again (all of the endpoint's, or the ones named), each with a fresh day of
    retries; they keep their event id and sequence number. Returns how many were queued."""
    if await ctx.db.get(webhook_id) is None:
        raise not_found("webhookId")
    if delivery_ids is None:
        rows = await collect(ctx.db.query("webhook_deliveries").with_index(
            "by_webhook_status", lambda q: q.eq("webhookId", webhook_id).eq("status", "failed")))
    else:
        rows = []
        for i, delivery_id in enumerate(delivery_ids[:500]):
            row = await ctx.db.get(delivery_id)
            if row is None or row["webhookId"] != webhook_id:
                raise not_found(f"deliveryIds[{i}]")
            if row["status"] != "failed":
                raise invalid(f"deliveryIds[{i}]", f"is {row['status']}, not failed", status=row["status"])
            rows.append(row)
    for row in rows:
        await ctx.db.patch(row["_id"], {"status": "pending", "attempts": 0, "firstAttemptAt": None,
                                        "nextAttemptAt": ctx.now, "leaseUntil": None})
    return len(rows)


# -- delivery -----------------------------------------------------------------------------------------------


def _wants(webhook: Doc, kind: str) -> bool:
    events = webhook.get("events")
    return isinstance(events, builtins.list) and ("*" in events or kind in events)


@internal_mutation(cross_tenant=True)
async def dispatch(ctx: MutationCtx) -> int:
    """Fan pending outbox rows out to the endpoints that want them (H2); returns deliveries created.

    Only businesses with an endpoint are visited; an endpoint gets only events created after it.
    """
    by_business: dict[str, builtins.list[Doc]] = {}
    for webhook in await ctx.db.query("webhooks").collect():
        by_business.setdefault(webhook["businessId"], []).append(webhook)
    created = 0
    for business_id, webhooks in sorted(by_business.items()):
        rows = await ctx.db.query("outbox").with_index(
            "by_status", lambda q, b=business_id: q.eq("businessId", b).eq("status", "pending")
        ).take(config.batch_size())
        rows.sort(key=lambda r: (r["_creationTime"], r.get("ordinal") or 0))  # commit order, then write order
        for row in rows:
            for webhook in webhooks:
                if row["_creationTime"] < webhook["_creationTime"] or not _wants(webhook, row["kind"]):
                    continue
                seq = webhook["nextSeq"]
                webhook["nextSeq"] = seq + 1
                body = {
                    "id": row["_id"], "type": row["kind"], "businessId": business_id, "sequence": seq,
                    "createdAt": plain(_EPOCH + dt.timedelta(milliseconds=row["_creationTime"])),
                    "recipientId": row.get("recipientId"), "data": row.get("payload") or {},
                }
                await ctx.db.insert("webhook_deliveries", {
                    "businessId": business_id, "webhookId": webhook["_id"], "eventId": row["_id"],
                    "kind": row["kind"], "body": body, "seq": seq, "status": "pending", "attempts": 0,
                    "nextAttemptAt": ctx.now,
                })
                created += 1
            await ctx.db.patch(row["_id"], {"status": "sent"})
        for webhook in webhooks:
            await ctx.db.patch(webhook["_id"], {"nextSeq": webhook["nextSeq"]})
    return created


class Claimed(msgspec.Struct, rename="camel"):
    delivery_id: str
    url: str
    secret: str
    event_id: str
    body: dict[str, Any]


async def _head(ctx: MutationCtx, webhook: Doc) -> Doc | None:
    """The endpoint's next delivery to attempt now, or None (nothing due, or one is still in flight)."""
    webhook_id = webhook["_id"]
    flying = await ctx.db.query("webhook_deliveries").with_index(
        "by_webhook_status", lambda q: q.eq("businessId", webhook["businessId"]).eq("webhookId", webhook_id).eq("status", "delivering")
    ).first()
    if flying is not None:
        return flying if flying["leaseUntil"] is None or flying["leaseUntil"] <= ctx.now else None
    pending: Doc | None = await ctx.db.query("webhook_deliveries").with_index(
        "by_webhook_status", lambda q: q.eq("businessId", webhook["businessId"]).eq("webhookId", webhook_id).eq("status", "pending")
    ).first()
    if pending is None or pending["nextAttemptAt"] > ctx.now:
        return None  # the head is waiting for its retry: later deliveries wait behind it (in order)
    return pending


@internal_mutation(cross_tenant=True)
async def claim(ctx: MutationCtx) -> builtins.list[Claimed]:
    """At most one due delivery per live endpoint, leased to the caller (H2)."""
    claimed: builtins.list[Claimed] = []
    for webhook in await ctx.db.query("webhooks").collect():
        head = await _head(ctx, webhook)
        if head is None:
            continue
        await ctx.db.patch(head["_id"], {
            "status": "delivering", "attempts": head["attempts"] + 1, "leaseUntil": schedule.lease_until(ctx.now),
            "firstAttemptAt": head.get("firstAttemptAt") or ctx.now,
        })
        claimed.append(Claimed(head["_id"], webhook["url"], webhook["secret"], head["eventId"], head["body"]))
    return claimed


class Outcome(msgspec.Struct, rename="camel"):
    delivery_id: str
    ok: bool
    status_code: int | None = None
    error: str | None = None


@internal_mutation(cross_tenant=True)
async def record(ctx: MutationCtx, outcomes: builtins.list[Outcome]) -> dict[str, int]:
    """Store attempts: delivered, retried later with backoff, or failed after the retry window (H4)."""
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    for outcome in outcomes:
        row = await ctx.db.get(outcome.delivery_id)
        if row is None or row["status"] != "delivering":
            continue  # another run took it over after the lease ran out; its outcome counts
        common = {"leaseUntil": None, "lastStatusCode": outcome.status_code, "lastError": outcome.error}
        if outcome.ok:
            await ctx.db.patch(row["_id"], {**common, "status": "delivered", "deliveredAt": ctx.now})
            counts["delivered"] += 1
            continue
        again = schedule.next_attempt(row["attempts"], row["firstAttemptAt"] or ctx.now, ctx.now)
        if again is None:
            await ctx.db.patch(row["_id"], {**common, "status": "failed"})
            counts["failed"] += 1
        else:
            await ctx.db.patch(row["_id"], {**common, "status": "pending", "nextAttemptAt": again})
            counts["retrying"] += 1
    return counts


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


async def _send(item: Claimed) -> Outcome:
    body = _encode(item.body)
    stamp = int(time.time())  # the receiver compares it with its own clock, so it is the sending time
    attempt = await post(item.url, body, signing.headers(item.secret, item.event_id, stamp, body))
    return Outcome(item.delivery_id, attempt.ok, attempt.status_code, attempt.error)


@internal_action
async def deliver(ctx: ActionCtx) -> dict[str, int]:
    """Fan out new events, then send what is due, endpoint by endpoint in order, until nothing more is due
    now (at most ``max_rounds`` deliveries per endpoint). Endpoints are sent to side by side."""
    totals = {"dispatched": await ctx.run_mutation(dispatch, {}), "delivered": 0, "retrying": 0, "failed": 0}
    for _ in range(config.max_rounds()):
        batch = [msgspec.convert(c, Claimed) for c in await ctx.run_mutation(claim, {})]
        if not batch:
            break
        outcomes = await asyncio.gather(*(_send(item) for item in batch))
        counts = await ctx.run_mutation(record, {"outcomes": [msgspec.to_builtins(o) for o in outcomes]})
        for key in ("delivered", "retrying", "failed"):
            totals[key] += counts[key]
        if not counts["delivered"]:
            break  # nothing moved forward: what is left waits for its retry time
    return totals
