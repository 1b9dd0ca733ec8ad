"""The KPI catalogue: what each number means, in the business's words.

The definitions follow the product brief; projections/kpis.py computes them and
queries/kpis.py serves them. Money KPIs are reported per currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FACT_DIMENSIONS = ("channel", "campaign", "product", "owner", "category", "priority")


@dataclass(frozen=True)
class Kpi:
    name: str
    title: str
    definition: str
    unit: str  # ratio | money | count | hours | days | score | per_1000
    group: str  # customers | commerce | sales | service | campaigns
    dimensions: tuple[str, ...] = field(default=())
    shape: str = "series"  # series | snapshot (no periods) | targets (one row per sales target)
    headline: tuple[str, ...] = field(default=())  # fact kinds (domain/crm.py) whose arrival moves it live


_COMMERCE = ("channel", "campaign", "product", "category")
_SALES = ("owner", "channel", "campaign", "category")
_SERVICE = ("channel", "category", "priority", "owner")
_CAMPAIGN = ("campaign", "channel")

CATALOGUE: dict[str, Kpi] = {k.name: k for k in [
    Kpi("csat", "Customer satisfaction", "Share of CSAT answers scoring 4 or 5 on the 1-5 scale; `mean` is the "
        "average score.", "ratio", "customers", ("channel",), headline=("feedback",)),
    Kpi("nps", "Net promoter score", "% promoters (9-10) minus % detractors (0-6) of NPS answers, from -100 to 100.",
        "score", "customers", ("channel",), headline=("feedback",)),
    Kpi("active_customers", "Active customers", "Distinct people with any event in the period (merged profiles "
        "count once).", "count", "customers"),
    Kpi("lifecycle_stages", "Lifecycle stages", "Profiles per lifecycle stage (the profile's computed "
        "`lifecycle_stage`, by the workspace's lifecycle rules), now.", "count", "customers", shape="snapshot"),
    Kpi("retention_rate", "Retention rate", "Of the people active in a period, the share active again in the "
        "next period.", "ratio", "customers"),
    Kpi("churn_rate", "Churn rate", "1 − retention rate.", "ratio", "customers"),
    Kpi("conversion_rate", "Conversion rate", "Converted ÷ entered for a funnel of ordered steps within a "
        "conversion window: POST /v1/funnels.", "ratio", "customers", shape="funnel"),
    Kpi("revenue", "Revenue", "Net revenue: completed orders minus refunds (a refund without an amount refunds the "
        "whole order), by event time, per currency. By product: order lines, before refunds.", "money", "commerce",
        _COMMERCE, headline=("order", "refund")),
    Kpi("orders", "Orders", "Completed orders.", "count", "commerce", _COMMERCE, headline=("order",)),
    Kpi("average_order_value", "Average order value", "Revenue of completed orders ÷ their number, before refunds, "
        "per currency.", "money", "commerce", _COMMERCE, headline=("order",)),
    Kpi("repeat_purchase_rate", "Repeat purchase rate", "Of the people who ordered in the period, the share who "
        "ordered at least twice in it.", "ratio", "commerce", _COMMERCE),
    Kpi("customer_lifetime_value", "Customer lifetime value", "Historic net revenue to the end of the period ÷ "
        "people who ever ordered by then, per currency.", "money", "commerce"),
    Kpi("customer_acquisition_cost", "Customer acquisition cost", "Marketing and sales cost (Cost Incurred) in the "
        "period ÷ people whose first order falls in the period, per currency.", "money", "commerce",
        ("channel", "campaign")),
    Kpi("rfm_tiers", "RFM tiers", "Customers (people with orders) per value tier from their recency, frequency "
        "and monetary quintile scores, now.", "count", "commerce", shape="snapshot"),
    Kpi("leads", "Leads", "Leads created.", "count", "sales", _SALES),
    Kpi("pipeline_value", "Pipeline value", "Σ amount × probability of the opportunities open at the end of the "
        "period (latest stage by event time), per currency.", "money", "sales", _SALES, headline=("opportunity",)),
    Kpi("won_revenue", "Won revenue", "Amount of opportunities won in the period, per currency.", "money", "sales",
        _SALES, headline=("opportunity",)),
    Kpi("win_rate", "Win rate", "Won ÷ (won + lost) of the opportunities closed in the period.", "ratio", "sales",
        _SALES),
    Kpi("average_sales_cycle", "Average sales cycle", "Mean days from an opportunity's first stage event to its "
        "win, for opportunities won in the period.", "days", "sales", _SALES),
    Kpi("sales_activities", "Sales activities", "Calls and meetings logged (per rep with by=owner).", "count",
        "sales", ("owner", "channel")),
    Kpi("budget_attainment", "Budget attainment", "Won amount of the owner's opportunities closed within a sales "
        "target's period ÷ the target, per target.", "ratio", "sales", ("owner",), shape="targets"),
    Kpi("first_response_time", "First response time", "Mean hours from a ticket's opening to its first "
        "assignment or resolution, for tickets opened in the period.", "hours", "service", _SERVICE),
    Kpi("resolution_time", "Resolution time", "Mean hours from a ticket's opening to its resolution, for tickets "
        "resolved in the period.", "hours", "service", _SERVICE),
    Kpi("open_ticket_backlog", "Open ticket backlog", "Tickets open at the end of the period (opened and not "
        "resolved since).", "count", "service", _SERVICE, headline=("ticket_opened", "ticket_resolved")),
    Kpi("complaints_per_1000_customers", "Complaints per 1,000 customers", "Tickets of category `complaint` "
        "opened in the period ÷ people active in the period × 1,000.", "per_1000", "service"),
    Kpi("campaign_sent", "Campaign messages sent", "Emails and SMS sent.", "count", "campaigns", _CAMPAIGN),
    Kpi("campaign_open_rate", "Campaign open rate", "Distinct people opening ÷ distinct people sent to, per "
        "campaign message in the period.", "ratio", "campaigns", _CAMPAIGN),
    Kpi("campaign_click_rate", "Campaign click rate", "Distinct people clicking ÷ distinct people sent to.",
        "ratio", "campaigns", _CAMPAIGN),
    Kpi("campaign_conversion_rate", "Campaign conversion rate", "Of the people who clicked a campaign in the "
        "period, the share who completed an order within `within_days` (default 7) of a click.", "ratio",
        "campaigns", _CAMPAIGN),
]}  # fmt: skip

HEADLINE = tuple(k.name for k in CATALOGUE.values() if k.headline)
"""KPIs published on `cdp.kpi-updates` when they move."""

KPIS_MOVED_BY: dict[str, tuple[str, ...]] = {
    kind: tuple(k.name for k in CATALOGUE.values() if kind in k.headline)
    for kind in sorted({kind for k in CATALOGUE.values() for kind in k.headline})
}
"""Fact kind → the headline KPIs its arrival moves (for the update stream)."""
