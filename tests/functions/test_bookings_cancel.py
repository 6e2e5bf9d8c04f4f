"""Cancelling: early refunds to the same lot, late penalties, the snapshotted policy, promotion rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from backend import AppError, NotFound
from backend.testing import ManualClock, TestBackend
from tests.support.booking import UTC, World, new_world

NOW = dt.datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)


@pytest.fixture(scope="module")
async def btb() -> AsyncIterator[TestBackend]:
    async with TestBackend(clock=ManualClock(NOW), run_scheduler=False) as harness:
        yield harness


@pytest.fixture
def clock(btb: TestBackend) -> ManualClock:
    assert isinstance(btb.clock, ManualClock)
    btb.clock.set(NOW)
    return btb.clock


@pytest.fixture
async def world(btb: TestBackend, clock: ManualClock) -> World:
    return await new_world(btb)


async def seat(world: World, instance: str, *names: str, clock: ManualClock | None = None) -> dict[str, str]:
    """Members with 3 credits each, booked into ``instance`` in order (one second apart)."""
    ids = {}
    for name in names:
        await world.member(name)
        await world.grant(name, 3, "2030-12-31")
        ids[name] = (await world.book(name, instance))["bookingId"]
        if clock is not None:
            clock.advance(seconds=1)
    return ids


async def test_early_cancel_refunds_the_same_lot_and_frees_the_seat(world: World) -> None:
    instance = await world.instance(CLASS)
    await world.member("ann")
    soon = await world.grant("ann", 1, "2030-06-30")
    await world.grant("ann", 1, "2030-12-31")
    booking = (await world.book("ann", instance))["bookingId"]
    lots = {lot["lotId"]: lot["remaining"] for lot in (await world.balance("ann"))["lots"]}
    assert lots[soon["lotId"]] == 0  # the soonest-expiring lot pays first (F3)
    result = await world.cancel("ann", booking, reason="sick")
    assert (result["status"], result["late"], result["penalty"]) == ("cancelled", False, None)
    assert result["refund"] == {"credits": 1, "expiredCredits": 0}
    lots = {lot["lotId"]: lot["remaining"] for lot in (await world.balance("ann"))["lots"]}
    assert lots[soon["lotId"]] == 1  # back to the very lot it came from
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 2
    row = await world.booking_row(booking)
    assert (row["status"], row["active_key"], row["reason"]) == ("cancelled", None, "sick")
    assert (await world.instance_row(instance))["booked"] == 0
    kinds = [r["kind"] for r in await world.tb.sql(
        "SELECT kind FROM credit_ledger WHERE booking_id = $1 ORDER BY _creation_time, kind", booking)]
    assert sorted(kinds) == ["consume", "refund"]
    audited = await world.tb.sql("SELECT operation FROM audit_log WHERE document_id = $1", booking)
    assert sorted(r["operation"] for r in audited) == ["insert", "update"]
    ledger_audit = await world.tb.sql(
        "SELECT count(*) AS n FROM audit_log a JOIN credit_ledger l ON a.document_id = l._id "
        "WHERE l.booking_id = $1 AND a.operation = 'insert'", booking)
    assert ledger_audit[0]["n"] == 2  # the consume and the refund
    assert len(await world.outbox("booking_cancelled")) == 1
    again = await world.book("ann", instance)  # the member may book again after cancelling
    assert again["status"] == "confirmed"


async def test_late_cancel_forfeits_the_credit(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")
    clock.set(CLASS - dt.timedelta(minutes=30))  # P8: always allowed, even 30 min before
    result = await world.cancel("ann", ids["ann"])
    assert result["late"] is True and result["refund"] is None
    assert result["penalty"] == {"kind": "late_cancel", "forfeit": "credits", "credits": 1}
    assert await world.ledger_sum("ann") == await world.lots_sum("ann") == 2
    assert (await world.instance_row(instance))["booked"] == 0


async def test_members_cannot_cancel_once_the_class_is_over(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")
    clock.set(CLASS + dt.timedelta(hours=2))
    with pytest.raises(AppError) as over:
        await world.cancel("ann", ids["ann"])
    assert over.value.data["reason"] == "class_ended"


async def test_a_seat_freed_without_promotion_goes_to_the_queue_first(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", clock=clock)
    await world.internal("testing_fixtures:patch_instance", {"instanceId": instance, "fields": {"capacity": 2}})
    await world.member("cat")
    await world.grant("cat", 1, "2030-12-31")
    late_comer = await world.book("cat", instance)  # bob is promoted first; cat joins the queue
    assert late_comer["status"] == "waitlisted"
    assert (await world.booking_row(ids["bob"]))["status"] == "confirmed"


async def test_staff_may_waive_a_late_penalty_customers_may_not(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")
    clock.set(CLASS - dt.timedelta(hours=1))
    with pytest.raises(Exception, match="only staff"):
        await world.cancel("ann", ids["ann"], waivePenalty=True)
    result = await world.cancel("owner", ids["ann"], waivePenalty=True, reason="studio goodwill")
    assert result["late"] is True and result["penalty"] is None and result["refund"]["credits"] == 1


async def test_a_moved_class_may_be_left_free(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")
    await world.tb.sql("UPDATE bookings SET policy = policy || '{\"freeCancel\": true}' WHERE _id = $1", ids["ann"])
    clock.set(CLASS - dt.timedelta(hours=1))
    result = await world.cancel("ann", ids["ann"])
    assert result["late"] is True and result["penalty"] is None and result["refund"]["credits"] == 1


async def test_policy_is_snapshotted_at_booking_time(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")  # booked under the default 12 h window
    await world.settings(lateCancelMinutes=24 * 60)
    clock.set(CLASS - dt.timedelta(hours=20))  # late under 24 h, early under the 12 h it was booked with
    assert (await world.cancel("ann", ids["ann"]))["late"] is False


async def test_late_window_uses_absolute_time_across_spring_forward(btb: TestBackend, clock: ManualClock) -> None:
    world = await new_world(btb, timezone="Europe/London")
    # 2030-03-31 09:00 BST = 08:00Z; 12 h before in absolute time is 2030-03-30T20:00Z (P1, B1)
    start = dt.datetime(2030, 3, 31, 8, 0, tzinfo=UTC)
    clock.set(dt.datetime(2030, 3, 25, 9, 0, tzinfo=UTC))
    instance = await world.instance(start, timezone="Europe/London")
    ids = await seat(world, instance, "ann", "bob")
    clock.set(dt.datetime(2030, 3, 30, 20, 30, tzinfo=UTC))  # wall-clock arithmetic would say "early"
    assert (await world.cancel("ann", ids["ann"]))["late"] is True
    clock.set(dt.datetime(2030, 3, 30, 19, 59, tzinfo=UTC))
    assert (await world.cancel("bob", ids["bob"]))["late"] is False


async def test_cancel_promotes_the_head_of_the_waitlist(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", "cat", clock=clock)
    result = await world.cancel("ann", ids["ann"])
    assert result["promotedBookingIds"] == [ids["bob"]]
    bob = await world.booking_row(ids["bob"])
    assert (bob["status"], bob["source"], bob["credits_spent"]) == ("confirmed", "waitlist", 1)
    assert (await world.balance("bob"))["available"] == 2
    roster = await world.roster(instance)
    assert [(w["bookingId"], w["position"]) for w in roster["waitlist"]] == [(ids["cat"], 1)]
    assert (roster["booked"], roster["waitlisted"]) == (1, 1)
    promoted = await world.outbox("waitlist_promoted")
    assert [o["recipient_id"] for o in promoted] == [world.members["bob"]]
    audited = await world.tb.sql("SELECT operation, after FROM audit_log WHERE document_id = $1", ids["bob"])
    assert any(r["operation"] == "update" and "confirmed" in str(r["after"]) for r in audited), audited


async def test_leaving_the_waitlist_moves_everyone_up(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", "cat", clock=clock)
    result = await world.cancel("bob", ids["bob"])
    assert (result["status"], result["late"], result["promotedBookingIds"]) == ("cancelled", False, [])
    roster = await world.roster(instance)
    assert [(w["bookingId"], w["position"]) for w in roster["waitlist"]] == [(ids["cat"], 1)]
    assert (await world.instance_row(instance))["waitlisted"] == 1


async def test_ineligible_head_is_skipped_and_keeps_its_place(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", "cat", clock=clock)
    await world.tb.sql("UPDATE credit_lots SET remaining = 0 WHERE member_id = $1", world.members["bob"])
    result = await world.cancel("ann", ids["ann"])
    assert result["promotedBookingIds"] == [ids["cat"]]
    roster = await world.roster(instance)
    assert [(w["bookingId"], w["position"], w.get("skipReason")) for w in roster["waitlist"]] == [
        (ids["bob"], 1, "no_entitlement")]
    assert len(await world.outbox("promotion_skipped")) == 1


async def test_capacity_raise_promotes_one_per_seat(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", "cat", "dan", "eve", clock=clock)
    await world.internal("testing_fixtures:patch_instance", {"instanceId": instance, "fields": {"capacity": 4}})
    await world.cancel("ann", ids["ann"])  # one seat released on top of the three added
    row = await world.instance_row(instance)
    assert (row["booked"], row["waitlisted"]) == (4, 0)
    assert {a["bookingId"] for a in (await world.roster(instance))["attendees"]} == {
        ids["bob"], ids["cat"], ids["dan"], ids["eve"]}


async def test_no_auto_promotion_after_the_cutoff_waiting_members_may_claim(world: World, clock: ManualClock) -> None:
    await world.settings(offerMinutes=0)  # open booking rather than offers (W3)
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", clock=clock)
    clock.set(CLASS - dt.timedelta(hours=13))  # inside 12 h late window + 2 h grace (W4)
    result = await world.cancel("ann", ids["ann"])
    assert result["late"] is False and result["promotedBookingIds"] == []
    assert [o["recipient_id"] for o in await world.outbox("seat_available")] == [world.members["bob"]]
    claimed = await world.book("bob", instance)
    assert claimed == {"bookingId": ids["bob"], "status": "confirmed", "payWith": "credits"}
    assert (await world.instance_row(instance))["booked"] == 1


async def test_promotion_before_the_cutoff_leaves_a_free_cancel_grace(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", clock=clock)
    clock.set(CLASS - dt.timedelta(hours=15))
    assert (await world.cancel("ann", ids["ann"]))["promotedBookingIds"] == [ids["bob"]]
    clock.set(CLASS - dt.timedelta(hours=12, minutes=1))  # still before the 12 h window: free to cancel
    assert (await world.cancel("bob", ids["bob"]))["late"] is False


async def test_promotion_withdraws_overlapping_waitlist_entries(world: World, clock: ManualClock) -> None:
    first = await world.instance(CLASS, capacity=1)
    second = await world.instance(CLASS + dt.timedelta(minutes=15), capacity=1)
    ids = await seat(world, first, "ann", clock=clock)
    other = await seat(world, second, "bob", clock=clock)
    await world.member("cat")
    await world.grant("cat", 3, "2030-12-31")
    cat_first = (await world.book("cat", first))["bookingId"]
    cat_second = (await world.book("cat", second))["bookingId"]
    await world.cancel("ann", ids["ann"])
    assert (await world.booking_row(cat_first))["status"] == "confirmed"
    withdrawn = await world.booking_row(cat_second)
    assert (withdrawn["status"], withdrawn["reason"]) == ("withdrawn", "overlapping_booking")
    assert (await world.instance_row(second))["waitlisted"] == 0
    assert await world.ledger_sum("cat") == await world.lots_sum("cat") == 2  # one charge only
    assert other


async def test_dropin_cancellations_refund_or_keep_the_payment(world: World, clock: ManualClock) -> None:
    early = await world.instance(CLASS, priceCents=2000)
    late = await world.instance(CLASS + dt.timedelta(hours=3), priceCents=2000)
    await world.member("ann")
    first = (await world.book("ann", early, payWith="dropin"))["bookingId"]
    second = (await world.book("ann", late, payWith="dropin"))["bookingId"]
    assert (await world.cancel("ann", first))["refund"] == {"amountCents": 2000}
    assert [o["payload"]["amountCents"] for o in await world.outbox("refund_payment")] == [2000]
    clock.set(CLASS)
    result = await world.cancel("ann", second)
    assert result["penalty"] == {"kind": "late_cancel", "forfeit": "payment", "amountCents": 2000}


async def test_only_the_member_or_staff_can_cancel(world: World) -> None:
    instance = await world.instance(CLASS)
    ids = await seat(world, instance, "ann")
    await world.member("bob")
    with pytest.raises(NotFound):
        await world.cancel("bob", ids["ann"])
    other = await new_world(world.tb)
    with pytest.raises(NotFound):
        await world.tb.mutation("bookings:cancel", {"bookingId": ids["ann"]}, as_user=other.owner)
    await world.cancel("ann", ids["ann"])
    with pytest.raises(AppError) as error:
        await world.cancel("ann", ids["ann"])
    assert error.value.data["code"] == "not_cancellable"


async def test_studio_cancellation_refunds_everyone_without_penalty(world: World, clock: ManualClock) -> None:
    instance = await world.instance(CLASS, capacity=1)
    ids = await seat(world, instance, "ann", "bob", clock=clock)
    clock.set(CLASS - dt.timedelta(hours=1))  # inside the late window: still no penalty (C7, P7)
    ended = await world.internal("bookings:cancel_instance_for_studio", {"instanceId": instance, "reason": "flood"})
    assert ended == 2
    for name in ("ann", "bob"):
        row = await world.booking_row(ids[name])
        assert (row["status"], row["penalty"], row["active_key"]) == ("cancelled_by_studio", None, None)
        assert await world.ledger_sum(name) == await world.lots_sum(name) == 3
    row = await world.instance_row(instance)
    assert (row["status"], row["booked"], row["waitlisted"]) == ("cancelled", 0, 0)
    assert len(await world.outbox("class_cancelled")) == 2
