"""Signing in, the Overview's numbers against the API, and numbers moving live as events arrive."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from playwright.sync_api import expect

from tests.e2e.dashboard.conftest import Dashboard, open_page, shot, sign_in


def period_of(page: Any) -> dict[str, str]:
    shown = page.get_by_test_id("period").first
    return {"from": shown.get_attribute("data-from"), "to": shown.get_attribute("data-to")}


def card_value(page: Any, kpi: str) -> float:
    return float(page.locator(f"[data-testid=card-{kpi}] [data-kpi={kpi}]").first.get_attribute("data-value"))


def test_a_wrong_key_is_refused_and_the_page_stays_at_sign_in(tab: Any, dashboard: Dashboard) -> None:
    sign_in(tab, dashboard, key="rk_not_a_key")
    expect(tab.get_by_role("alert")).to_contain_text("read key")
    expect(tab.get_by_role("navigation", name="Pages")).to_have_count(0)
    assert tab.evaluate("sessionStorage.getItem('cdp.readKey')") is None
    assert "rk_" not in tab.url  # the key never travels in the address
    shot(tab, "sign-in-refused")


def test_the_write_key_is_not_a_read_key(tab: Any, dashboard: Dashboard) -> None:
    sign_in(tab, dashboard, key=dashboard.keys.write_key)
    expect(tab.get_by_role("alert")).to_be_visible()
    expect(tab.get_by_role("navigation", name="Pages")).to_have_count(0)


def test_the_overview_shows_the_apis_numbers_for_the_period(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    expect(page.locator("[data-testid=card-revenue] [data-kpi=revenue]")).to_be_visible()
    period = period_of(page)
    for kpi in ["revenue", "orders", "active_customers", "csat", "win_rate", "open_ticket_backlog"]:
        expect(page.locator(f"[data-testid=card-{kpi}] [data-kpi={kpi}]").first).to_be_visible()
        rows = dashboard.get(f"/v1/kpis/{kpi}", granularity="total", **period)["series"]
        assert rows, kpi
        assert card_value(page, kpi) == rows[0]["value"], kpi
    revenue = dashboard.get("/v1/kpis/revenue", granularity="total", **period)["series"][0]
    expect(page.locator("[data-testid=card-revenue] [data-kpi=revenue]")).to_have_text(f"€{revenue['value']:,.2f}")
    expect(page.get_by_test_id("lag-kpis")).to_have_text("0")
    profiles = dashboard.server.platform.store.count_profiles(dashboard.server.platform.workspace_id)
    expect(page.get_by_test_id("profiles")).to_have_text(f"{profiles:,}")
    expect(page.get_by_role("img", name=re.compile("^Revenue by"))).to_be_visible()
    shot(page, "overview")


def test_a_new_order_moves_the_revenue_without_a_reload(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    expect(page.get_by_test_id("live-state")).to_have_text(re.compile("Live"))
    before = card_value(page, "revenue")
    page.evaluate("window.__sameDocument = true")
    order = {"type": "track", "userId": "live-buyer", "event": "Order Completed", "messageId": str(uuid.uuid4()),
             "timestamp": datetime.now(timezone.utc).isoformat(),
             "properties": {"order_id": f"live-{uuid.uuid4()}", "revenue": 1234, "currency": "EUR"}}  # fmt: skip
    dashboard.send([order])
    expect(page.locator("[data-testid=card-revenue] [data-kpi=revenue]")).to_have_attribute(
        "data-value", str(before + 1234).removesuffix(".0"), timeout=10_000)  # fmt: skip
    assert page.evaluate("window.__sameDocument") is True  # moved in place: no reload
    expect(page.get_by_test_id("events-seen")).not_to_have_text("0")


def test_paused_holds_the_numbers_until_resumed(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    expect(page.get_by_test_id("live-state")).to_have_text(re.compile("Live"))
    page.get_by_test_id("live-state").click()
    expect(page.get_by_test_id("live-state")).to_have_text(re.compile("Paused"))
    before = page.locator("[data-testid=card-orders] [data-kpi=orders]").get_attribute("data-value")
    dashboard.send([{"type": "track", "userId": "paused-buyer", "event": "Order Completed", "messageId": str(uuid.uuid4()),
                     "timestamp": datetime.now(timezone.utc).isoformat(),
                     "properties": {"order_id": f"paused-{uuid.uuid4()}", "revenue": 5, "currency": "EUR"}}])  # fmt: skip
    dashboard.settle()
    page.wait_for_timeout(2500)  # more than a KPI update's interval: nothing may move while paused
    assert page.locator("[data-testid=card-orders] [data-kpi=orders]").get_attribute("data-value") == before
    page.get_by_test_id("live-state").click()
    expect(page.get_by_test_id("live-state")).to_have_text(re.compile("Live"))


def test_the_url_holds_the_view(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    page.get_by_label("Range").select_option("7d")
    page.get_by_label("Break down by").select_option("channel")
    assert "range=7d" in page.url and "by=channel" in page.url
    shared = page.url
    fresh = page.context.new_page()
    fresh.goto(shared)  # another tab has no key: it signs in, then shows the shared view
    fresh.get_by_label("Read key").fill(dashboard.keys.read_key)
    fresh.get_by_role("button", name="Sign in").click()
    expect(fresh.get_by_label("Range")).to_have_value("7d")
    expect(fresh.get_by_label("Break down by")).to_have_value("channel")
    fresh.close()


def test_keyboard_reaches_every_page(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(3):
        page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Service")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_have_text("Service")


def test_unknown_pages_say_so(signed_in: Any, dashboard: Dashboard) -> None:
    open_page(signed_in, dashboard, "nowhere")
    expect(signed_in.get_by_role("alert")).to_contain_text('no page "nowhere"')


def test_a_narrow_window_wraps_instead_of_scrolling_sideways(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    page.set_viewport_size({"width": 400, "height": 900})
    expect(page.locator("[data-testid=card-revenue] [data-kpi=revenue]")).to_be_visible()
    expect(page.locator(".state.loading")).to_have_count(0, timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "overview-narrow")


def test_numbers_follow_the_browsers_locale(browser: Any, dashboard: Dashboard) -> None:
    context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin")
    page = context.new_page()
    try:
        sign_in(page, dashboard)
        revenue = page.locator("[data-testid=card-revenue] [data-kpi=revenue]")
        expect(revenue).to_be_visible()
        value = float(revenue.get_attribute("data-value"))
        whole, cents = f"{value:,.2f}".split(".")
        expect(revenue).to_have_text(f"{whole.replace(',', '.')},{cents}\u00a0€")  # 36.061,00 € in German
    finally:
        context.close()
