"""The Segments and tags page and the Profile page against the API: tag and segment counts, a tag's history
(charts and their tables), members page by page and the CSV export, profile search by any identifier, the
360° view, the timeline, time travel and the message for an identifier nobody has."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.dashboard.conftest import Dashboard, open_page, shot, sign_in

PREDICTIONS = ("purchase_propensity", "churn_risk", "predicted_ltv")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def query(board: Dashboard, body: dict[str, Any]) -> Any:
    response = board.api.post("/v1/segments/query", json=body, headers=bearer(board.keys.read_key))
    assert response.status_code == 200, response.text
    return response.json()


def every_member(board: Dashboard, rule: dict[str, Any]) -> set[str]:
    ids, cursor = set(), None
    while True:
        page = query(board, {"rule": rule, "limit": 1000, "cursor": cursor})
        ids |= {m["profile_id"] for m in page["members"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def put(board: Dashboard, kind: str, slug: str, body: dict[str, Any]) -> None:
    response = board.admin("PUT", f"/v1/{kind}s/{slug}", json=body)
    assert response.status_code == 200, response.text


def label(period: str) -> str:
    """A period as the charts' tables write it in en-US (format.js `day`)."""
    d = date.fromisoformat(period)
    return f"{d:%b} {d.day}"


def table_rows(page: Any, title: str) -> list[list[str]]:
    details = page.locator("details.as-table", has=page.get_by_text(f"{title} as a table", exact=True))
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    return [[c.strip() for c in row.locator("th, td").all_inner_texts()] for row in details.locator("tbody tr").all()]


@pytest.fixture(scope="module")
def marked(dashboard: Dashboard) -> dict[str, Any]:
    """A tag of people of this module only: 5 enter, then 2 of them leave (after a settle, so both are recorded);
    a saved segment over the seeded customers, large enough for several pages."""
    mark = uuid.uuid4().hex[:8]
    users = [f"sp-{mark}-{i}" for i in range(5)]
    tag, segment = f"sp-in-{mark}", f"sp-buyers-{mark}"
    dashboard.send([{"type": "identify", "userId": u, "messageId": f"{u}-in", "traits": {"sp_mark": mark}} for u in users])
    dashboard.settle()
    put(dashboard, "tag", tag, {"name": f"In {mark}", "rule": {"trait": "sp_mark", "op": "=", "value": mark}})
    put(dashboard, "segment", segment, {"name": f"Buyers {mark}", "rule": {"computed": "orders_count", "op": ">=",
                                                                            "value": 1}})  # fmt: skip
    dashboard.settle()
    dashboard.send([{"type": "identify", "userId": u, "messageId": f"{u}-out", "traits": {"sp_mark": "left"}}
                    for u in users[:2]])  # fmt: skip
    dashboard.settle()
    return {"mark": mark, "users": users, "tag": tag, "segment": segment}


def test_the_list_shows_every_tag_and_segment_with_the_apis_counts(signed_in: Any, dashboard: Dashboard,
                                                                   marked: dict[str, Any]) -> None:  # fmt: skip
    page = signed_in
    open_page(page, dashboard, "segments")
    expect(page.get_by_test_id(f"tag-{marked['tag']}")).to_be_visible()
    tags = dashboard.get("/v1/tags")["tags"]
    segments = dashboard.get("/v1/segments")["segments"]
    assert page.locator("[aria-label=Tags] a").count() == len(tags)
    assert page.locator("[aria-label=Segments] a").count() == len(segments)
    for t in tags:
        expect(page.get_by_test_id(f"tag-{t['id']}-count")).to_have_attribute("data-value", str(t["members"]))
    for s in segments:
        expect(page.get_by_test_id(f"segment-{s['id']}-count")).to_have_attribute("data-value", str(s["count"]))
    expect(page.get_by_test_id(f"tag-{marked['tag']}-count")).to_have_text("3")


