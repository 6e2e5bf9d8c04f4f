"""The booking platform's tables. Every row belongs to a business; the engine enforces it.

Instants are ``Timestamptz`` (UTC on the wire as ISO 8601); local calendar dates (``YYYY-MM-DD``) and wall
times (``HH:MM``) are text, which sorts correctly and never shifts with a zone.
"""

from __future__ import annotations

from piccolo.columns import JSONB, Boolean, ForeignKey, Integer, Timestamptz, Varchar

from backend import Id
from backend.schema import Document, Index, Tenancy, define_schema


class Businesses(Document, tablename="businesses", tenant_root=True, audited=True, soft_delete=True):
    name = Varchar()
    timezone = Varchar()
    currency = Varchar()
    settings = JSONB()


class Members(Document, tablename="members", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    subject = Varchar()
    role = Varchar()  # owner | admin | instructor | customer | dependent
    status = Varchar()  # invited | active
    name = Varchar(null=True)
    email = Varchar(null=True)
    suspended_until = Timestamptz(null=True)
    owner_id = Varchar(null=True)  # a dependant (no login): the member who books and answers for them (G1)
    birth_date = Varchar(null=True)  # local date, dependants only
    indexes = [Index("by_subject", "subject", unique=True), Index("by_role", "role"), Index("by_owner", "owner_id")]


class Venues(Document, tablename="venues", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    name = Varchar()
    timezone = Varchar()
    capacity = Integer(null=True)
    indexes = [Index("by_name", "name")]


class ClassTemplates(Document, tablename="class_templates", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    venue_id = ForeignKey(Venues, null=False)
    name = Varchar()
    start_date = Varchar()  # local date the series starts
    start_time = Varchar()  # local wall time HH:MM
    duration_minutes = Integer()
    rrule = Varchar()
    timezone = Varchar()
    capacity = Integer()
    instructor_id = ForeignKey(Members, null=True)
    price_cents = Integer(null=True)
    credit_cost = Integer()
    credit_only = Boolean(null=True)  # a credit cost without a drop-in price (PR6)
    status = Varchar()  # active | ended
    ends_after = Varchar(null=True)  # local date after which the series has ended
    generated_until = Varchar(null=True)  # local date the instances are materialised up to
    parent_template_id = Varchar(null=True)  # set on the later half of a "this and following" split
    indexes = [Index("by_venue", "venue_id"), Index("by_status", "status")]


class ClassInstances(Document, tablename="class_instances", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    template_id = ForeignKey(ClassTemplates, null=True)
    venue_id = ForeignKey(Venues, null=False)
    name = Varchar()
    starts_at = Timestamptz()
    ends_at = Timestamptz()
    local_date = Varchar()
    local_time = Varchar()
    timezone = Varchar()
    capacity = Integer()
    booked = Integer()
    waitlisted = Integer()
    status = Varchar()  # scheduled | cancelled
    cancel_reason = Varchar(null=True)
    price_cents = Integer(null=True)
    credit_cost = Integer()
    instructor_id = ForeignKey(Members, null=True)
    is_exception = Boolean()
    occurrence_key = Varchar(null=True)  # template_id|local_date|local_time: generation is idempotent
    price_override_cents = Integer(null=True)  # set on the instance alone: wins over every pricing rule
    credit_cost_override = Integer(null=True)
    overbook_reason = Varchar(null=True)  # why staff set capacity below the seats already taken (C4)
    closure_id = Varchar(null=True)  # the closure that cancelled it, so lifting the closure can restore it (T6)
    credit_only = Boolean(null=True)  # sold for credits only: no drop-in price is offered (PR6)
    indexes = [
        Index("by_start", "starts_at"),
        Index("by_venue_start", "venue_id", "starts_at"),
        Index("by_template_date", "template_id", "local_date"),
        Index("by_occurrence", "occurrence_key", unique=True),
    ]


class Closures(Document, tablename="closures", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    venue_id = ForeignKey(Venues, null=True)  # None: every venue of the business
    from_date = Varchar()
    to_date = Varchar()
    reason = Varchar()
    indexes = [Index("by_from", "from_date"), Index("by_to", "to_date")]


class PricingRules(Document, tablename="pricing_rules", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    rule = JSONB()  # one time-slot rule: weekdays, start, end, venueId?, priceCents, creditCost?, priority
    position = Integer()
    indexes = [Index("by_position", "position")]


class MembershipPlans(Document, tablename="membership_plans", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    name = Varchar()
    kind = Varchar()  # unlimited | limited
    classes_per_period = Integer(null=True)  # limited plans only
    period = Varchar()  # week | month, in the business's local calendar
    price_cents = Integer()
    venue_ids = JSONB(null=True)  # None: every venue
    indexes = [Index("by_name", "name")]


class Memberships(Document, tablename="memberships", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    member_id = ForeignKey(Members, null=False)
    plan_id = ForeignKey(MembershipPlans, null=False)
    starts_on = Varchar()  # local date, inclusive
    ends_on = Varchar(null=True)  # local date, inclusive; None: open-ended
    indexes = [Index("by_member_start", "member_id", "starts_on")]


class MembershipUsage(Document, tablename="membership_usage", tenant="business_id"):
    """Classes a membership paid for in one period: the row two bookings racing for the last use both write."""

    business_id = ForeignKey(Businesses, null=False)
    membership_id = ForeignKey(Memberships, null=False)
    period_start = Varchar()  # local date the period starts
    used = Integer()
    usage_key = Varchar()  # "membership|periodStart": one row per period
    indexes = [Index("by_usage_key", "usage_key", unique=True), Index("by_membership", "membership_id", "period_start")]


class Bookings(Document, tablename="bookings", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    instance_id = ForeignKey(ClassInstances, null=False)
    member_id = ForeignKey(Members, null=False)
    status = Varchar()  # confirmed | waitlisted | offered | cancelled | cancelled_by_studio | checked_in | no_show | withdrawn
    guest_name = Varchar(null=True)  # a guest's seat, booked and paid by member_id (G2)
    source = Varchar()  # self | staff | waitlist
    pay_with = Varchar(null=True)  # membership | credits | dropin
    membership_id = ForeignKey(Memberships, null=True)  # the membership that paid (payWith membership)
    usage_key = Varchar(null=True)  # the membership_usage period it counts in, so a release finds it
    credits_spent = Integer()
    amount_cents = Integer()
    policy = JSONB()  # cancellation policy snapshotted at booking time (P2)
    priority = Integer()  # waitlist tier; order is (priority, joinedAt, _id)
    joined_at = Timestamptz()
    starts_at = Timestamptz()  # copied from the instance, for overlap checks and "mine" ranges
    ends_at = Timestamptz()
    active_key = Varchar(null=True)  # "member|instance" while active: the unique backstop for C2
    cancelled_at = Timestamptz(null=True)
    late = Boolean()
    penalty = JSONB(null=True)
    checked_in_at = Timestamptz(null=True)
    offer_expires_at = Timestamptz(null=True)  # while "offered": the held seat is the member's until then (W5)
    reason = Varchar(null=True)  # why it ended: the caller's reason, or overlapping_booking / lapsed_at_start
    skip_reason = Varchar(null=True)  # why the last promotion passed this waiting entry over (W2)
    quote = JSONB(null=True)  # drop-in price quote (amountCents, currency, source, ruleId) stored at booking (PR1)
    indexes = [
        Index("by_instance_status", "instance_id", "status"),
        Index("by_member_start", "member_id", "starts_at"),
        Index("by_active_key", "active_key", unique=True),
        Index("by_status_start", "status", "starts_at"),
    ]


class CreditLots(Document, tablename="credit_lots", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    member_id = ForeignKey(Members, null=False)
    granted = Integer()
    remaining = Integer()
    expires_on = Varchar()  # local date
    expires_at = Timestamptz()  # start of the next local day: valid for a class iff starts_at < expires_at
    note = Varchar(null=True)
    indexes = [Index("by_member_expiry", "member_id", "expires_at")]


class CreditLedger(Document, tablename="credit_ledger", tenant="business_id", audited=True):
    business_id = ForeignKey(Businesses, null=False)
    member_id = ForeignKey(Members, null=False)
    lot_id = ForeignKey(CreditLots, null=True)
    booking_id = ForeignKey(Bookings, null=True)
    kind = Varchar()  # grant | consume | refund | expire | adjust | penalty
    amount = Integer()  # + adds credits, - spends them
    reason = Varchar(null=True)
    indexes = [Index("by_member", "member_id"), Index("by_booking", "booking_id")]


class Outbox(Document, tablename="outbox", tenant="business_id"):
    business_id = ForeignKey(Businesses, null=False)
    kind = Varchar()
    recipient_id = Varchar(null=True)
    payload = JSONB()
    status = Varchar()  # pending | sent (handed to the webhook endpoints)
    ordinal = Integer(null=True)  # position among the rows its transaction wrote
    indexes = [Index("by_status", "status")]


class Webhooks(Document, tablename="webhooks", tenant="business_id", audited=True, soft_delete=True):
    business_id = ForeignKey(Businesses, null=False)
    url = Varchar()
    events = JSONB()  # outbox kinds delivered to it; ["*"] for every kind
    secret = Varchar()  # signs every delivery (H3); shown once, when created
    next_seq = Integer()  # the sequence number the next event for this endpoint gets (H2)
    indexes = [Index("by_url", "url")]


class WebhookDeliveries(Document, tablename="webhook_deliveries", tenant="business_id"):
    """One outbox event for one endpoint: delivered in ``seq`` order, retried with backoff, then failed (H2-H4)."""

    business_id = ForeignKey(Businesses, null=False)
    webhook_id = ForeignKey(Webhooks, null=False)
    event_id = Varchar()  # the outbox row's id: stable across redeliveries, receivers dedupe on it
    kind = Varchar()
    body = JSONB()  # the event as sent
    seq = Integer()
    status = Varchar()  # pending | delivering | delivered | failed
    attempts = Integer()
    next_attempt_at = Timestamptz()
    first_attempt_at = Timestamptz(null=True)
    lease_until = Timestamptz(null=True)  # while delivering: another run may take it over after this
    last_status_code = Integer(null=True)
    last_error = Varchar(null=True)
    delivered_at = Timestamptz(null=True)
    indexes = [Index("by_webhook_seq", "webhook_id", "seq"), Index("by_webhook_status", "webhook_id", "status", "seq")]


class Counters(Document, tablename="counters"):
    """A tenant-free table for engine tests and benchmarks."""

    name = Varchar()
    value = Integer()
    indexes = [Index("by_name", "name")]


class BenchItems(Document, tablename="bench_items"):
    """A tenant-free table for the benchmarks in bench/: a bucket of numbered rows."""

    bucket = Varchar()
    n = Integer()
    v = Integer(null=True)  # not indexed: a patch of it can be a HOT update, like a booked count
    indexes = [Index("by_bucket", "bucket"), Index("by_bucket_n", "bucket", "n")]


class RefParents(Document, tablename="ref_parents", audited=True):
    """A tenant-free, hard-delete pair for engine tests: deleting a referenced parent must be refused."""

    name = Varchar()


class RefChildren(Document, tablename="ref_children"):
    parent_id = ForeignKey(RefParents, null=False)
    name = Varchar()
    tag = Varchar(null=True)  # a nullable indexed field: pagination and ranges over NULL keys
    indexes = [Index("by_tag", "tag")]


schema = define_schema(
    [Businesses, Members, Venues, ClassTemplates, ClassInstances, Closures, PricingRules, MembershipPlans,
     Memberships, MembershipUsage, Bookings, CreditLots, CreditLedger, Outbox, Webhooks, WebhookDeliveries, Counters, BenchItems, RefParents, RefChildren],
    tenancy=Tenancy(),
)

# Id types for function signatures: ``venue_id: VenueId`` rejects ids of any other table.
BusinessId = Id["businesses"]
MemberId = Id["members"]
VenueId = Id["venues"]
TemplateId = Id["class_templates"]
InstanceId = Id["class_instances"]
ClosureId = Id["closures"]
BookingId = Id["bookings"]
LotId = Id["credit_lots"]
PlanId = Id["membership_plans"]
MembershipId = Id["memberships"]
WebhookId = Id["webhooks"]
DeliveryId = Id["webhook_deliveries"]
