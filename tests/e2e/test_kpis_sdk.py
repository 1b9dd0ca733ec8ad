"""A day of mixed CRM events from the real Segment SDK, read back as KPIs over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from segment.analytics.client import Client

from tests.conftest import Running
from tests.integration.test_kpis_http import DATASET, MARCH


def _timestamp(call: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(call["timestamp"].replace("Z", "+00:00"))


def test_a_segment_client_day_of_crm_events_reads_back_as_kpis(live: Running) -> None:
    errors: list[Exception] = []
    client = Client(write_key=live.write_key, host=str(live.http.base_url).rstrip("/"), sync_mode=False,
                    on_error=lambda e, batch: errors.append(e))  # fmt: skip
    for i, call in enumerate(DATASET):
        common = {"anonymous_id": call.get("anonymousId"), "timestamp": _timestamp(call), "message_id": f"sdk-{i}"}
        if call["type"] == "track":
            client.track(call["userId"], call["event"], call["properties"], **common)
        elif call["type"] == "identify":
            client.identify(call["userId"], call.get("traits", {}), **common)
        else:
            client.page(None, None, call["name"], **common)
    client.flush()
    client.join()
    assert errors == []
    live.wait_caught_up()

    def kpi(name: str, **params: Any) -> list[tuple[Any, ...]]:
        response = live.http.get(f"/v1/kpis/{name}", params=MARCH | params, headers=live.read_headers)
        assert response.status_code == 200, response.text
        return [(r["period"], r.get("currency"), r["value"]) for r in response.json()["series"]]

    # The SDK sends its own sentAt, which corrects the event times for clock skew; on one machine the
    # correction is milliseconds, so every event stays on its day.
    assert kpi("revenue") == [("2026-03-01", "EUR", 100), ("2026-03-02", "EUR", 50), ("2026-03-02", "USD", 30),
                              ("2026-03-03", "EUR", -50)]  # fmt: skip
    assert kpi("active_customers", granularity="month") == [("2026-03-01", None, 6)]
    assert kpi("pipeline_value") == [("2026-03-01", "EUR", 200), ("2026-03-02", "EUR", 700), ("2026-03-03", "EUR", 200)]
    assert kpi("open_ticket_backlog") == [("2026-03-01", None, 0), ("2026-03-02", None, 2), ("2026-03-03", None, 1)]
    assert kpi("campaign_conversion_rate") == [("2026-03-01", None, 0.5)]
    csat = kpi("csat", granularity="month")
    assert csat == [("2026-03-01", None, 2 / 3)]
