"""One revenue: the profile, a tag's sum(revenue) and the revenue KPI agree for any order/refund history.

Random histories of orders (given with `revenue`, `total` or only `products`) and
refunds (partial, or of the whole order) in several currencies go through the
real HTTP API; the same customer's revenue is then read three ways and must be the
same exact number in every currency, never summed across currencies.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Running

CURRENCIES = ["EUR", "JPY", "USD"]
_case = itertools.count()
CENTS = st.integers(1, 99_999).map(lambda c: Decimal(c) / 100)


@st.composite
def history(draw: Any) -> list[dict[str, Any]]:
    """Orders and refunds of one customer: (kind, order id, properties) in sending order."""
    out: list[dict[str, Any]] = []
    orders: list[tuple[str, str]] = []
    for i in range(draw(st.integers(1, 6))):
        currency = draw(st.sampled_from(CURRENCIES))
        shape = draw(st.sampled_from(["revenue", "total", "products"]))
        props: dict[str, Any] = {"order_id": f"o{i}", "currency": currency}
        if shape == "products":
            props["products"] = [{"sku": f"s{j}", "price": float(draw(CENTS)), "quantity": draw(st.integers(1, 3))}
                                 for j in range(draw(st.integers(1, 3)))]  # fmt: skip
        else:
            props[shape] = float(draw(CENTS))
        out.append({"event": "Order Completed", "properties": props})
        orders.append((f"o{i}", currency))
    for order_id, currency in draw(st.lists(st.sampled_from(orders), max_size=3, unique=True)):
        whole = draw(st.booleans())
        props = {"order_id": order_id} if whole else {"order_id": order_id, "revenue": float(draw(CENTS)),
                                                       "currency": currency}  # fmt: skip
        out.append({"event": "Order Refunded", "properties": props})
    return out


def _expected(events: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Worked out here from the definition in docs/kpis.md (#money), independently of the platform."""
    amounts: dict[str, tuple[str, Decimal]] = {}
    net: dict[str, Decimal] = {}
    for e in events:
        p = e["properties"]
        if e["event"] == "Order Completed":
            if "revenue" in p or "total" in p:
                amount = Decimal(str(p.get("revenue", p.get("total"))))
            else:
                amount = sum((Decimal(str(x["price"])) * x["quantity"] for x in p["products"]), Decimal(0))
            amounts[p["order_id"]] = (p["currency"], amount)
            net[p["currency"]] = net.get(p["currency"], Decimal(0)) + amount
        else:
            currency, amount = amounts[p["order_id"]]
            if "revenue" in p:
                currency, amount = p["currency"], Decimal(str(p["revenue"]))
            net[currency] = net.get(currency, Decimal(0)) - amount
    return net


def _matches(running: Running, user: str, rule: dict[str, Any]) -> bool:
    body = {"rule": {"and": [{"trait": "case", "op": "=", "value": user}, rule]}, "limit": 10}
    answer = running.http.post("/v1/segments/query", json=body, headers=running.read_headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["count"] == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=history())
def test_profile_tag_and_kpi_give_the_same_revenue(running: Running, events: list[dict[str, Any]]) -> None:
    n = next(_case)
    user, day = f"money-{n}", date(2025, 1, 1) + timedelta(days=n)
    for e in events:  # order ids are unique in a workspace: a refund finds its order by id
        e["properties"]["order_id"] = f"{user}/{e['properties']['order_id'].split('/')[-1]}"
    at = f"{day.isoformat()}T10:00:00Z"
    batch = [{"type": "identify", "userId": user, "traits": {"case": user}, "timestamp": at}]
    batch += [{"type": "track", "userId": user, "timestamp": at, **e} for e in events]
    sent = running.send("/v1/batch", {"batch": batch})
    assert sent.status_code == 200 and not sent.json().get("rejected"), sent.text
    running.wait_caught_up()
    expected = _expected(events)

    profile = running.profile(f"user_id:{user}").json()["computed_traits"]["revenue"]
    assert {c: Decimal(str(v)) for c, v in profile.items()} == expected

    kpi = running.http.get("/v1/kpis/revenue", params={"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()},
                           headers=running.read_headers).json()["series"]  # fmt: skip
    assert {row["currency"]: Decimal(str(row["value"])) for row in kpi} == expected

    for currency, value in expected.items():
        above = {"event": "Order Completed", "measure": "sum(revenue)", "currency": currency, "op": ">="}
        assert _matches(running, user, above | {"value": float(value)})
        assert not _matches(running, user, above | {"value": float(value + Decimal("0.01"))})
    # Without a currency the condition holds when it holds in some currency, never on their sum.
    biggest = max(expected.values())
    anywhere = {"event": "Order Completed", "measure": "sum(revenue)", "op": ">"}
    assert not _matches(running, user, anywhere | {"value": float(biggest)})
    assert _matches(running, user, anywhere | {"value": float(biggest - Decimal("0.01"))})


def test_a_refund_counts_under_its_orders_channel(running: Running) -> None:
    at = "2024-06-01T10:00:00Z"
    batch = [
        {"type": "track", "userId": "ch-1", "event": "Order Completed", "timestamp": at,
         "properties": {"order_id": "C1", "revenue": 100, "currency": "EUR", "channel": "web"}},
        {"type": "track", "userId": "ch-1", "event": "Order Refunded", "timestamp": at,
         "properties": {"order_id": "C1", "revenue": 30, "currency": "EUR"}},
    ]  # fmt: skip
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200
    running.wait_caught_up()
    rows = running.http.get("/v1/kpis/revenue", params={"from": "2024-06-01", "to": "2024-06-02", "by": "channel"},
                            headers=running.read_headers).json()["series"]  # fmt: skip
    assert [(r["channel"], r["value"], r["refunds"]) for r in rows] == [("web", 70.0, 30.0)]


def test_700_eur_and_700_jpy_do_not_make_a_vip(running: Running) -> None:
    at = "2024-07-01T10:00:00Z"
    batch = [{"type": "identify", "userId": "mixed", "traits": {"case": "mixed"}, "timestamp": at}] + [
        {"type": "track", "userId": "mixed", "event": "Order Completed", "timestamp": at,
         "properties": {"revenue": 700, "currency": c}} for c in ("EUR", "JPY")
    ]  # fmt: skip
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200
    running.wait_caught_up()
    vip = {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000}
    assert not _matches(running, "mixed", vip)
    assert not _matches(running, "mixed", {"computed": "revenue", "op": ">", "value": 1000})
    assert _matches(running, "mixed", {"computed": "revenue.JPY", "op": ">=", "value": 700})


def test_an_order_with_priced_products_needs_its_currency(running: Running) -> None:
    order = {"userId": "u", "event": "Order Completed", "properties": {"products": [{"price": 5}]}}
    answer = running.send("/v1/track?strict=true", order)
    assert answer.status_code == 400 and "currency is required" in answer.text
