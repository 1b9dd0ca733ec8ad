"""A new user's first minutes: `cdp up`, the dashboard address it printed, the read key, a Segment client with
its default settings pointed at the ingest workers, and the numbers moving in the open page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import expect
from segment.analytics.client import Client

from infra.broker import free_port
from tests.e2e.dashboard.conftest import shot
from tests.e2e.test_restart import CdpProcess


@pytest.fixture
def up(tmp_path: Path) -> Iterator[CdpProcess]:
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.start()
    try:
        yield cdp
    finally:
        cdp.stop()


def test_up_sign_in_send_with_segment_and_watch_the_numbers_move(up: CdpProcess, tab: Any) -> None:
    address = re.search(r"dashboard : (http://\S+/dashboard)", up.output())
    assert address, f"cdp up did not print the dashboard's address:\n{up.output()}"
    read_key = re.search(r"read key  : (rk_\S+)", up.output()).group(1)  # type: ignore[union-attr]
    tab.goto(address.group(1))
    tab.get_by_label("Read key").fill(read_key)
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("main h1")).to_have_text("Overview")
    expect(tab.get_by_test_id("live-state")).to_have_text(re.compile("Live"))
    expect(tab.get_by_test_id("profiles")).to_have_text("0")
    expect(tab.locator("[data-testid=card-orders]")).to_contain_text("no data in the period")

    errors: list[Exception] = []
    client = Client(write_key=up.keys["write_key"], host=up.ingest_url, on_error=lambda e, batch: errors.append(e))
    client.identify("ann", {"email": "ann@example.com"})
    client.track("ann", "Order Completed", {"order_id": "o-1", "revenue": 42.5, "currency": "EUR"})
    client.flush()
    client.join()
    assert errors == []

    # No reload: the live feed brings the order and the profile within about a second of their arrival.
    expect(tab.locator("[data-testid=card-orders] [data-kpi=orders]")).to_have_attribute("data-value", "1")
    expect(tab.locator("[data-testid=card-revenue] [data-kpi=revenue]")).to_have_text("€42.50")
    expect(tab.get_by_test_id("profiles")).to_have_text("1")
    expect(tab.get_by_test_id("events-seen")).to_have_text("2")
    shot(tab, "new-user-overview")
