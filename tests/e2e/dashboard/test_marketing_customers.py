"""The Marketing and Customers pages against the API: campaign rates, acquisition cost, retention cohorts,
RFM tiers, lifecycle stages and a funnel built through the page (typing, clicking and the keyboard)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

from tests.e2e.dashboard.conftest import Dashboard, open_page, shot

CAMPAIGN_KPIS = ["campaign_sent", "campaign_open_rate", "campaign_click_rate", "campaign_conversion_rate"]


def period_of(page: Any) -> dict[str, str]:
    shown = page.get_by_test_id("period").first
    return {"from": shown.get_attribute("data-from"), "to": shown.get_attribute("data-to")}


def shown_value(locator: Any) -> float | None:
    raw = locator.get_attribute("data-value")
    return None if raw is None else float(raw)


def view(page: Any) -> dict[str, str]:
    """The view's parameters in the URL's hash."""
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).fragment.partition("?")[2]).items()}


def human(name: str) -> str:
    return name.replace("_", " ").capitalize()


def funnel_steps(page: Any) -> list[dict[str, Any]]:
    out = []
    for step in page.get_by_test_id("funnel-step").all():
        prev, first = step.get_attribute("data-from-previous"), step.get_attribute("data-from-first")
        out.append({"name": step.get_attribute("data-name"), "people": int(step.get_attribute("data-people")),
                    "conversion_from_previous": None if prev is None else float(prev),
                    "conversion_from_first": None if first is None else float(first)})  # fmt: skip
    return out


def api_funnel(board: Dashboard, steps: list[dict[str, Any]], within: str, period: dict[str, str]) -> dict[str, Any]:
    response = board.api.post("/v1/funnels", json={"steps": steps, "within": within, **period},
                              headers={"Authorization": f"Bearer {board.keys.read_key}"})  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


# -- Marketing ------------------------------------------------------------------------------------------


def test_the_campaign_table_shows_the_apis_rates_per_campaign(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "marketing?range=90d")
    expect(page.locator("#campaigns [data-kpi=campaign_sent]").first).to_be_visible()
    period = period_of(page)
    campaigns = set()
    for kpi in CAMPAIGN_KPIS:
        rows = dashboard.get(f"/v1/kpis/{kpi}", granularity="total", by="campaign", **period)["series"]
        assert rows, kpi
        for row in rows:
            campaigns.add(row["campaign"])
            cell = page.locator(f"#campaigns [data-kpi={kpi}][data-campaign='{row['campaign']}']")
            assert shown_value(cell) == row["value"], (kpi, row)
            if kpi != "campaign_sent":
                expect(cell).to_have_text(f"{row['value'] * 100:.1f}%")
    expect(page.locator("#campaigns tbody tr")).to_have_count(len(campaigns))
    expect(page.get_by_role("list", name="Messages sent per campaign").locator("li")).to_have_count(len(campaigns))
    expect(page.get_by_role("img", name=re.compile("^Messages sent by"))).to_be_visible()
    shot(page, "marketing")


def test_a_campaign_filter_narrows_the_table_to_it(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "marketing?range=90d")
    expect(page.locator("#campaigns tbody tr").first).to_be_visible()
    page.get_by_label("Filter dimension").select_option("campaign")
    page.get_by_label("Filter value").fill("camp-1")
    page.get_by_role("button", name="Add filter").click()
    assert view(page)["campaign"] == "camp-1"
    expect(page.locator("#campaigns tbody tr")).to_have_count(1)
    period = period_of(page)
    rate = dashboard.get("/v1/kpis/campaign_click_rate", granularity="total", by="campaign", campaign="camp-1",
                         **period)["series"][0]  # fmt: skip
    cell = page.locator("#campaigns [data-kpi=campaign_click_rate][data-campaign='camp-1']")
    assert shown_value(cell) == rate["value"]


def test_acquisition_cost_per_channel_is_the_apis(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "marketing?range=90d")
    table = page.locator("#cac")
    expect(table.locator("tbody tr").first).to_be_visible()
    period = period_of(page)
    cac = "/v1/kpis/customer_acquisition_cost"
    by_channel = dashboard.get(cac, granularity="total", by="channel", **period)["series"]
    total = dashboard.get(cac, granularity="total", **period)["series"]
    assert by_channel and total
    rows = [(r["channel"], r) for r in by_channel] + [("All channels", r) for r in total]
    expect(table.locator("tbody tr")).to_have_count(len(rows))
    for channel, row in rows:
        where = f"[data-channel='{channel}'][data-currency='{row['currency']}']"
        assert shown_value(table.locator(f"[data-kpi=customer_acquisition_cost]{where}")) == row["value"], row
        assert shown_value(table.locator(f"[data-kpi=cac-cost]{where}")) == row["cost"], row
        assert shown_value(table.locator(f"[data-kpi=cac-new-customers]{where}")) == row["new_customers"], row
    euro = next(r for r in total if r["currency"] == "EUR")
    expect(table.locator("[data-kpi=customer_acquisition_cost][data-channel='All channels'][data-currency=EUR]")
           ).to_have_text(f"€{euro['value']:,.2f}")  # fmt: skip


# -- Customers ------------------------------------------------------------------------------------------


def test_the_cohort_heat_map_is_the_apis_retention(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    expect(page.get_by_test_id("cohort-cell").first).to_be_visible()
    cohorts = dashboard.get("/v1/cohorts/retention", **period_of(page))["cohorts"]
    assert cohorts
    expect(page.get_by_test_id("cohort-cell")).to_have_count(sum(len(c["retention"]) for c in cohorts))
    for cohort in cohorts:
        row = page.locator(f"[data-testid=cohorts] tr[data-cohort='{cohort['cohort']}']")
        assert shown_value(row.get_by_test_id("cohort-size")) == cohort["size"]
        for k, retention in enumerate(cohort["retention"]):
            cell = row.locator(f"[data-testid=cohort-cell][data-month='{k}']")
            assert shown_value(cell) == retention, (cohort["cohort"], k)
            expect(cell).to_have_text(f"{retention * 100:.1f}%")  # the colour is not the only cue
    expect(page.get_by_role("columnheader", name="Month 0")).to_be_visible()


def test_rfm_tiers_are_the_apis(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    bars = page.get_by_test_id("rfm_tiers").locator("li")
    expect(bars.first).to_be_visible()
    tiers = dashboard.get("/v1/kpis/rfm_tiers")["series"]
    assert tiers
    expect(bars).to_have_count(len(tiers))
    for tier in tiers:
        bar = page.get_by_test_id("rfm_tiers").locator(f"li[data-label='{human(tier['tier'])}']")
        assert shown_value(bar) == tier["value"], tier
        expect(bar).to_contain_text(f"{tier['share'] * 100:.1f}%")


def test_lifecycle_stages_are_the_apis(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    bars = page.get_by_test_id("lifecycle_stages").locator("li")
    expect(bars.first).to_be_visible()
    stages = dashboard.get("/v1/kpis/lifecycle_stages")["series"]
    assert stages
    expect(bars).to_have_count(len(stages))
    for stage in stages:
        bar = page.get_by_test_id("lifecycle_stages").locator(f"li[data-label='{human(stage['stage'])}']")
        assert shown_value(bar) == stage["value"], stage


def test_a_funnel_built_on_the_page_is_the_apis_and_stays_in_the_url(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    expect(page.get_by_label("Step 1 Type")).to_have_value("page")
    page.get_by_label("Step 2 Matches").select_option("type")
    page.get_by_label("Step 2 Type").select_option("identify")
    page.get_by_label("Step 2 Label (optional)").fill("Signed up")
    page.get_by_role("button", name="Add step").click()
    expect(page.get_by_label("Step 3 Event name")).to_be_focused()
    page.keyboard.type("Order Completed")
    page.get_by_label("Conversion window").fill("1d")
    page.get_by_role("button", name="Show funnel").click()
    expect(page.get_by_test_id("funnel-step")).to_have_count(3)

    steps = [{"type": "page"}, {"type": "identify", "name": "Signed up"}, {"event": "Order Completed"}]
    answer = api_funnel(dashboard, steps, "1d", period_of(page))
    expected = [{k: s[k] for k in ("name", "people", "conversion_from_previous", "conversion_from_first")}
                for s in answer["steps"]]  # fmt: skip
    assert funnel_steps(page) == expected
    assert answer["entered"] > answer["converted"] > 0  # the seeded journeys make it a real funnel
    expect(page.get_by_test_id("funnel-summary")).to_contain_text(f"{answer['conversion_rate'] * 100:.1f}%")

    assert view(page)["steps"] == "page,identify:Signed up,Order Completed" and view(page)["within"] == "1d"
    page.reload()
    expect(page.get_by_test_id("funnel-step")).to_have_count(3)
    assert funnel_steps(page) == expected
    expect(page.get_by_label("Step 2 Type")).to_have_value("identify")
    expect(page.get_by_label("Step 3 Event name")).to_have_value("Order Completed")
    expect(page.get_by_label("Conversion window")).to_have_value("1d")
    shot(page, "customers")


def test_funnel_steps_are_added_and_removed_with_the_keyboard(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    page.get_by_label("Step 2 Event name").fill("Email Sent")
    page.get_by_role("button", name="Add step").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("funnel-editor-step")).to_have_count(3)
    expect(page.get_by_label("Step 3 Event name")).to_be_focused()
    page.keyboard.type("Email Clicked")
    page.keyboard.press("Tab")  # the label
    page.keyboard.press("Tab")  # its Remove button
    expect(page.get_by_role("button", name="Remove step 3")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("funnel-editor-step")).to_have_count(2)
    expect(page.get_by_role("button", name="Remove step 2")).to_be_focused()
    page.get_by_label("Conversion window").focus()
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_test_id("funnel-step")).to_have_count(2)
    assert view(page)["steps"] == "page,Email Sent"
    answer = api_funnel(dashboard, [{"type": "page"}, {"event": "Email Sent"}], "7d", period_of(page))
    assert [s["people"] for s in funnel_steps(page)] == [s["people"] for s in answer["steps"]]


def test_a_bad_window_or_a_single_step_says_why(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    page.get_by_label("Step 2 Event name").fill("Order Completed")
    page.get_by_label("Conversion window").fill("7x")
    page.get_by_role("button", name="Show funnel").click()
    expect(page.get_by_test_id("funnel-problems")).to_contain_text("“7x” is not a conversion window")
    assert "steps" not in view(page)  # nothing asked for
    page.get_by_label("Conversion window").fill("7d")
    page.get_by_role("button", name="Remove step 2").click()
    page.get_by_role("button", name="Show funnel").click()
    expect(page.get_by_test_id("funnel-problems")).to_contain_text("at least 2 steps")
    expect(page.get_by_test_id("funnel-problems")).not_to_contain_text("conversion window")
    page.get_by_role("button", name="Add step").click()
    page.get_by_role("button", name="Show funnel").click()
    expect(page.get_by_test_id("funnel-problems")).to_contain_text("Step 2 needs an event name")

    # A shared link can hold what the form refuses: the page says so instead of asking the API.
    open_page(page, dashboard, "customers?range=90d&steps=page&within=7d")
    expect(page.get_by_test_id("funnel-invalid")).to_contain_text("at least 2 steps")
    open_page(page, dashboard, "customers?range=90d&steps=page,identify&within=soon")
    expect(page.get_by_test_id("funnel-invalid")).to_contain_text("“soon” is not a conversion window")
    expect(page.get_by_test_id("funnel-step")).to_have_count(0)


def test_the_pages_read_in_a_narrow_window(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    page.set_viewport_size({"width": 400, "height": 900})
    open_page(page, dashboard, "marketing?range=90d")
    expect(page.locator("#campaigns tbody tr").first).to_be_visible()
    expect(page.locator("#cac tbody tr").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # wide tables scroll in their own box
    shot(page, "marketing-narrow")
    open_page(page, dashboard, "customers?range=90d&steps=page,Order%20Completed&within=7d")
    expect(page.get_by_test_id("funnel-step")).to_have_count(2)
    expect(page.get_by_test_id("cohort-cell").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    shot(page, "customers-narrow")



def test_names_with_commas_colons_or_a_types_name_survive_the_url(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "customers?range=90d")
    page.get_by_label("Step 2 Event name").fill("page")  # an event named like a call type stays an event
    page.get_by_label("Step 2 Label (optional)").fill("a, b: c")
    page.get_by_role("button", name="Show funnel").click()
    expect(page.get_by_test_id("funnel-step").nth(1)).to_have_attribute("data-name", "a, b: c")
    assert view(page)["steps"] == "page,%70age:a%2C b%3A c"
    page.reload()
    expect(page.get_by_label("Step 2 Matches")).to_have_value("event")
    expect(page.get_by_label("Step 2 Event name")).to_have_value("page")
    expect(page.get_by_label("Step 2 Label (optional)")).to_have_value("a, b: c")
    answer = api_funnel(dashboard, [{"type": "page"}, {"event": "page", "name": "a, b: c"}], "7d", period_of(page))
    expect(page.get_by_test_id("funnel-step")).to_have_count(2)  # the reloaded page asked for the funnel again
    assert [s["people"] for s in funnel_steps(page)] == [s["people"] for s in answer["steps"]]
