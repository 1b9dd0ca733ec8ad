"""Prediction scores in the dashboard, on a platform of its own with a year of buy-till-you-die orders (the
benchmark's history, 300 customers): after a run, a profile's Predictions panel shows its scores as the API
serves them, and an "at risk, high value" tag defined on them lists its members on the Segments page."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from playwright.sync_api import expect

from bench.predictions import history
from tests.e2e.dashboard.conftest import Dashboard, open_page, serving, shot
from tests.e2e.dashboard.test_segments_profile import shown_values

AT_RISK = {"and": [{"computed": "churn_risk", "op": ">", "value": 0.5},
                   {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 100, "within": "365d"}]}  # fmt: skip


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Dashboard]:
    """This module's platform (the shared one's 60 days are too little history to train on), scored once,
    with the tag defined before the run: its members enter as the run scores them."""
    orders = [c | {"messageId": f"pred-{i}"} for i, c in enumerate(history(300))]
    with serving(tmp_path_factory.mktemp("predictions-shown"), chdb_url, lambda now: orders) as board:
        assert board.admin("PUT", "/v1/tags/at-risk", json={"name": "At risk, high value", "rule": AT_RISK}
                           ).status_code == 200  # fmt: skip
        board.settle()
        run = board.admin("POST", "/v1/predictions/run")
        assert run.status_code == 200 and {m["status"] for m in run.json()["models"]} == {"trained"}, run.text
        board.settle()
        yield board


def test_the_profile_shows_its_scores_and_the_tag_they_put_it_in(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    members = dashboard.get("/v1/tags/at-risk")["members"]
    assert 0 < members < 300
    member = next(pid for pid in (dashboard.get(f"/v1/profiles/user_id:c{i}")["profile_id"] for i in range(300))
                  if any(t["id"] == "at-risk" for t in dashboard.get(f"/v1/profiles/profile_id:{pid}")["tags"]))
    profile = dashboard.get(f"/v1/profiles/profile_id:{member}")
    open_page(page, dashboard, f"profile?id=profile_id:{member}")
    expect(page.get_by_test_id("profile-id")).to_have_attribute("data-value", member)
    shown = shown_values(page, "computed")
    for name in ("purchase_propensity", "churn_risk", "predicted_ltv"):
        assert shown[name] == profile["computed_traits"][name], name
    assert profile["computed_traits"]["churn_risk"]["probability"] > 0.5
    assert "at-risk" in {el.get_attribute("data-value") for el in page.get_by_test_id("tag").all()}
    expect(page.get_by_text("No scores yet")).to_have_count(0)
    shot(page, "profile-predictions")

    open_page(page, dashboard, "segments")
    expect(page.get_by_test_id("tag-at-risk-count")).to_have_attribute("data-value", str(members))
