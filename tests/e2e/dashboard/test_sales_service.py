"""The Sales and Service pages against the API for the same period: headline cards, charts, the per-owner table,
budget attainment, the CSAT and NPS answers per score, a breakdown and a filter held in the URL, a narrow window.

The views use a custom range of whole days: the period is then the same however long a test takes (a preset
ends at the next minute, and moves with it).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.e2e.dashboard.conftest import Dashboard, open_page, shot, sign_in

SALES_CARDS = ["won_revenue", "pipeline_value", "win_rate", "average_sales_cycle", "leads", "sales_activities"]
OWNER_KPIS = ["won_revenue", "win_rate", "pipeline_value", "sales_activities", "average_sales_cycle"]
SERVICE_CARDS = ["first_response_time", "resolution_time", "open_ticket_backlog", "complaints_per_1000_customers",
                 "csat", "nps"]  # fmt: skip


def view(board: Dashboard, days: int = 30) -> str:
    start, end = (board.now - timedelta(days=days)).date(), (board.now + timedelta(days=1)).date()
    return f"range=custom&from={start}&to={end}"


def period_of(page: Any) -> dict[str, str]:
    shown = page.get_by_test_id("period").first
    return {"from": shown.get_attribute("data-from"), "to": shown.get_attribute("data-to")}


def total(board: Dashboard, kpi: str, period: dict[str, str], **params: str) -> list[dict[str, Any]]:
    return board.get(f"/v1/kpis/{kpi}", granularity="total", **period, **params)["series"]


def same(value: Any) -> Any:
    """`value` (a number or a dict of them), give or take the last bits: ClickHouse adds up the floats of a mean in
    no fixed order."""
    return pytest.approx(value, rel=1e-9, abs=0)


def number(locator: Any) -> float:
    expect(locator).to_be_visible()
    return float(locator.get_attribute("data-value"))


def card_selector(kpi: str, currency: str | None = None) -> str:
    within = f"[data-currency={currency}] " if currency else ""
    return f"[data-testid=card-{kpi}] {within}[data-kpi={kpi}]"


def card(page: Any, kpi: str, currency: str | None = None) -> Any:
    return page.locator(card_selector(kpi, currency))


# A card keeps its number while it fetches the one of a new view: wait until it shows `v`.
_SHOWS = """([selector, v]) => { const el = document.querySelector(selector);
  return el !== null && Math.abs(Number(el.dataset.value) - v) <= 1e-9 * Math.abs(v); }"""


def assert_cards(page: Any, board: Dashboard, kpis: list[str], **filters: str) -> None:
    """Each card shows the API's number for the page's period and `filters`, per currency for money."""
    period = period_of(page)
    for kpi in kpis:
        rows = total(board, kpi, period, **filters)
        assert rows, kpi
        for row in rows:
            selector = card_selector(kpi, row.get("currency"))
            try:
                page.wait_for_function(_SHOWS, arg=[selector, row["value"]], timeout=5_000)
            except PlaywrightTimeout:
                pass  # said by the assertion below, with the number shown
            assert number(page.locator(selector).first) == same(row["value"]), kpi


def bar_values(bars: Any) -> dict[str, float]:
    """label → raw value of the bars of a BarList."""
    return {li.get_attribute("data-label"): float(li.get_attribute("data-value")) for li in bars.locator("li").all()}


def bars(page: Any, testid: str) -> dict[str, float]:
    container = page.get_by_test_id(testid).first
    expect(container).to_be_visible()
    return bar_values(container)


def series_of(page: Any, chart: str, count: int) -> set[str]:
    """The `count` series a chart draws, from the header of its table (after the period column)."""
    header = page.get_by_role("region", name=chart).locator("details table thead th")
    expect(header).to_have_count(1 + count)  # once the answer of the new view is drawn
    return set(header.all_text_contents()[1:])


def loaded(page: Any) -> None:
    """Every panel and card has its answer (none is loading)."""
    expect(page.locator("main .panel-body, main .kpi-card .value").first).to_be_visible()
    expect(page.locator("main .state.loading")).to_have_count(0)


def owners_from_the_api(board: Dashboard, period: dict[str, str], **filters: str) -> dict[tuple[str, str, str], float]:
    """(owner, kpi, currency or "") → value of the per-owner KPIs, by=owner over the period."""
    out = {}
    for kpi in OWNER_KPIS:
        for row in total(board, kpi, period, by="owner", **filters):
            if row["value"] is not None:
                out[(row["owner"], kpi, row.get("currency", ""))] = row["value"]
    return out


def owners_on_the_page(page: Any) -> dict[tuple[str, str, str], float]:
    table = page.locator("#owners")
    expect(table).to_be_visible()
    out = {}
    for span in table.locator("[data-testid^=owner-]").all():
        named = re.fullmatch(r"owner-(.*)-(" + "|".join(OWNER_KPIS) + ")", span.get_attribute("data-testid"))
        owner, kpi = named.groups()
        out[(owner, kpi, span.get_attribute("data-currency") or "")] = float(span.get_attribute("data-value"))
    return out


def test_the_sales_page_shows_the_apis_numbers_for_the_period(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, f"sales?{view(dashboard)}")
    expect(page.locator("main h1")).to_have_text("Sales")
    assert_cards(page, dashboard, SALES_CARDS)
    period = period_of(page)
    (won,) = total(dashboard, "won_revenue", period)
    expect(card(page, "won_revenue")).to_have_text(f"€{won['value']:,.2f}")
    for chart in ["Won revenue", "Pipeline value", "Win rate", "Average sales cycle"]:
        expect(page.get_by_role("img", name=f"{chart} by day")).to_be_visible()
    # won revenue by owner when nothing is broken down: one bar per owner and currency
    by_owner = total(dashboard, "won_revenue", period, by="owner")
    expected = {f"{r['owner'] or '(none)'} · {r['currency']}": r["value"] for r in by_owner}
    assert expected and bars(page, "won-by") == expected
    # the per-owner table joins the five KPIs by owner
    api = owners_from_the_api(dashboard, period)
    expect(page.locator("#owners tbody tr")).to_have_count(len({owner for owner, _, _ in api}))
    assert owners_on_the_page(page) == same(api)
    expect(page.get_by_role("heading", name="Budget attainment")).to_be_visible()
    loaded(page)
    shot(page, "sales")


def test_a_breakdown_and_a_filter_change_the_sales_page_and_its_url(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, f"sales?{view(dashboard)}")
    period = period_of(page)
    page.get_by_label("Break down by").select_option("channel")
    expect(page).to_have_url(re.compile(r"by=channel"))
    expect(page.get_by_role("heading", name="Won revenue by channel")).to_be_visible()
    by_channel = total(dashboard, "won_revenue", period, by="channel")
    expect(page.get_by_test_id("won-by")).to_have_attribute("data-by", "channel")
    assert bars(page, "won-by") == {f"{r['channel'] or '(none)'} · {r['currency']}": r["value"] for r in by_channel}
    # the pipeline's chart has a series per owner once broken down by owner (its table lists them)
    page.get_by_label("Break down by").select_option("owner")
    expect(page).to_have_url(re.compile(r"by=owner"))
    pipeline = dashboard.get("/v1/kpis/pipeline_value", granularity="day", by="owner", **period)["series"]
    owners = {r["owner"] for r in pipeline}
    assert series_of(page, "Pipeline value", len(owners)) == {f"{o} · EUR" for o in owners}
    # a filter: only that owner's numbers, in the cards and in the table
    page.get_by_label("Filter dimension").select_option("owner")
    page.get_by_label("Filter value").fill("max")
    page.get_by_role("button", name="Add filter").click()
    expect(page).to_have_url(re.compile(r"owner=max"))
    expect(page.get_by_role("button", name="Remove filter owner = max")).to_be_visible()
    assert_cards(page, dashboard, SALES_CARDS, owner="max")
    expect(page.locator("#owners tbody tr")).to_have_count(1)
    assert owners_on_the_page(page) == same(owners_from_the_api(dashboard, period, owner="max"))
    # a filter a KPI cannot take is said, not silently dropped
    page.get_by_role("button", name="Remove filter owner = max").click()
    expect(page).not_to_have_url(re.compile(r"owner=max"))
    page.get_by_label("Filter dimension").select_option("campaign")
    page.get_by_label("Filter value").fill("camp-0")
    page.get_by_label("Filter value").press("Enter")
    expect(page).to_have_url(re.compile(r"campaign=camp-0"))
    expect(page.get_by_text("Sales activities cannot be filtered by campaign").first).to_be_visible()


def test_budget_attainment_shows_each_target(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, f"sales?{view(dashboard)}")
    targets = page.get_by_role("region", name="Budget attainment")
    expect(targets).to_contain_text("No sales target overlaps this period")  # the seeded targets are for Q1 2026
    open_page(page, dashboard, "sales?range=custom&from=2026-01-01&to=2026-04-01")
    rows = dashboard.get("/v1/kpis/budget_attainment", **period_of(page))["series"]
    assert len(rows) == 4
    expect(page.locator("#targets tbody tr")).to_have_count(len(rows))
    for row in rows:
        shown = page.get_by_test_id(f"attainment-{row['owner']}-{row['period_start']}")
        assert number(shown) == same(row["value"])
        expect(page.locator("#targets tbody tr", has=shown)).to_contain_text(f"€{row['target']:,.2f}")
    page.get_by_role("heading", name="Budget attainment").scroll_into_view_if_needed()
    shot(page, "sales-targets")


def test_the_service_page_shows_the_apis_numbers_and_the_scores(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, f"service?{view(dashboard)}")
    expect(page.locator("main h1")).to_have_text("Service")
    assert_cards(page, dashboard, SERVICE_CARDS)
    period = period_of(page)
    # written in their units: a rate per thousand is not a percent, times are minutes, hours or days
    expect(card(page, "complaints_per_1000_customers")).to_have_text(re.compile(r"^[\d,]+(\.\d)?$"))
    for kpi in ["first_response_time", "resolution_time"]:
        expect(card(page, kpi)).to_have_text(re.compile(r"^(\d+ min|[\d,]+(\.\d)? [hd])$"))
    for chart in ["First response time", "Resolution time", "Open ticket backlog", "Complaints per 1,000 customers",
                  "Customer satisfaction", "Net promoter score"]:  # fmt: skip
        expect(page.get_by_role("img", name=f"{chart} by day")).to_be_visible()
    for kpi, scores in [("csat", range(1, 6)), ("nps", range(0, 11))]:
        (row,) = total(dashboard, kpi, period)
        assert list(row["distribution"]) == [str(s) for s in scores]
        assert bars(page, f"{kpi}-distribution") == {score: n for score, n in row["distribution"].items()}, kpi
        expect(page.get_by_test_id(f"{kpi}-distribution")).to_have_attribute("data-answers", str(row["answers"]))
    loaded(page)
    shot(page, "service")


def test_a_breakdown_and_a_filter_change_the_service_page_and_its_url(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, f"service?{view(dashboard)}")
    period = period_of(page)
    page.get_by_label("Break down by").select_option("category")
    expect(page).to_have_url(re.compile(r"by=category"))
    backlog = dashboard.get("/v1/kpis/open_ticket_backlog", granularity="day", by="category", **period)["series"]
    categories = {r["category"] for r in backlog}
    assert series_of(page, "Open ticket backlog", len(categories)) == categories
    expect(page.get_by_text("Complaints per 1,000 customers cannot be broken down by category")).to_be_visible()
    # the distributions split by a dimension they have: one set of bars per channel
    page.get_by_label("Break down by").select_option("channel")
    channels = {row["channel"]: row["distribution"] for row in total(dashboard, "nps", period, by="channel")}
    nps = page.get_by_role("region", name="Net promoter score (NPS)")
    expect(nps.locator("h3")).to_have_count(len(channels))  # a heading per channel: the new answer is drawn
    expect(nps.get_by_test_id("nps-distribution")).to_have_count(len(channels))
    for shown in nps.get_by_test_id("nps-distribution").all():
        assert bar_values(shown) == channels[shown.get_attribute("data-channel")]
    # a filter: complaints only, in the cards that take it; satisfaction says it is not filtered
    page.get_by_label("Filter dimension").select_option("category")
    page.get_by_label("Filter value").fill("complaint")
    page.get_by_role("button", name="Add filter").click()
    expect(page).to_have_url(re.compile(r"category=complaint"))
    tickets = ["first_response_time", "resolution_time", "open_ticket_backlog"]
    assert_cards(page, dashboard, tickets, category="complaint")
    expect(page.get_by_text("Customer satisfaction cannot be filtered by category").first).to_be_visible()
    (csat,) = total(dashboard, "csat", period)
    assert number(card(page, "csat").first) == same(csat["value"])


def test_both_pages_fit_a_narrow_window(tab: Any, dashboard: Dashboard) -> None:
    page = tab
    page.set_viewport_size({"width": 400, "height": 800})
    sign_in(page, dashboard)
    for name in ["sales", "service"]:
        open_page(page, dashboard, f"{name}?{view(dashboard)}")
        loaded(page)
        expect(page.locator(".chart canvas").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, name
        shot(page, f"{name}-narrow")