def test_a_tags_history_charts_and_tables_equal_the_history_route(signed_in: Any, dashboard: Dashboard,
                                                                   marked: dict[str, Any]) -> None:  # fmt: skip
    page = signed_in
    open_page(page, dashboard, "segments")
    page.get_by_test_id(f"tag-{marked['tag']}").click()
    assert f"slug={marked['tag']}" in page.url and "kind=tag" in page.url
    expect(page.get_by_role("img", name="Members by day")).to_be_visible()
    shown = page.get_by_test_id("period").first
    window = {"from": shown.get_attribute("data-from"), "to": shown.get_attribute("data-to")}
    series = dashboard.get(f"/v1/tags/{marked['tag']}/history", granularity="day", **window)["series"]
    assert sum(r["entered"] for r in series) == 5 and sum(r["exited"] for r in series) == 2
    assert series[-1]["members"] == 3
    expect(page.get_by_test_id("history-members")).to_have_attribute("data-value", "3")
    expect(page.get_by_test_id("history-entered")).to_have_attribute("data-value", "5")
    expect(page.get_by_test_id("history-exited")).to_have_attribute("data-value", "2")
    assert table_rows(page, "Members") == [[label(r["period"]), f"{r['members']:,}"] for r in series]
    for key in ("entered", "exited"):
        assert table_rows(page, key.capitalize()) == [[label(r["period"]), f"{r[key]:,}"] for r in series]

    page.get_by_label("Granularity").select_option("week")
    expect(page.get_by_role("img", name="Members by week")).to_be_visible()
    weeks = dashboard.get(f"/v1/tags/{marked['tag']}/history", granularity="week",
                          **{"from": shown.get_attribute("data-from"), "to": shown.get_attribute("data-to")})["series"]  # fmt: skip
    for key in ("members", "entered", "exited"):
        assert table_rows(page, key.capitalize()) == [[label(r["period"]), f"{r[key]:,}"] for r in weeks]
    shot(page, "segments")


def test_a_segment_has_members_and_says_why_it_has_no_history(signed_in: Any, dashboard: Dashboard,
                                                             marked: dict[str, Any]) -> None:  # fmt: skip
    page = signed_in
    open_page(page, dashboard, f"segments?slug={marked['segment']}&kind=segment")
    expect(page.get_by_test_id("no-history")).to_contain_text("define a tag with the same rule")
    expect(page.get_by_test_id("member").first).to_be_visible()
    first = dashboard.get(f"/v1/segments/{marked['segment']}/members", limit=25)
    expect(page.get_by_test_id("member-count")).to_have_attribute("data-value", str(first["count"]))
    assert first["next_cursor"], "the segment needs more than a page"
    assert [r.get_attribute("data-profile-id") for r in page.get_by_test_id("member").all()] == [
        m["profile_id"] for m in first["members"]]
    page.get_by_role("button", name="Next page").click()
    second = dashboard.get(f"/v1/segments/{marked['segment']}/members", limit=25, cursor=first["next_cursor"])
    expect(page.get_by_test_id("member").first).to_have_attribute("data-profile-id", second["members"][0]["profile_id"])
    assert [r.get_attribute("data-profile-id") for r in page.get_by_test_id("member").all()] == [
        m["profile_id"] for m in second["members"]]
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_test_id("member").first).to_have_attribute("data-profile-id", first["members"][0]["profile_id"])


def download_csv(page: Any) -> list[dict[str, str]]:
    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    download = info.value
    text = open(download.path(), encoding="utf-8").read()
    assert download.suggested_filename.endswith(".csv")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("kind", ["segment", "tag"])
def test_the_export_downloads_every_member(signed_in: Any, dashboard: Dashboard, marked: dict[str, Any],
                                           kind: str) -> None:  # fmt: skip
    page = signed_in
    slug = marked[kind]
    open_page(page, dashboard, f"segments?slug={slug}&kind={kind}")
    expect(page.get_by_test_id("member").first).to_be_visible()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    rows = download_csv(page)
    members = every_member(dashboard, {"tag": slug} if kind == "tag" else
                           dashboard.get(f"/v1/segments/{slug}")["rule"])  # fmt: skip
    assert {r["profile_id"] for r in rows} == members and len(rows) == len(members)
    if kind == "tag":
        assert len(rows) == 3
        assert all(json.loads(r["traits"]) == {"sp_mark": marked["mark"]} for r in rows)
        assert {r["identifiers"] for r in rows} == {f"user_id:{u}" for u in marked["users"][2:]}
    else:
        exported = dashboard.api.get(f"/v1/segments/{slug}/export", params={"format": "csv"},
                                     headers=bearer(dashboard.keys.read_key))  # fmt: skip
        assert rows == list(csv.DictReader(io.StringIO(exported.text)))
    assert not any(dashboard.keys.read_key in url for url in requests)  # the key went as a header only


