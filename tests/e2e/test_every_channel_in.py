"""Real clients with their default settings lose nothing: every event is stored or dead-lettered, and they are told.

Over real HTTP (uvicorn on a port): the Segment SDK with gzip, the RudderStack
SDK (gzip by default), a browser's CORS preflight and a `sendBeacon`-style
text/plain body on analytics.js's short paths, and a replay of dead letters.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import rudderstack.analytics.client as rudder
from segment.analytics.client import Client as SegmentClient

from tests.conftest import Running


def _wait_stored(live: Running, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while live.stored_event_count() < count:
        assert time.monotonic() < deadline, f"only {live.stored_event_count()} of {count} events stored"
        time.sleep(0.05)


def test_segment_sdk_with_gzip_and_one_invalid_event_among_valid_ones(live: Running) -> None:
    errors: list[Exception] = []
    client = SegmentClient(
        write_key=live.write_key, host=str(live.http.base_url).rstrip("/"), gzip=True, sync_mode=False,
        on_error=lambda e, batch: errors.append(e),
    )  # fmt: skip
    client.identify("user-7", {"email": "seven@example.com", "plan": "pro"})
    client.track("user-7", "Order Completed", {"total": 99.5})  # no currency: refused by the Order Completed schema
    client.track("user-7", "Product Viewed", {"sku": "A-1"})
    client.flush()
    client.join()
    assert errors == []  # a 200: the SDK is not asked to retry, and nothing is lost
    _wait_stored(live, 2)
    live.wait_caught_up()
    profile = live.profile("user_id:user-7").json()
    assert profile["counts"] == {"identify": 1, "track": 1} and profile["traits"]["plan"] == "pro"
    [letter] = live.platform.dead_letters.list(live.platform.workspace_id)
    assert letter.field == "properties" and "currency is required" in letter.reason
    assert orjson.loads(letter.body)["properties"] == {"total": 99.5}


def test_rudderstack_sdk_with_its_defaults(live: Running) -> None:
    errors: list[Exception] = []
    client = rudder.Client(
        write_key=live.write_key, host=str(live.http.base_url).rstrip("/"), on_error=lambda e, b: errors.append(e)
    )
    assert client.gzip is True  # the default that every batch used to be refused for
    client.identify("user-8", {"email": "eight@example.com"})
    client.track("user-8", "Signed Up", {"plan": "free"})
    client.flush()
    client.join()
    assert errors == []
    _wait_stored(live, 2)
    live.wait_caught_up()
    assert live.profile("email:eight@example.com").json()["counts"] == {"identify": 1, "track": 1}


def test_browser_preflight_and_send_beacon(live: Running) -> None:
    http = live.http
    shop, other = "https://shop.example.com", "https://evil.example.net"
    put = http.put("/v1/settings/allowed-origins", json={"origins": [shop + "/"]}, headers=live.admin_headers)
    assert put.status_code == 200 and put.json() == {"origins": [shop]}

    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = http.options("/v1/t", headers={"Origin": shop, **asked})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == shop
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    refused = http.options("/v1/t", headers={"Origin": other, **asked})
    assert "access-control-allow-origin" not in refused.headers

    # navigator.sendBeacon posts text/plain with the write key in the body (analytics.js does the same).
    beacon = {"writeKey": live.write_key, "anonymousId": "visitor-1", "event": "Clicked Buy", "properties": {}}
    sent = http.post("/v1/t", content=orjson.dumps(beacon), headers={"Content-Type": "text/plain", "Origin": shop})
    assert sent.status_code == 200, sent.text
    assert sent.headers["access-control-allow-origin"] == shop and sent.json()["stored"] == 1
    page = http.post("/v1/p", content=orjson.dumps({**beacon, "name": "Home"}),
                     headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": other})  # fmt: skip
    assert page.status_code == 200 and "access-control-allow-origin" not in page.headers
    batch = {"writeKey": live.write_key, "batch": [{"type": "identify", "anonymousId": "visitor-1",
                                                   "traits": {"email": "v1@example.com"}}]}  # fmt: skip
    assert http.post("/v1/b", content=orjson.dumps(batch), headers={"Content-Type": "text/plain"}).status_code == 200
    live.wait_caught_up()
    profile = live.profile("email:v1@example.com").json()
    assert profile["counts"] == {"track": 1, "page": 1, "identify": 1}
    assert {e.source for e in live.platform.dead_letters.list(live.platform.workspace_id)} == set()

    bad = http.put("/v1/settings/allowed-origins", json={"origins": ["shop.example.com/path"]},
                   headers=live.admin_headers)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_origin"
    assert http.put("/v1/settings/allowed-origins", json={"origins": []}).status_code == 401
    for other in (live.read_headers, {"Authorization": f"Bearer {live.write_key}"}):  # the write key is in the page
        refused = http.put("/v1/settings/allowed-origins", json={"origins": []}, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text


def _get(live: Running, path: str, **params: Any) -> Any:
    response = live.http.get(path, params=params, headers=live.admin_headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_dead_letters_are_listed_filtered_and_replayed(live: Running) -> None:
    auth = (live.write_key, "")
    batch = [
        {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "ok-1"},
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "far", "timestamp": "2300-01-01T00:00:00Z"},
    ]
    assert live.http.post("/v1/batch", json={"batch": batch}, auth=auth).json()["stored"] == 1
    strict = live.http.post("/v1/batch", params={"strict": "true"}, auth=auth, json={"batch": [
        {"type": "track", "userId": "u2", "event": "Viewed", "messageId": "held-back"}, {"type": "track"}]})
    assert strict.status_code == 400
    assert live.http.post("/v1/batch", content=b"{nope", auth=auth).status_code == 400

    listed = _get(live, "/v1/dead-letters")
    codes = [d["code"] for d in listed["dead_letters"]]
    assert codes == ["invalid_event", "out_of_range", "strict_request", "invalid_event", "invalid_json"]
    assert listed["open"] == {"invalid_event": 2, "out_of_range": 1, "strict_request": 1, "invalid_json": 1}
    assert [d["message_id"] for d in _get(live, "/v1/dead-letters", code="out_of_range")["dead_letters"]] == ["far"]
    assert len(_get(live, "/v1/dead-letters", source="http", limit=2)["dead_letters"]) == 2
    assert _get(live, "/v1/dead-letters", **{"from": "2999-01-01T00:00:00Z"})["dead_letters"] == []
    assert live.platform.status()["dead_letters"]["invalid_event"] == 2
    assert live.http.get("/v1/dead-letters", params={"from": "soon"}, headers=live.admin_headers).json()["code"] == (
        "invalid_time"
    )

    # The held-back valid event of the strict request is stored by a replay; the others are refused again.
    ids = [d["id"] for d in listed["dead_letters"]]
    replay = live.http.post("/v1/dead-letters/replay", json={"ids": ids}, headers=live.admin_headers)
    assert replay.status_code == 200, replay.text
    assert (replay.json()["replayed"], replay.json()["refused"]) == (1, 4)
    again = live.http.post("/v1/dead-letters/replay", json={"code": "strict_request"}, headers=live.admin_headers)
    assert again.json()["replayed"] == 0  # replayed ones leave the open list
    live.wait_caught_up()
    assert live.profile("user_id:u2").json()["event_count"] == 1
    assert len(_get(live, "/v1/dead-letters")["dead_letters"]) == 4
    assert len(_get(live, "/v1/dead-letters", include_replayed="true")["dead_letters"]) == 5
    unauthorised = httpx.post(f"{live.http.base_url}/v1/dead-letters/replay", json={"ids": ids})
    assert unauthorised.status_code == 401 and unauthorised.json()["code"] == "unauthorized"
    for other in (live.read_headers, {"Authorization": f"Bearer {live.write_key}"}):  # dead letters hold what was sent
        for refused in (httpx.post(f"{live.http.base_url}/v1/dead-letters/replay", json={"ids": ids}, headers=other),
                        httpx.get(f"{live.http.base_url}/v1/dead-letters", headers=other)):  # fmt: skip
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text


def test_dead_letter_filters_and_ids_at_the_edges_are_a_400_not_a_500(live: Running) -> None:
    for moment in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "yesterday"):
        answer = live.http.get("/v1/dead-letters", params={"from": moment}, headers=live.admin_headers)
        assert answer.status_code == 400 and answer.json()["code"] == "invalid_time", (moment, answer.text)
    for ids in ([2**63], [0], [-1]):
        answer = live.http.post("/v1/dead-letters/replay", json={"ids": ids}, headers=live.admin_headers)
        assert answer.status_code == 422 and answer.json()["code"] == "invalid_request", (ids, answer.text)
