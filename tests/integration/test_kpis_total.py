"""granularity=total: one row for the whole range, as the dashboard's headline numbers need (a ratio or a mean
over the range, not a sum of daily ones)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from bench.workload import customer_journey
from domain.kpis import CATALOGUE
from tests.conftest import Running

SERIES = [name for name, kpi in CATALOGUE.items() if kpi.shape == "series" and name not in ("retention_rate", "churn_rate")]


@pytest.fixture
def seeded(running: Running) -> tuple[Running, dict[str, str]]:
    now = datetime.now(timezone.utc)
    rng = random.Random(5)
    calls = []
    for c in range(240):
        calls += customer_journey(rng, c, now - timedelta(days=40) + timedelta(hours=c * 4))
    calls = [call | {"messageId": f"t{i}"} for i, call in enumerate(calls) if call["timestamp"] < now.isoformat()]
    for i in range(0, len(calls), 500):
        assert running.send("/v1/batch", {"batch": calls[i : i + 500]}).status_code == 200
    running.settle(60)
    return running, {"from": (now - timedelta(days=30)).isoformat(), "to": now.isoformat()}


def series(r: Running, name: str, **params: str) -> list[dict]:
    answer = r.http.get(f"/v1/kpis/{name}", params=params, headers=r.read_headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["series"]


def test_total_is_one_row_per_group_labelled_by_the_first_day(seeded: tuple[Running, dict[str, str]]) -> None:
    r, period = seeded
    first_day = period["from"][:10]
    for name in SERIES:
        rows = series(r, name, granularity="total", **period)
        assert {row["period"] for row in rows} <= {first_day}, name
        keys = [row.get("currency") for row in rows]
        assert len(keys) == len(set(keys)), name  # one row per currency


def test_total_sums_what_adds_up_and_recomputes_ratios_and_means(seeded: tuple[Running, dict[str, str]]) -> None:
    r, period = seeded
    for name, parts in [("revenue", ("gross", "refunds")), ("orders", ()), ("campaign_sent", ()),
                        ("csat", ("satisfied", "answers")), ("win_rate", ("won", "closed")),
                        ("campaign_click_rate", ("clicked", "sent"))]:  # fmt: skip
        rows = series(r, name, granularity="total", **period)
        assert len(rows) == 1, name
        total, days = rows[0], series(r, name, granularity="day", **period)
        for part in parts or ("value",):
            assert total[part] == pytest.approx(sum(d[part] for d in days)), (name, part)
    (csat,) = series(r, "csat", granularity="total", **period)
    assert csat["value"] == pytest.approx(csat["satisfied"] / csat["answers"])
    (aov,) = series(r, "average_order_value", granularity="total", **period)
    assert aov["value"] == pytest.approx(aov["revenue"] / aov["orders"])
    # people active on several days count once over the range, not once a day
    (active,) = series(r, "active_customers", granularity="total", **period)
    assert active["value"] < sum(d["value"] for d in series(r, "active_customers", granularity="day", **period))
    # a state at the end of the range: the last day's
    (backlog,) = series(r, "open_ticket_backlog", granularity="total", **period)
    assert backlog["value"] == series(r, "open_ticket_backlog", granularity="day", **period)[-1]["value"]


def test_total_by_a_dimension_and_filtered(seeded: tuple[Running, dict[str, str]]) -> None:
    r, period = seeded
    by = series(r, "revenue", granularity="total", by="channel", **period)
    (total,) = series(r, "revenue", granularity="total", **period)
    assert sum(row["value"] for row in by) == pytest.approx(total["value"])
    (web,) = series(r, "revenue", granularity="total", channel="web", **period)
    assert web["value"] == next(row["value"] for row in by if row["channel"] == "web")


def test_retention_has_no_total(seeded: tuple[Running, dict[str, str]]) -> None:
    r, period = seeded
    for name in ("retention_rate", "churn_rate"):
        answer = r.http.get(f"/v1/kpis/{name}", params={"granularity": "total", **period}, headers=r.read_headers)
        assert answer.status_code == 400
        assert "ask by day, week or month" in answer.json()["message"]


def test_compare_previous_answers_the_period_before_in_the_same_request(seeded: tuple[Running, dict[str, str]]) -> None:
    r, period = seeded
    answer = r.http.get("/v1/kpis/revenue", params={"granularity": "total", "compare": "previous", **period},
                        headers=r.read_headers).json()  # fmt: skip
    start, end = datetime.fromisoformat(period["from"]), datetime.fromisoformat(period["to"])
    before = {"from": (start - (end - start)).isoformat(), "to": start.isoformat()}
    assert answer["previous"]["from"] == before["from"] and answer["previous"]["to"] == before["to"]
    assert answer["previous"]["series"] == series(r, "revenue", granularity="total", **before)
    assert answer["series"] == series(r, "revenue", granularity="total", **period)
    bad = r.http.get("/v1/kpis/revenue", params={"compare": "last-year"}, headers=r.read_headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


@pytest.mark.parametrize("granularity", ["total", "week"])
def test_compare_answers_what_two_requests_answer_for_every_series_kpi(seeded: tuple[Running, dict[str, str]],
                                                                      granularity: str) -> None:  # fmt: skip
    r, period = seeded
    start, end = datetime.fromisoformat(period["from"]), datetime.fromisoformat(period["to"])
    before = {"from": (start - (end - start)).isoformat(), "to": start.isoformat()}
    for name in SERIES:  # with total, one query of two periods must give each period's own answer
        both = r.http.get(f"/v1/kpis/{name}", params={"granularity": granularity, "compare": "previous", **period},
                          headers=r.read_headers).json()  # fmt: skip
        for got, want in ((both["series"], series(r, name, granularity=granularity, **period)),
                          (both["previous"]["series"], series(r, name, granularity=granularity, **before))):
            assert len(got) == len(want), name
            for g, w in zip(got, want):
                assert g.keys() == w.keys(), name
                for k in g:
                    same = g[k] == pytest.approx(w[k]) if isinstance(w[k], float) else g[k] == w[k]
                    assert same, (name, k, g, w)