def test_a_workspace_without_tags_says_how_to_define_one(tab: Any, dashboard: Dashboard) -> None:
    made = dashboard.api.post("/v1/workspaces", json={"name": f"empty-{uuid.uuid4().hex[:6]}"},
                              headers=bearer(dashboard.keys.platform_key))  # fmt: skip
    assert made.status_code == 201, made.text
    read_key = next(k["key"] for k in made.json()["keys"] if k["kind"] == "read")
    sign_in(tab, dashboard, key=read_key)
    tab.get_by_role("navigation", name="Pages").wait_for()
    open_page(tab, dashboard, "segments")
    empty = tab.get_by_test_id("no-tags")
    expect(empty).to_contain_text("No tags or segments yet")
    expect(empty).to_contain_text('curl -X POST -H "Authorization: Bearer $ADMIN_KEY"')
    expect(empty).to_contain_text(f"{dashboard.url}/v1/tags")


# -- the profile --------------------------------------------------------------------------------------------


def profile_id_shown(page: Any) -> str:
    return page.get_by_test_id("profile-id").get_attribute("data-value")


def find(page: Any, text: str, kind: str | None = None) -> None:
    box = page.get_by_role("searchbox", name="Identifier")
    for _ in range(3):  # a re-render of the page (a live status) can land inside a fill and keep the old text
        box.fill(text)
        if box.input_value() == text:
            break
    expect(box).to_have_value(text)
    if kind:
        page.get_by_label("Type").select_option(kind)
    page.get_by_role("button", name="Find").click()


