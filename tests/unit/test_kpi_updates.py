"""KPI updates: at most one message per second per KPI and workspace, nothing lost on a failed publish."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from domain.crm import facts_of
from domain.segment import source_of
from streams.kpis import KpiUpdates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_updates_are_throttled_per_kpi_and_workspace() -> None:
    clock, sent = Clock(), []
    asked: list[tuple[str, str, list[date]]] = []

    def values(ws: str, kpi: str, days: list[date]) -> list[dict[str, Any]]:
        asked.append((ws, kpi, days))
        return [{"period": d.isoformat(), "value": 1} for d in days]

    updates = KpiUpdates(values, sent.extend, interval=1.0, clock=clock)
    updates.touch("w1", "revenue", [date(2026, 3, 1)])
    updates.touch("w1", "csat", [date(2026, 3, 1)])
    assert updates.flush() == 2
    updates.touch("w1", "revenue", [date(2026, 3, 2)])
    updates.touch("w1", "revenue", [date(2026, 3, 1)])
    clock.now += 0.5
    assert updates.flush() == 0  # revenue was published half a second ago
    clock.now += 0.5
    assert updates.flush() == 1  # one message for both touches, with both days
    assert asked[-1] == ("w1", "revenue", [date(2026, 3, 1), date(2026, 3, 2)])
    assert [m["kpi"] for m in sent] == ["csat", "revenue", "revenue"]
    assert updates.flush() == 0


def test_a_failed_publish_keeps_the_days_pending() -> None:
    clock = Clock()

    def fail(messages: list[Any]) -> None:
        raise ConnectionError("broker down")

    updates = KpiUpdates(lambda ws, kpi, days: [], fail, clock=clock)
    updates.touch("w1", "orders", [date(2026, 3, 1)])
    with pytest.raises(ConnectionError):
        updates.flush()
    sent: list[Any] = []
    updates.publish = sent.extend
    assert updates.flush() == 1 and sent[0]["kpi"] == "orders"


def _facts(event: str, **properties: Any) -> list[Any]:
    call = {"type": "track", "event": event, "properties": properties, "context": {"library": {"name": "sdk"}}}
    return facts_of(call, "00000000-0000-0000-0000-000000000001", source_of(call))


def test_facts_of_crm_events() -> None:
    order = _facts("Order Completed", revenue=10, currency="EUR",
                   products=[{"sku": "s1", "price": 4, "quantity": 2}, {"name": "mug", "price": 2}])  # fmt: skip
    assert [(f.kind, f.product, f.amount) for f in order] == [
        ("order", "", 10), ("order_line", "s1", 8), ("order_line", "mug", 2)]
    assert order[0].channel == "sdk"  # no channel property: the source
    assert not _facts("Order Refunded", order_id="o1")[0].has_amount
    assert _facts("Ticket Opened", ticket_id="t", category="Complaint")[0].complaint
    assert _facts("SMS Clicked", campaign_id="c")[0].channel == "sms"
    assert _facts("Product Viewed") == []


def test_an_order_given_only_with_products_is_worth_its_lines_exactly() -> None:
    order = _facts("Order Completed", currency="EUR", products=[{"price": 700.1, "quantity": 2}, {"price": 0.2}])
    assert str(order[0].amount) == "1400.4"  # exact: 700.1 x 2 + 0.2, not 1400.4000000000001


def test_every_headline_kpi_is_published_when_its_facts_move() -> None:
    from domain.crm import FACT_KINDS
    from domain.kpis import CATALOGUE, HEADLINE, KPIS_MOVED_BY

    assert {kpi for kpis in KPIS_MOVED_BY.values() for kpi in kpis} == set(HEADLINE) <= set(CATALOGUE)
    assert set(KPIS_MOVED_BY) <= set(FACT_KINDS.values())


def test_the_published_schema_names_every_headline_kpi() -> None:
    import json
    from pathlib import Path

    from domain.kpis import HEADLINE

    schema = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.kpi-updates.schema.json").read_text())
    assert set(schema["properties"]["kpi"]["enum"]) == set(HEADLINE), "docs/schemas/cdp.kpi-updates.schema.json"
