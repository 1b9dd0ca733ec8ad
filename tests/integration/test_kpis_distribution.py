"""The answers per score of `csat` and `nps` (`distribution`), and the `lifecycle_stages` snapshot against the
profiles' own computed `lifecycle_stage`, over a small dataset whose numbers are worked out in the comments."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import Running

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def _track(user: str, event: str, days_ago: float, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "timestamp": _ago(days_ago), "properties": properties}


def _order(user: str, order_id: str, days_ago: float) -> dict[str, Any]:
    return _track(user, "Order Completed", days_ago, order_id=order_id, revenue=10, currency="EUR")


# Feedback on two channels, two and three days ago: csat 5, 5, 2, 4 (web) and 1 (app); nps 10, 0, 9 (web), 6 (app).
FEEDBACK = [
    _track("fan", "Feedback Submitted", 3, csat=5, nps=10, channel="web"),
    _track("fan", "Feedback Submitted", 3, csat=5, channel="web"),
    _track("critic", "Feedback Submitted", 2, csat=2, nps=0, channel="web"),
    _track("critic", "Feedback Submitted", 2, csat=4, nps=9, channel="web"),
    _track("grump", "Feedback Submitted", 2, csat=1, nps=6, channel="app"),
]
# One profile per stage, by the default rules (at risk after 60 days without an order, churned after 180, repeat
# from 2 orders), far from every threshold: a visitor (a device only), a lead (a user id), a prospect (added a
# product), a customer, a repeat customer, one at risk and one churned. ann browsed on a device, ordered as a user,
# then logged in on the device: her two profiles merge into one repeat customer.
PROFILES = [
    {"type": "page", "anonymousId": "v-dev", "name": "Home", "timestamp": _ago(1)},
    {"type": "identify", "userId": "lee", "traits": {"plan": "free"}, "timestamp": _ago(1)},
    _track("pat", "Product Added", 1, product_id="p1"),
    _order("cus", "c1", 5),
    _order("rep", "r1", 20), _order("rep", "r2", 4),
    _order("ris", "k1", 100),
    _order("gon", "g1", 200),
    {"type": "page", "anonymousId": "a-dev", "name": "Home", "timestamp": _ago(9)},
    _order("ann", "a1", 8), _order("ann", "a2", 7),
    {"type": "identify", "userId": "ann", "anonymousId": "a-dev", "timestamp": _ago(6)},
]
WINDOW = {"from": _ago(10), "to": NOW.isoformat()}


@pytest.fixture
def seeded(running: Running) -> Running:
    calls = [call | {"messageId": f"d{i}"} for i, call in enumerate(FEEDBACK + PROFILES)]
    assert running.send("/v1/batch", {"batch": calls}).status_code == 200
    running.settle()
    return running


def _get(r: Running, path: str, **params: Any) -> Any:
    response = r.http.get(path, params=params, headers=r.read_headers)
    assert response.status_code == 200, response.text
    return response.json()


def _kpi(r: Running, name: str, **params: Any) -> list[dict[str, Any]]:
    return _get(r, f"/v1/kpis/{name}", **WINDOW | params)["series"]  # type: ignore[no-any-return]


def _stages_of_the_profiles(r: Running) -> Counter[str]:
    """Every profile's computed lifecycle_stage, page by page through GET /v1/profiles."""
    stages: Counter[str] = Counter()
    cursor = None
    while True:
        page = _get(r, "/v1/profiles", limit=2, **({"cursor": cursor} if cursor else {}))
        stages.update(p["computed_traits"]["lifecycle_stage"] for p in page["profiles"])
        cursor = page["next_cursor"]
        if cursor is None:
            return stages


def _scores(low: int, high: int, **counts: int) -> dict[str, int]:
    return {str(s): counts.get(f"s{s}", 0) for s in range(low, high + 1)}


