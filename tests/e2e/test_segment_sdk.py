"""The real Segment Python SDK against the running server; the result seen through the API and on Kafka."""

from __future__ import annotations

from segment.analytics.client import Client

from tests.conftest import Running, read_topic


def test_segment_client_calls_stitch_into_one_profile(live: Running) -> None:
    errors: list[Exception] = []
    client = Client(
        write_key=live.write_key, host=str(live.http.base_url).rstrip("/"), sync_mode=False,
        on_error=lambda e, batch: errors.append(e),
    )  # fmt: skip
    client.page(anonymous_id="device-1", name="Pricing", properties={"path": "/pricing"})
    client.track(anonymous_id="device-2", event="Product Viewed", properties={"sku": "A-1"})
    client.identify("user-42", {"email": "Ann@Example.com", "name": "Ann"}, anonymous_id="device-1")
    client.track("user-42", "Order Completed", {"revenue": 99.5, "currency": "EUR"})
    client.alias("device-2", "user-42")
    client.flush()
    client.join()
    assert errors == []
    status = live.wait_caught_up()

    for identifier in ("user_id:user-42", "anonymous_id:device-1", "anonymous_id:device-2", "email:ann@example.com"):
        response = live.profile(identifier)
        assert response.status_code == 200, (identifier, response.text)
    profile = live.profile("anonymous_id:device-2").json()
    assert profile["identifiers"] == {
        "user_id": ["user-42"],
        "anonymous_id": ["device-1", "device-2"],
        "email": ["ann@example.com"],
    }
    assert profile["traits"] == {"email": "Ann@Example.com", "name": "Ann"}
    assert profile["counts"] == {"page": 1, "track": 2, "identify": 1, "alias": 1}
    assert profile["event_count"] == 5
    # Whether device-2 got its own profile first (then merged) depends on how the SDK batched calls
    # made in the same millisecond; the stitched result above does not.

    events = live.http.get(f"/v1/profiles/{profile['profile_id']}/events", headers=live.read_headers).json()
    assert [e["type"] for e in events["events"]].count("track") == 2
    assert {e["event"] for e in events["events"] if e["type"] == "track"} == {"Product Viewed", "Order Completed"}

    # Every log entry is on cdp.events with its position and event id, keyed by profile.
    def enough(got: list[dict[str, object]]) -> bool:
        return len([m for m in got if m["kind"] == "event"]) >= 5

    records = read_topic(live.platform.settings.bootstrap_servers, "cdp.events", enough)
    for record, message in records:
        assert record.key.decode() == message["profile_id"]
        assert dict(record.headers)["position"].decode() == str(message["position"])
    received = [message for _, message in records]
    customer_events = [m for m in received if m["kind"] == "event"]
    assert len(customer_events) == 5
    assert max(m["position"] for m in received) <= status["log_position"]
    assert {m["call"]["type"] for m in customer_events} == {"page", "track", "identify", "alias"}
    assert "created" in {m["change"] for m in received if m["kind"] == "identity"}
