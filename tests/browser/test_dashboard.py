"""The dashboard in Chromium, next to the booking app in a second browser context.

The server runs as ``dev`` on loopback, so the dashboard is open without a key (the key path is covered in
``tests/backend/test_dashboard_access.py``); its writes are audited as ``admin:dev``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from backend.testing import TestBackend
from tests.support.browser import business_of, member_id, new_page, screenshot, week_classes

expect = pytest.importorskip("playwright.async_api", reason="Playwright is not installed").expect


async def test_data_browser_shows_a_booking_arrive_live(app: TestBackend, browser: Any) -> None:
    business = await business_of(app)
    jordan = await member_id(app, "demo-jordan")
    dashboard = await new_page(browser, f"{app.url}/_dashboard?table=bookings&tenant={business}")
    await expect(dashboard.locator("#table-title")).to_have_text("bookings")
    # Filter through an index: Jordan's bookings (by_member_start, businessId implied by the tenant picker).
    await dashboard.locator("#index").select_option("by_member_start")
    await dashboard.locator('#index-fields input[data-field="memberId"]').fill(jordan)
    await dashboard.locator('#index-fields input[data-field="memberId"]').dispatch_event("change")
    await expect(dashboard.locator("#rows tbody")).to_contain_text("No rows.")

    now = dt.datetime.now(dt.UTC)
    chosen = next(c for c in await week_classes(app) if c["status"] == "scheduled" and c["booked"] < c["capacity"]
                  and now + dt.timedelta(hours=1) < dt.datetime.fromisoformat(c["startsAt"].replace("Z", "+00:00"))
                  < now + dt.timedelta(days=4))
    customer = await new_page(browser, app.url + "/?as=demo-jordan")
    card = customer.locator(f'li.class-card[data-instance="{chosen["_id"]}"]')
    await card.get_by_role("button", name=f"Book {chosen['name']}").click()
    await expect(customer.locator("#notice")).to_contain_text("Booked:")

    # No reload: the data browser refreshes itself and the new row appears with its audit fields.
    row = dashboard.locator("#rows tbody tr[data-id]")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(chosen["_id"])
    await expect(row).to_contain_text("confirmed")
    await expect(row.locator("td.audit").first).to_be_visible()
    await expect(row).to_contain_text("demo-jordan")  # createdBy: the customer who booked
    await dashboard.locator('#tables [data-table="bookings"]').click()  # every booking again, unfiltered
    await expect(dashboard.locator("#index")).to_have_value("by_creation_time")
    await expect(dashboard.locator("#rows tbody")).to_contain_text(chosen["_id"])
    # The week's classes in start order, as the README shows them.
    await dashboard.locator('#tables [data-table="class_instances"]').click()
    await dashboard.locator("#index").select_option("by_start")
    await dashboard.locator("#order").select_option("asc")
    await expect(dashboard.locator("#rows tbody tr[data-id]").nth(5)).to_be_visible()
    await screenshot(dashboard, "dashboard-data")
    assert dashboard.errors == [] and customer.errors == []
    await customer.context.close()
    await dashboard.context.close()


async def test_function_runner_runs_a_mutation_seen_live_by_the_customer(app: TestBackend, browser: Any) -> None:
    business = await business_of(app)
    casey = await member_id(app, "demo-casey")
    customer = await new_page(browser, app.url + "/?as=demo-casey")
    balance = customer.get_by_test_id("credit-balance")
    await expect(balance).not_to_have_text("…")
    credits_before = int(await balance.inner_text())

    dashboard = await new_page(browser, f"{app.url}/_dashboard?view=functions&tenant={business}")
    await dashboard.get_by_role("button", name="credits:grant").click()
    await expect(dashboard.locator("#fn-title")).to_contain_text("credits:grant — mutation")
    form = dashboard.locator("#fn-form")
    await expect(form.get_by_label("businessId")).to_have_value(business)  # filled from the tenant picker
    await form.get_by_label("memberId").fill(casey)
    await form.get_by_label("credits").fill("4")
    await form.get_by_label("expiresOn").fill((dt.date.today() + dt.timedelta(days=60)).isoformat())
    await form.get_by_label("note").fill("goodwill from the front desk")
    await form.get_by_label("a member").check()
    await dashboard.locator("#as-member").select_option("demo-sam")
    await dashboard.get_by_role("button", name="Run", exact=True).click()

    await expect(dashboard.locator("#fn-status")).to_have_text("success")
    await expect(dashboard.locator("#fn-value")).to_contain_text("lotId")
    await expect(dashboard.locator("#fn-ms")).to_contain_text("audited as admin:dev")
    await expect(balance).to_have_text(str(credits_before + 4))  # live in the other browser
    lot = (await app.sql("SELECT _id FROM credit_lots WHERE note = 'goodwill from the front desk'"))[0]["_id"]
    audit = await app.sql("SELECT actor FROM audit_log WHERE document_id = $1", lot)
    assert [r["actor"] for r in audit] == ["admin:dev"]
    await screenshot(dashboard, "dashboard-functions")

    # The same run appears in the live call log, and the customer's socket among the live sessions.
    await dashboard.get_by_role("button", name="Logs").click()
    await expect(dashboard.locator('#log-table tr[data-path="credits:grant"]').first).to_contain_text("admin:dev")
    await screenshot(dashboard, "dashboard-logs")
    await dashboard.get_by_role("button", name="Sessions").click()
    await expect(dashboard.locator("#sessions")).to_contain_text("credits:balance")
    await expect(dashboard.locator("#sessions")).to_contain_text("demo-casey")
    await screenshot(dashboard, "dashboard-sessions")
    await dashboard.get_by_role("button", name="Schedules").click()
    await expect(dashboard.locator("#crons")).to_contain_text("classes:extend_horizons")
    await screenshot(dashboard, "dashboard-schedules")
    assert dashboard.errors == [] and customer.errors == []
    await customer.context.close()
    await dashboard.context.close()