def test_csat_and_nps_count_the_answers_per_score_every_score_listed(seeded: Running) -> None:
    (csat,) = _kpi(seeded, "csat", granularity="total")
    assert csat["distribution"] == _scores(1, 5, s1=1, s2=1, s4=1, s5=2)
    assert list(csat["distribution"]) == ["1", "2", "3", "4", "5"]
    assert (csat["answers"], csat["satisfied"], csat["value"]) == (5, 3, 0.6)  # the fields it had are kept
    (nps,) = _kpi(seeded, "nps", granularity="total")
    assert nps["distribution"] == _scores(0, 10, s0=1, s6=1, s9=1, s10=1)
    assert list(nps["distribution"]) == [str(s) for s in range(11)]
    assert (nps["answers"], nps["promoters"], nps["detractors"], nps["value"]) == (4, 2, 2, 0)


def test_the_distribution_follows_the_periods_and_the_channel(seeded: Running) -> None:
    by_day = {row["period"]: row["distribution"] for row in _kpi(seeded, "csat")}
    assert by_day == {_ago(3)[:10]: _scores(1, 5, s5=2), _ago(2)[:10]: _scores(1, 5, s1=1, s2=1, s4=1)}
    by_channel = {row["channel"]: row["distribution"] for row in _kpi(seeded, "nps", granularity="total", by="channel")}
    assert by_channel == {"app": _scores(0, 10, s6=1), "web": _scores(0, 10, s0=1, s9=1, s10=1)}
    (app,) = _kpi(seeded, "csat", granularity="total", channel="app")
    assert app["distribution"] == _scores(1, 5, s1=1)
    for row in _kpi(seeded, "csat") + _kpi(seeded, "nps", by="channel"):
        assert sum(row["distribution"].values()) == row["answers"]


def test_lifecycle_stages_count_the_profiles_computed_stage(seeded: Running) -> None:
    rows = _get(seeded, "/v1/kpis/lifecycle_stages")["series"]
    # The feedback's three users are leads; ann's two profiles are one (the merged-away one is gone).
    assert [(r["stage"], r["value"]) for r in rows] == [
        ("at_risk", 1), ("churned", 1), ("customer", 1), ("lead", 4), ("prospect", 1), ("repeat_customer", 2),
        ("visitor", 1),
    ]  # fmt: skip
    assert Counter({r["stage"]: r["value"] for r in rows}) == _stages_of_the_profiles(seeded)
    assert sum(r["share"] for r in rows) == pytest.approx(1)
    assert rows[0]["share"] == pytest.approx(1 / 11)
    ann = _get(seeded, "/v1/profiles/anonymous_id:a-dev")
    assert ann["identifiers"]["user_id"] == ["ann"] and len(ann["merged_profiles"]) == 1
    assert ann["computed_traits"]["lifecycle_stage"] == "repeat_customer"


def test_lifecycle_stages_follow_the_workspace_rules(seeded: Running) -> None:
    rules = _get(seeded, "/v1/identity/rules")["rules"]
    rules["lifecycle"] = {"repeat_orders": 3, "at_risk_days": 6, "churned_days": 150}
    response = seeded.http.put("/v1/identity/rules", json=rules, headers=seeded.admin_headers)
    assert response.status_code == 200, response.text
    seeded.settle()
    rows = _get(seeded, "/v1/kpis/lifecycle_stages")["series"]
    # rep (last order 4 days ago, 2 orders) is a customer now; cus (5 days) one too; ann (7 days) and ris at risk;
    # gon churned.
    assert {r["stage"]: r["value"] for r in rows} == {
        "at_risk": 2, "churned": 1, "customer": 2, "lead": 4, "prospect": 1, "visitor": 1,
    }  # fmt: skip
    assert Counter({r["stage"]: r["value"] for r in rows}) == _stages_of_the_profiles(seeded)


def test_lifecycle_stages_is_a_snapshot_in_the_catalogue(seeded: Running) -> None:
    (kpi,) = [k for k in _get(seeded, "/v1/kpis")["kpis"] if k["name"] == "lifecycle_stages"]
    assert (kpi["shape"], kpi["unit"], kpi["group"], kpi["dimensions"]) == ("snapshot", "count", "customers", [])
    bad = seeded.http.get("/v1/kpis/lifecycle_stages", params={"by": "channel"}, headers=seeded.read_headers)
    assert bad.status_code == 400 and "cannot be sliced" in bad.json()["message"]