def test_search_by_email_user_id_or_anonymous_id_lands_on_the_same_profile(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    expected = dashboard.get("/v1/profiles/email:c7@example.com")["profile_id"]
    open_page(page, dashboard, "profile")
    for text, kind, found_by in [("c7@example.com", None, "email:c7@example.com"), ("user-7", None, "user_id:user-7"),
                                 ("c7-web", None, "anonymous_id:c7-web"), ("c7-web", "anonymous_id", "anonymous_id:c7-web"),
                                 (expected, "profile_id", expected)]:  # fmt: skip
        find(page, text, kind)
        expect(page.get_by_test_id("found-by")).to_have_text(found_by)
        assert profile_id_shown(page) == expected, text
    assert "id=" in page.url


def shown_values(page: Any, prefix: str) -> dict[str, Any]:
    return {el.get_attribute("data-name"): json.loads(el.get_attribute("data-value"))
            for el in page.locator(f"[data-testid^='{prefix}-']").all()}  # fmt: skip


def assert_profile_shown(page: Any, profile: dict[str, Any]) -> None:
    expect(page.get_by_test_id("profile-id")).to_have_attribute("data-value", profile["profile_id"])
    expect(page.get_by_test_id("event-count")).to_have_attribute("data-value", str(profile["event_count"]))
    identifiers = {f"{t}:{v}" for t, values in profile["identifiers"].items() for v in values}
    assert {el.get_attribute("data-value") for el in page.get_by_test_id("identifier").all()} == identifiers
    assert shown_values(page, "trait") == profile["traits"]
    assert shown_values(page, "computed") == profile["computed_traits"]


def test_the_360_view_and_the_timeline_show_the_apis_profile(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "profile?id=email:c7@example.com")
    expect(page.get_by_test_id("event").first).to_be_visible()
    profile = dashboard.get("/v1/profiles/email:c7@example.com")
    assert_profile_shown(page, profile)
    assert {el.get_attribute("data-value") for el in page.get_by_test_id("tag").all()} == {t["id"] for t in profile["tags"]}
    merges = dashboard.get("/v1/profiles/email:c7@example.com/merges")["changes"]
    expect(page.get_by_test_id("identity-change")).to_have_count(len(merges))
    events = dashboard.get("/v1/profiles/email:c7@example.com/events", limit=25)["events"]
    assert [el.get_attribute("data-event-id") for el in page.get_by_test_id("event").all()] == [e["event_id"] for e in events]
    for name in PREDICTIONS:  # shown with the computed traits they are, once a prediction run scored them
        assert (name in shown_values(page, "computed")) == (name in profile["computed_traits"])
    shot(page, "profile")


def test_time_travel_shows_the_profile_and_timeline_as_they_were(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    user = f"tt-{uuid.uuid4().hex[:8]}"
    before = [{"type": "identify", "userId": user, "messageId": f"{user}-id", "traits": {"plan": "before"}}]
    before += [{"type": "page", "userId": user, "name": f"Page {i}", "messageId": f"{user}-p{i}"} for i in range(29)]
    dashboard.send(before)
    dashboard.settle()
    time.sleep(1.1)  # `as_of` to the second, strictly between the two batches' receipt
    then = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    dashboard.send([{"type": "identify", "userId": user, "messageId": f"{user}-id2", "traits": {"plan": "after"}},
                    {"type": "track", "userId": user, "event": "Order Completed", "messageId": f"{user}-o",
                     "properties": {"order_id": f"{user}-o", "revenue": 30, "currency": "EUR"}}])  # fmt: skip
    dashboard.settle()

    open_page(page, dashboard, f"profile?id=user_id:{user}")
    expect(page.get_by_test_id("event-count")).to_have_attribute("data-value", "32")
    expect(page.get_by_test_id("timeline-shown")).to_have_attribute("data-value", "25")
    page.get_by_role("button", name="Load more").click()
    expect(page.get_by_test_id("timeline-shown")).to_have_attribute("data-value", "32")
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    now = dashboard.get(f"/v1/profiles/user_id:{user}/events", limit=100)["events"]
    assert [el.get_attribute("data-event-id") for el in page.get_by_test_id("event").all()] == [e["event_id"] for e in now]

    page.get_by_label("As of").fill(then.strftime("%Y-%m-%dT%H:%M:%S"))  # the tab's time zone is UTC
    page.get_by_role("button", name="Show as of then").click()
    expect(page.get_by_test_id("as-of-banner")).to_be_visible()
    as_of = then.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert re.search(f"as_of={re.escape(as_of).replace(':', '(:|%3A)')}", page.url), page.url
    past = dashboard.get(f"/v1/profiles/user_id:{user}", as_of=as_of)
    assert past["event_count"] == 30 and past["traits"]["plan"] == "before"
    expect(page.get_by_test_id("event-count")).to_have_attribute("data-value", "30")
    assert_profile_shown(page, past)
    page.get_by_role("button", name="Load more").click()
    expect(page.get_by_test_id("timeline-shown")).to_have_attribute("data-value", "30")
    old = dashboard.get(f"/v1/profiles/user_id:{user}/events", limit=100, as_of=as_of)["events"]
    assert [el.get_attribute("data-event-id") for el in page.get_by_test_id("event").all()] == [e["event_id"] for e in old]
    assert {e["event_id"] for e in old} < {e["event_id"] for e in now}

    page.get_by_role("button", name="Back to now").click()
    expect(page.get_by_test_id("event-count")).to_have_attribute("data-value", "32")
    expect(page.get_by_test_id("as-of-banner")).to_have_count(0)


def test_an_identifier_nobody_has_gets_a_clear_message(signed_in: Any, dashboard: Dashboard) -> None:
    page = signed_in
    open_page(page, dashboard, "profile?id=nobody-here@example.com")
    missing = page.get_by_test_id("profile-missing")
    expect(missing).to_contain_text("No profile for email:nobody-here@example.com.")
    expect(missing).to_contain_text("Identifiers look like email:ann@example.com, user_id:42")
    find(page, "nobody-here")
    expect(missing).to_contain_text("No profile for user_id:nobody-here or anonymous_id:nobody-here.")
    open_page(page, dashboard, "profile?id=email:c7@example.com&as_of=2000-01-01T00:00:00Z")
    expect(missing).to_contain_text("No profile for email:c7@example.com as of Jan 1, 2000")


def test_both_pages_read_in_a_narrow_window(signed_in: Any, dashboard: Dashboard, marked: dict[str, Any]) -> None:
    page = signed_in
    page.set_viewport_size({"width": 400, "height": 800})
    for route, ready in [(f"segments?slug={marked['tag']}&kind=tag", "member"), ("profile?id=user_id:user-7", "event")]:
        open_page(page, dashboard, route)
        expect(page.get_by_test_id(ready).first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, route
