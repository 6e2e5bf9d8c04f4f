"""The booking web app in Chromium: live seats and rosters across browsers, optimistic booking and rollback.

Each test signs demo people in through the dev server (``/?as=<subject>``), each in a browser context of its
own, so every page has its own WebSocket to the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backend.testing import TestBackend
from tests.support.browser import member_id, new_page, screenshot, track_errors, week_classes

expect = pytest.importorskip("playwright.async_api", reason="Playwright is not installed").expect

ZONE = ZoneInfo("Europe/London")
OPENS_DAYS_BEFORE = 5  # the demo studio's booking window (backend.dashboard.demo.seed)
LIVE_MS = 1000


def _week_days() -> set[str]:
    now = dt.datetime.now(dt.UTC)
    return {(now + dt.timedelta(days=i)).astimezone(ZONE).date().isoformat() for i in range(7)}


def _starts(c: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(c["startsAt"].replace("Z", "+00:00"))


async def _open_classes(tb: TestBackend) -> list[dict[str, Any]]:
    """Classes shown this week whose booking window is open now, with an hour to spare either side."""
    now = dt.datetime.now(dt.UTC)
    days = _week_days()
    return [c for c in await week_classes(tb)
            if c["localDate"] in days and c["status"] == "scheduled"
            and now + dt.timedelta(hours=1) < _starts(c) < now + dt.timedelta(days=OPENS_DAYS_BEFORE, hours=-1)]


def _card(page: Any, instance_id: str) -> Any:
    return page.locator(f'li.class-card[data-instance="{instance_id}"]')


async def test_a_booking_shows_live_on_another_customer_and_the_front_desk(app: TestBackend, browser: Any) -> None:
    chosen = next(c for c in await _open_classes(app) if c["booked"] == 0)
    instance, capacity = chosen["_id"], chosen["capacity"]
    casey = await new_page(browser, app.url + "/?as=demo-casey")
    jordan = await new_page(browser, app.url + "/?as=demo-jordan")
    desk = await new_page(browser, app.url + "/?as=demo-sam&view=staff")
    await expect(_card(jordan, instance).get_by_test_id("seats")).to_have_text(f"{capacity} of {capacity} seats left")
    await desk.locator("#class-picker").select_option(instance)
    await expect(desk.get_by_test_id("roster-summary")).to_have_text(f"0 of {capacity} booked · 0 waiting")

    await _card(casey, instance).get_by_role("button", name=f"Book {chosen['name']}").click()
    await expect(casey.locator("#notice")).to_contain_text("Booked:")  # the server has answered casey
    # Casey's answer arrives after the commit's snapshot (read your writes): the others follow at once.
    await expect(_card(jordan, instance).get_by_test_id("seats")).to_have_text(
        f"{capacity - 1} of {capacity} seats left", timeout=LIVE_MS)
    await expect(desk.get_by_test_id("roster-summary")).to_have_text(
        f"1 of {capacity} booked · 0 waiting", timeout=LIVE_MS)
    await expect(desk.get_by_test_id("attendees")).to_contain_text("Casey Lee", timeout=LIVE_MS)
    await expect(casey.get_by_test_id("credit-balance")).to_have_text(str(10 - chosen["creditCost"]))

    # The front desk checks Casey in once check-in opens; before that the refusal is shown, not swallowed.
    await desk.get_by_role("button", name="Check in Casey Lee").click()
    await expect(desk.locator("#notice")).to_contain_text("Check-in opens ")
    await screenshot(casey, "web-customer")
    await screenshot(desk, "web-staff")
    for page in (casey, jordan, desk):
        assert page.errors == []
        await page.context.close()


class _HeldMutations:
    """Sits between one page and the server's WebSocket, and can hold the page's Mutation messages back.

    While a mutation is held the server has not even received it, so whatever the page shows then is its
    own optimistic guess.
    """

    def __init__(self) -> None:
        self.hold = False
        self.held: list[str | bytes] = []
        self._server: Any = None

    def route(self, ws: Any) -> None:
        self._server = ws.connect_to_server()
        ws.on_message(self._from_page)

    def _from_page(self, message: str | bytes) -> None:
        if self.hold and json.loads(message).get("type") == "Mutation":
            self.held.append(message)
        else:
            self._server.send(message)

    def release(self) -> None:
        self.hold = False
        for message in self.held:
            self._server.send(message)
        self.held.clear()


async def test_optimistic_booking_shows_before_the_server_answers_and_a_refusal_rolls_back(
    app: TestBackend, browser: Any
) -> None:
    casey_member = await member_id(app, "demo-casey")
    open_now = [c for c in await _open_classes(app) if c["booked"] < c["capacity"]]
    chosen = open_now[-1]
    now = dt.datetime.now(dt.UTC)
    later = [c for c in await week_classes(app) if c["localDate"] in _week_days() and c["status"] == "scheduled"
             and _starts(c) > now + dt.timedelta(days=OPENS_DAYS_BEFORE, hours=1)]
    assert later, "the week's last days must lie beyond the booking window"
    closed = later[-1]

    wire = _HeldMutations()
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.route_web_socket("**/api/*/sync", wire.route)
    page = await context.new_page()
    track_errors(page)
    await page.goto(app.url + "/?as=demo-casey")
    seats = _card(page, chosen["_id"]).get_by_test_id("seats")
    left = chosen["capacity"] - chosen["booked"]
    await expect(seats).to_have_text(f"{left} of {chosen['capacity']} seats left")

    wire.hold = True
    await _card(page, chosen["_id"]).get_by_role("button", name=f"Book {chosen['name']}").click()
    await expect(seats).to_have_text(f"{left - 1} of {chosen['capacity']} seats left")
    await expect(_card(page, chosen["_id"]).get_by_text("Booked")).to_be_visible()
    assert len(wire.held) == 1  # the seat moved while the mutation had not left the browser
    stored = await app.sql("SELECT count(*) AS n FROM bookings WHERE instance_id = $1 AND member_id = $2",
                           chosen["_id"], casey_member)
    assert stored[0]["n"] == 0
    wire.release()
    await expect(page.locator("#notice")).to_contain_text("Booked:")
    await expect(seats).to_have_text(f"{left - 1} of {chosen['capacity']} seats left")
    stored = await app.sql("SELECT status FROM bookings WHERE instance_id = $1 AND member_id = $2",
                           chosen["_id"], casey_member)
    assert [r["status"] for r in stored] == ["confirmed"]

    closed_seats = _card(page, closed["_id"]).get_by_test_id("seats")
    closed_left = closed["capacity"] - closed["booked"]
    await expect(closed_seats).to_have_text(f"{closed_left} of {closed['capacity']} seats left")
    wire.hold = True
    await _card(page, closed["_id"]).get_by_role("button", name=f"Book {closed['name']}").click()
    await expect(closed_seats).to_have_text(f"{closed_left - 1} of {closed['capacity']} seats left")
    assert len(wire.held) == 1
    wire.release()
    # Refused: the guess is rolled back and the card says why, in the studio's local time.
    await expect(closed_seats).to_have_text(f"{closed_left} of {closed['capacity']} seats left")
    refusal = _card(page, closed["_id"]).get_by_test_id("refusal")
    await expect(refusal).to_contain_text("Booking opens ")
    opens = _starts(closed).astimezone(ZONE) - dt.timedelta(days=OPENS_DAYS_BEFORE)
    await expect(refusal).to_have_text(f"Booking opens {opens:%a %H:%M}")
    await expect(_card(page, closed["_id"]).get_by_role("button", name=f"Book {closed['name']}")).to_be_visible()
    await asyncio.sleep(0.3)  # nothing late may flip it back
    await expect(closed_seats).to_have_text(f"{closed_left} of {closed['capacity']} seats left")
    await screenshot(page, "web-refusal")
    assert page.errors == []
    await context.close()


async def test_waitlist_positions_move_live(app: TestBackend, browser: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    # Far enough ahead that a freed seat goes to the waitlist at once (the promotion cutoff is ~14 h).
    chosen = next(c for c in await _open_classes(app)
                  if c["booked"] == 0 and c["waitlisted"] == 0 and _starts(c) > now + dt.timedelta(hours=16))
    rows = await app.sql("SELECT business_id FROM class_instances WHERE _id = $1", chosen["_id"])
    business = rows[0]["business_id"]
    seated: list[str] = []
    for n in range(chosen["capacity"]):
        subject = f"filler-{chosen['_id'][:6]}-{n}"
        await app.mutation("members:add", {"businessId": business, "subject": subject, "role": "customer",
                                           "name": f"Guest {n + 1}"}, as_user="demo-olivia")
        result = await app.mutation("bookings:book", {"instanceId": chosen["_id"], "payWith": "dropin"}, as_user=subject)
        assert result["status"] == "confirmed"
        seated.append(subject)
    casey = await new_page(browser, app.url + "/?as=demo-casey")
    jordan = await new_page(browser, app.url + "/?as=demo-jordan")
    for page in (casey, jordan):
        await expect(_card(page, chosen["_id"]).get_by_test_id("seats")).to_have_text("Full")
    await _card(casey, chosen["_id"]).get_by_role("button", name=f"Join the waitlist for {chosen['name']}").click()
    await expect(casey.locator("#notice")).to_contain_text("is full — you joined the waitlist at position 1")
    await _card(jordan, chosen["_id"]).get_by_role("button", name=f"Join the waitlist for {chosen['name']}").click()
    await expect(jordan.locator("#notice")).to_contain_text("position 2")
    await expect(_card(jordan, chosen["_id"]).get_by_test_id("my-position")).to_have_text("Waitlist #2")
    await expect(_card(casey, chosen["_id"]).get_by_test_id("waitlist")).to_have_text(" · 2 waiting")

    # A seated guest cancels elsewhere: Casey is promoted, Jordan moves up — both pages update on their own.
    booking = (await app.sql(
        "SELECT b._id FROM bookings b JOIN members m ON m._id = b.member_id WHERE b.instance_id = $1 AND m.subject = $2",
        chosen["_id"], seated[0]))[0]["_id"]
    await app.mutation("bookings:cancel", {"bookingId": booking}, as_user=seated[0])
    await expect(_card(casey, chosen["_id"]).get_by_text("Booked")).to_be_visible()
    await expect(_card(jordan, chosen["_id"]).get_by_test_id("my-position")).to_have_text("Waitlist #1")
    await expect(_card(jordan, chosen["_id"]).get_by_test_id("waitlist")).to_have_text(" · 1 waiting")
    await screenshot(jordan, "web-waitlist")
    for page in (casey, jordan):
        assert page.errors == []
        await page.context.close()
